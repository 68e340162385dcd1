"""Hostile and bad input: nothing crashes, everything is parked or answered, nothing unsafe reaches the switch."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redswitch.config import Settings
from redswitch.errors import PayloadError
from redswitch.messages import parse_job
from redswitch.originate import click_to_call
from redswitch.simulator.dialstring import parse_dial_string, parse_originate, split_args
from tests.payloads import INJECTIONS, JOB_FIELDS, SEED_JOB, job
from tests.pipeline import Pipeline
from tests.servers import RedisServer

UUID0 = "11111111-1111-4111-8111-111111111111"
UUID1 = "22222222-2222-4222-8222-222222222222"
COMMON_VARS = {
    "origination_uuid",
    "redswitch_dial_id",
    "redswitch_org_id",
    "redswitch_user_id",
    "redswitch_side",
    "origination_caller_id_number",
    "origination_caller_id_name",
    "originate_timeout",
    "ignore_early_media",
}
#: The default (original) SIP headers: side 0 carries the ids, its side and the provider; side 1 its side.
#: Side 0 also says what a failed bridge to side 1 does (continue_on_fail).
SIDE_0_VARS = COMMON_VARS | {
    "continue_on_fail",
    "sip_h_Accuvit-Dial-ID",
    "sip_h_Accuvit-Dial-Side",
    "sip_h_Accuvit-Organization-ID",
    "sip_h_Accuvit-User-ID",
    "sip_h_X-TalkIQ-Callprovider",
}
SIDE_1_VARS = COMMON_VARS | {"sip_h_Accuvit-Dial-Side"}
#: With SIP_HEADERS=both, every leg also carries the X- set: every header value a job can reach goes out.
X_VARS = {"sip_h_X-Dial-Id", "sip_h_X-Org-Id", "sip_h_X-User-Id", "sip_h_X-Call-Side"}
BOTH = Settings(sip_headers="both")

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(INJECTIONS).map(lambda frag: "1415" + frag + "0000"),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x20), max_size=10),
    st.text(alphabet="0123456789+-.,;{}[]&'() \n|^%=", min_size=1, max_size=40),
)
field_value = st.one_of(hostile_text, st.integers(), st.none(), st.lists(st.integers(), max_size=3), st.booleans())


def assert_well_formed(command: str, job_values: dict[str, str]) -> None:
    """The command is one line, one originate with one &bridge app, and carries exactly our variables."""
    assert "\n" not in command and "\r" not in command and "'" not in command
    request = parse_originate(command[len("originate ") :])
    assert request.app == "bridge" and len(split_args(command)) == 3
    b_vars, b_legs = parse_dial_string(request.app_arg)
    assert set(request.variables) == SIDE_0_VARS | X_VARS and len(request.legs) == 1
    assert set(b_vars) == SIDE_1_VARS | X_VARS and len(b_legs) == 1
    assert request.variables["sip_h_Accuvit-Dial-ID"] == request.variables["sip_h_X-Dial-Id"] == job_values["dial_id"]
    assert request.variables["sip_h_X-TalkIQ-Callprovider"] == job_values["call_provider"]
    # side 0 waits for a real answer before the bridge runs; side 1 passes its early media on to the user
    assert (request.variables["ignore_early_media"], b_vars["ignore_early_media"]) == ("true", "false")
    assert request.variables["continue_on_fail"] == "false"  # an unanswered callee ends side 0 NO_ANSWER
    for leg_vars in (request.variables, b_vars):
        assert leg_vars["redswitch_dial_id"] == job_values["dial_id"]
        assert leg_vars["redswitch_org_id"] == job_values["org_id"]
        assert leg_vars["redswitch_user_id"] == job_values["user_id"]
    assert request.legs[0].endpoint.url == f"sofia/gateway/{job_values['call_provider']}/{job_values['caller_number']}"
    assert b_legs[0].endpoint.url == f"sofia/gateway/{job_values['call_provider']}/{job_values['callee_number']}"


@given(st.fixed_dictionaries({}, optional={name: field_value for name in JOB_FIELDS + ["type"]}))
@settings(max_examples=300)
def test_any_job_is_refused_or_becomes_exactly_one_well_formed_originate(fields: dict[str, Any]) -> None:
    data = {**SEED_JOB, **fields}
    try:
        call = parse_job(json.dumps(data))
    except PayloadError as exc:
        assert exc.reason
        return
    assert_well_formed(click_to_call(BOTH, call, UUID0, UUID1), call.to_dict())


@pytest.mark.parametrize("field", JOB_FIELDS)
@pytest.mark.parametrize("fragment", INJECTIONS)
def test_no_injection_fragment_gets_an_extra_variable_app_or_command(field: str, fragment: str) -> None:
    for value in (fragment, SEED_JOB[field] + fragment, fragment + SEED_JOB[field], SEED_JOB[field][:3] + fragment):
        try:
            call = parse_job(json.dumps(job(**{field: value})))
        except PayloadError:
            continue
        assert_well_formed(click_to_call(BOTH, call, UUID0, UUID1), call.to_dict())


# ---------------------------------------------------------------------------------------------- over processes


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    running = Pipeline(redis_server.url).start()
    yield running
    running.stop()


def our_commands_only(pipeline: Pipeline) -> None:
    """Everything the switch received is a command of our own making."""
    allowed = re.compile(
        r"(event plain [A-Z_ ]+|api uuid_exists [0-9a-f-]{36}|api uuid_kill [0-9a-f-]{36} [A-Z_]+"
        r"|api uuid_recv_dtmf [0-9a-f-]{36} [0-9]|api status|api show channels as json"
        r"|bgapi originate \S+ &(bridge|eavesdrop)\(\S+\)"
        r"(\nJob-UUID: [0-9a-f-]{36})?)"
    )
    for command in pipeline.simulator.commands():
        assert allowed.fullmatch(command), command
        if command.startswith("bgapi originate") and "&bridge(" in command:
            values = dict(re.findall(r"redswitch_(dial_id|org_id|user_id)=([^,}]+)", command))
            request = parse_originate(command.split("\n")[0][len("bgapi originate ") :])
            assert set(request.variables) == SIDE_0_VARS and values


def wait_parked(pipeline: Pipeline, count: int) -> bool:
    key = pipeline.settings.effective_dead_key
    return pipeline.wait_for(lambda: pipeline.client.llen(key) >= count, timeout=15, interval=0.02)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
@settings(max_examples=40)
def test_random_payloads_are_parked_with_a_reason_and_processes_stay_up(pipeline: Pipeline, raw: bytes) -> None:
    before = pipeline.client.llen(pipeline.settings.effective_dead_key)
    pipeline.client.rpush(pipeline.settings.jobs_key, raw)
    assert wait_parked(pipeline, before + 1)
    parked = json.loads(pipeline.client.lindex(pipeline.settings.effective_dead_key, -1))  # type: ignore[arg-type]
    assert parked["reason"] and ("payload" in parked or "payload_base64" in parked)
    assert pipeline.stack is not None and pipeline.stack.alive()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(job(dial_id="huge1", org_id="x" * 1_000_000)).encode(),
        b"\x00" * 1_000_000,
        json.dumps({"type": "asp-call", "nested": [[[[[[[[[[[[[]]]]]]]]]]]]]}).encode(),
    ],
    ids=["nesting-bomb", "1MB-json", "1MB-nul", "nested-extra"],
)
def test_bombs_and_megabyte_payloads_are_parked(pipeline: Pipeline, raw: bytes) -> None:
    before = pipeline.client.llen(pipeline.settings.effective_dead_key)
    pipeline.client.rpush(pipeline.settings.jobs_key, raw)
    assert wait_parked(pipeline, before + 1)
    parked = json.loads(pipeline.client.lindex(pipeline.settings.effective_dead_key, -1))  # type: ignore[arg-type]
    assert parked["reason"]
    assert pipeline.stack is not None and pipeline.stack.alive()


def test_hostile_control_messages_are_each_answered_and_never_reach_the_switch(pipeline: Pipeline) -> None:
    dial_id = f"hostile_{time.monotonic_ns()}"
    pubsub = pipeline.call(dial_id)
    messages: list[str] = [
        "",
        "null",
        "[]",
        "{}",
        '{"type": null}',
        '{"type": ["barge"]}',
        '{"type": "barge"}',
        "\x00\xff",
        json.dumps({"type": "barge", "phone_number": "1" * 5000, "caller_id": "1001"}),
        json.dumps({"type": "barge", "phone_number": "15105550177\n\napi hupall", "caller_id": "1001"}),
        json.dumps({"type": "barge", "phone_number": "x@y z", "caller_id": "1001"}),
        json.dumps({"type": "barge", "phone_number": "15105550177", "caller_id": "1001,dial_id=x"}),
        "[" * 50_000,
        json.dumps({"type": "whisper" * 1000}),
        json.dumps({"type": "mute", "x": "y" * 20_000}),
    ]
    for message in messages:
        pipeline.client.publish(dial_id, message)
    events = pipeline.events_until(pubsub, lambda ev: sum(e.get("type") == "error" for e in ev) >= len(messages))
    errors = [e for e in events if e.get("type") == "error"]
    assert len(errors) == len(messages) and all(e.get("reason") for e in errors)
    time.sleep(0.3)
    our_commands_only(pipeline)
    assert pipeline.stack is not None and pipeline.stack.alive()


def test_everything_the_switch_received_was_ours(pipeline: Pipeline) -> None:
    pipeline.call(f"final_{time.monotonic_ns()}")
    our_commands_only(pipeline)
