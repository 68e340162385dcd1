from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redswitch.config import Settings
from redswitch.errors import PayloadError
from redswitch.messages import parse_job
from redswitch.originate import click_to_call
from redswitch.protocol import commands
from tests.payloads import INJECTIONS, job_json

UUID0 = "11111111-1111-4111-8111-111111111111"
UUID1 = "22222222-2222-4222-8222-222222222222"


def test_click_to_call_rings_side_0_and_bridges_side_1_with_ids_on_both_legs() -> None:
    command = click_to_call(Settings(), parse_job(job_json()), UUID0, UUID1)
    a_vars, a_endpoint, b_vars, b_endpoint = re.fullmatch(
        r"originate \{(.*?)\}(\S+) &bridge\(\{(.*?)\}(\S+)\)", command
    ).groups()  # type: ignore[union-attr]
    assert a_endpoint == "sofia/gateway/talk_call_provider/15105625882"
    assert b_endpoint == "sofia/gateway/talk_call_provider/1415697098"
    a, b = dict(p.split("=", 1) for p in a_vars.split(",")), dict(p.split("=", 1) for p in b_vars.split(","))
    assert a["origination_uuid"] == UUID0 and b["origination_uuid"] == UUID1
    assert a["origination_caller_id_number"] == "15105625882" and b["origination_caller_id_number"] == "14157697098"
    assert (a["redswitch_side"], b["redswitch_side"]) == ("0", "1")
    for leg in (a, b):
        assert leg["redswitch_dial_id"] == "talkiq_dial_id"
        assert leg["redswitch_org_id"] == "talkiq_org_id" and leg["redswitch_user_id"] == "talkiq_user_id"
    # And the original's SIP headers: side 0 the ids, its side and the provider; side 1 only its side
    assert {k: v for k, v in a.items() if k.startswith("sip_h_")} == {
        "sip_h_Accuvit-Dial-ID": "talkiq_dial_id",
        "sip_h_Accuvit-Dial-Side": "0",
        "sip_h_Accuvit-Organization-ID": "talkiq_org_id",
        "sip_h_Accuvit-User-ID": "talkiq_user_id",
        "sip_h_X-TalkIQ-Callprovider": "talk_call_provider",
    }
    assert {k: v for k, v in b.items() if k.startswith("sip_h_")} == {"sip_h_Accuvit-Dial-Side": "1"}


def test_sip_headers_x_sends_redswitchs_own_set_on_both_legs_and_both_sends_the_two_sets() -> None:
    for name, original in (("x", False), ("both", True)):
        command = click_to_call(Settings(sip_headers=name), parse_job(job_json()), UUID0, UUID1)
        a_vars, b_vars = re.fullmatch(r"originate \{(.*?)\}\S+ &bridge\(\{(.*?)\}\S+\)", command).groups()  # type: ignore[union-attr]
        for side, block in (("0", a_vars), ("1", b_vars)):
            leg = dict(p.split("=", 1) for p in block.split(","))
            assert leg["sip_h_X-Dial-Id"] == "talkiq_dial_id" and leg["sip_h_X-Call-Side"] == side
            assert leg["sip_h_X-Org-Id"] == "talkiq_org_id" and leg["sip_h_X-User-Id"] == "talkiq_user_id"
            assert ("sip_h_Accuvit-Dial-Side" in leg) is original


def test_click_to_call_follows_the_endpoint_template() -> None:
    settings = Settings(endpoint_template="sofia/gateway/flowroute/{number}", sip_headers="none")
    command = click_to_call(settings, parse_job(job_json()), UUID0, UUID1)
    assert "sofia/gateway/flowroute/15105625882 &bridge(" in command
    assert "sip_h_" not in command


def test_variables_escape_commas_in_values() -> None:
    assert commands.variables({"a": "x,y"}) == "{a=x\\,y}"


@pytest.mark.parametrize("fragment", INJECTIONS)
def test_builders_refuse_every_injection_fragment(fragment: str) -> None:
    try:
        block = commands.variables({"v": "1" + fragment})
    except PayloadError:
        pass
    else:  # only "," and "=" are let through, and then as one pair: the comma escaped, "=" inert after the first
        assert set(fragment) <= set("=,_dialxy") and block == "{v=1" + fragment.replace(",", "\\,") + "}"
    with pytest.raises(PayloadError):
        commands.dial_string("sofia/gateway/gw/1" + fragment, {})
    with pytest.raises(PayloadError):
        commands.uuid_kill(UUID0 + fragment)
    with pytest.raises(PayloadError):
        commands.uuid_recv_dtmf(UUID0, "1" + fragment)


@given(st.text())
def test_built_variable_blocks_always_parse_back_to_one_pair(value: str) -> None:
    try:
        block = commands.variables({"v": value})
    except PayloadError:
        return
    # One block, one pair, no way out of it: unescaped separators never appear.
    inner = block[1:-1]
    assert block[0] == "{" and block[-1] == "}" and "}" not in inner and "{" not in inner
    assert re.sub(r"\\,", "", inner).count(",") == 0
    assert not any(ch.isspace() for ch in block)


# Mostly safe names and values, each with a few ways to be wrong (alphabet, first character, length).
_NAMES = st.one_of(
    st.sampled_from(["a", "origination_uuid", "sip_h_X-Dial-Id", "_" + "x" * 63]),
    st.text(alphabet="aZ_-9\n,}= ", max_size=3),
    st.sampled_from(["x" * 65, "9a", "-a", "a b", ""]),
)
_VALUES = st.one_of(
    st.text(alphabet="a1.,=@:/+-_", max_size=6),
    # safe-looking variables smuggled inside one value: "b\nc\nd" reads as b, then c=d, to a line-based check
    st.lists(st.sampled_from(["a", "b1", "_x", "1.2", "\n", ","]), max_size=7).map("".join),
    st.text(alphabet="a1.,=@\n}{ ()'", max_size=4),
    st.text(max_size=3),
    st.integers(255, 258).map(lambda size: "v" * size),
)


@given(st.dictionaries(_NAMES, _VALUES, max_size=4))
def test_the_one_pass_check_of_a_block_refuses_exactly_what_the_per_variable_checks_refuse(
    values: dict[str, str],
) -> None:
    safe = all(
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", name) and re.fullmatch(r"[A-Za-z0-9_\-.+@:/=,]{0,256}", value)
        for name, value in values.items()
    )
    try:
        commands.variables(values)
    except PayloadError as exc:
        assert not safe
        assert "channel variable" in exc.reason  # the error still names what was unsafe
    else:
        assert safe


@pytest.mark.parametrize("value", ["b\nc\nd", "1\nx\n2\ny\n3", "\n\n", "a\n"])
def test_a_value_holding_line_breaks_is_refused_even_when_each_line_looks_safe(value: str) -> None:
    with pytest.raises(PayloadError, match="value of channel variable v"):
        commands.variables({"v": value})
    with pytest.raises(PayloadError):
        commands.variables({"a": "1", "v": value, "z": "2"})


def test_an_unsafe_variable_is_named_in_the_error() -> None:
    with pytest.raises(PayloadError, match="value of channel variable b"):
        commands.variables({"a": "1", "b": "2 3", "c": "4"})
    with pytest.raises(PayloadError, match="channel variable name"):
        commands.variables({"a": "1", "b}": "2"})


def test_bgapi_carries_its_own_job_uuid_header() -> None:
    assert commands.bgapi("status", UUID0) == f"bgapi status\nJob-UUID: {UUID0}"
    with pytest.raises(PayloadError):
        commands.bgapi("status\n\napi hupall", UUID0)


def test_send_dtmf_and_hold_builders_take_only_a_uuid_and_digits() -> None:
    assert commands.uuid_send_dtmf(UUID0, "12#*ABCD") == f"uuid_send_dtmf {UUID0} 12#*ABCD"
    assert commands.uuid_hold(UUID1) == f"uuid_hold {UUID1}"
    assert commands.uuid_hold(UUID1, hold=False) == f"uuid_hold off {UUID1}"
    for bad in [*INJECTIONS, "", "1@500", "1w2", "1" * 33]:
        with pytest.raises(PayloadError):
            commands.uuid_send_dtmf(UUID0, bad)
    for bad in [*INJECTIONS, "off", f"{UUID0} x", f"off {UUID0}"]:
        with pytest.raises(PayloadError):
            commands.uuid_hold(bad)
        with pytest.raises(PayloadError):
            commands.uuid_send_dtmf(bad, "1")


def test_uuid_record_takes_only_an_absolute_path_without_dot_dot() -> None:
    path = "/var/lib/freeswitch/recordings/d_1.wav"
    assert commands.uuid_record(UUID0, path) == f"uuid_record {UUID0} start {path}"
    assert commands.uuid_record(UUID0, path, start=False) == f"uuid_record {UUID0} stop {path}"
    for bad in [*(path + i for i in INJECTIONS), "", "d_1.wav", "/x/../etc/passwd", "/x/..", "/x/./y", "/x//y", "/"]:
        with pytest.raises(PayloadError):
            commands.uuid_record(UUID0, bad)


def test_broadcast_and_break_take_a_checked_path_and_known_legs_only() -> None:
    path = "/usr/share/freeswitch/sounds/welcome.wav"
    assert commands.uuid_broadcast(UUID0, path) == f"uuid_broadcast {UUID0} {path} aleg"
    assert commands.uuid_broadcast(UUID0, path, "both") == f"uuid_broadcast {UUID0} {path} both"
    assert commands.uuid_break(UUID1) == f"uuid_break {UUID1}"
    assert commands.uuid_break(UUID1, both=True) == f"uuid_break {UUID1} both"
    for bad in [*(path + i for i in INJECTIONS), "welcome.wav", "/a/../b.wav", "/a/b.wav aleg"]:
        with pytest.raises(PayloadError):
            commands.uuid_broadcast(UUID0, bad)
    for legs in ("bleg", "holdb", "aleg both", "", "aleg\n"):
        with pytest.raises(PayloadError):
            commands.uuid_broadcast(UUID0, path, legs)
    for bad in INJECTIONS:
        with pytest.raises(PayloadError):
            commands.uuid_break(bad)
