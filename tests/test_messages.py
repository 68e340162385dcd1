from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redswitch.errors import PayloadError
from redswitch.messages import MAX_PAYLOAD_BYTES, parse_control, parse_job, peek_field
from tests.payloads import INJECTIONS, JOB_FIELDS, SEED_JOB, SEED_JOB_TEXT, job, job_json


def test_parse_job_accepts_the_seed_example_as_printed_in_the_original_readme() -> None:
    call = parse_job(SEED_JOB_TEXT)
    assert call.to_dict() == SEED_JOB


def test_parse_job_ignores_unknown_extra_fields() -> None:
    assert parse_job(job_json(priority="high", extra={"a": 1})).dial_id == "talkiq_dial_id"


def test_parse_job_normalises_phone_separators_seen_in_the_wild() -> None:
    call = parse_job(job_json(caller_id_lega="777-777-7777", callee_number="+1.415.697.0980"))
    assert call.caller_id_lega == "7777777777"
    assert call.callee_number == "+14156970980"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"asp-call"', "must be a JSON object, not a string"),
        (job_json(type="asp-call-v2"), "unknown job type"),
        (json.dumps({k: v for k, v in SEED_JOB.items() if k != "dial_id"}), "missing field 'dial_id'"),
        (job_json(org_id=42), "'org_id' must be a string, not a number"),
        (job_json(caller_number=None), "'caller_number' must be a string, not null"),
        (job_json(callee_number="12"), "3 to 20 digits"),
        (job_json(dial_id="a.b"), "'dial_id' must be 1 to 64"),
        (job_json(dial_id="x" * 65), "'dial_id' must be 1 to 64"),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        (" " * (MAX_PAYLOAD_BYTES + 1), "more than the"),
    ],
)
def test_parse_job_rejects_bad_input_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_job(raw)
    assert reason in caught.value.reason


@pytest.mark.parametrize("field", JOB_FIELDS)
@pytest.mark.parametrize("fragment", INJECTIONS)
def test_parse_job_rejects_injection_shaped_values_in_every_field(field: str, fragment: str) -> None:
    value = SEED_JOB[field][:5] + fragment + "1234"
    with pytest.raises(PayloadError):
        parse_job(json.dumps(job(**{field: value})))


@given(st.dictionaries(st.sampled_from(JOB_FIELDS + ["type"]), st.one_of(st.text(), st.integers(), st.none())))
def test_parse_job_never_raises_anything_but_payload_error(data: dict[str, object]) -> None:
    try:
        call = parse_job(json.dumps(data))
    except PayloadError as exc:
        assert exc.reason
    else:
        # Whatever got through holds only safe characters.
        for value in call.to_dict().values():
            assert all(ch.isalnum() or ch in "_-+." for ch in value)


@given(st.binary(max_size=300))
def test_parse_job_refuses_random_bytes_with_a_reason(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_job(raw)


def test_parse_control_accepts_the_seed_barge_example() -> None:
    control = parse_control('{"type": "barge", "phone_number": "15105625882", "caller_id": "777-777-7777",}')
    assert (control.type, control.phone_number, control.caller_id) == ("barge", "15105625882", "7777777777")


def test_parse_control_accepts_a_sip_address_for_barge() -> None:
    control = parse_control('{"type": "barge", "phone_number": "sup.1001@pbx.example.com", "caller_id": "1001"}')
    assert control.is_sip_address


@pytest.mark.parametrize("kind", ["hangup", "whisper", "mute", "threeway", "unthreeway"])
def test_parse_control_accepts_every_simple_type(kind: str) -> None:
    assert parse_control(json.dumps({"type": kind})).type == kind


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ack", "event": "hangup"}',
        '{"type": "answer-event", "side": "0"}',
        '{"type": "explode"}',
        '{"type": "barge", "phone_number": "1 2", "caller_id": "1"}',
        '{"type": "barge", "phone_number": "a@b c", "caller_id": "1"}',
        "{}",
    ],
)
def test_parse_control_rejects_events_unknown_types_and_bad_numbers(raw: str) -> None:
    with pytest.raises(PayloadError):
        parse_control(raw)


def test_peek_field_reads_a_valid_dial_id_from_an_otherwise_invalid_job() -> None:
    assert peek_field(job_json(caller_number="x"), "dial_id") == "talkiq_dial_id"
    assert peek_field(job_json(dial_id="bad id"), "dial_id") is None
    assert peek_field("garbage", "dial_id") is None


@given(
    side=st.one_of(st.sampled_from(["0", "1", "both", "2", "0 ", "both\n"]), st.text(max_size=6)),
    digits=st.one_of(st.from_regex(r"[0-9*#A-D]{1,33}", fullmatch=True), st.text(max_size=40)),
    file=st.one_of(st.from_regex(r"[A-Za-z0-9_.\-/ ]{1,70}", fullmatch=True), st.text(max_size=70)),
    by=st.one_of(st.from_regex(r"[A-Za-z0-9_.@+\- \n]{1,66}", fullmatch=True), st.text(max_size=70)),
)
def test_the_new_verbs_fields_either_are_refused_or_fit_their_esl_positions(
    side: str, digits: str, file: str, by: str
) -> None:
    from redswitch.protocol import commands

    uuid = "11111111-1111-4111-8111-111111111111"
    for message in (
        {"type": "send-dtmf", "side": side, "digits": digits, "by": by},
        {"type": "play", "side": side, "file": file},
    ):
        try:
            control = parse_control(json.dumps(message))
        except PayloadError:
            continue
        assert control.side in ("0", "1", "both")
        if control.type == "send-dtmf":
            assert commands.uuid_send_dtmf(uuid, control.digits).split(" ")[2] == digits
        else:
            line = commands.uuid_broadcast(uuid, f"/usr/share/sounds/{control.file}")
            assert line.count(" ") == 3 and "/" not in control.file and not control.file.startswith(".")
        assert "\n" not in control.by and " " not in control.by
