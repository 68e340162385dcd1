"""The listener's pure parts: picking headers, translating events, building the store's changes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from redswitch.protocol import Event, parse_event_plain, serialize_event_plain
from redswitch.protocol.pick import header_picker
from redswitch.services.listener import EVENTS, Action, action_of, change_of, translate
from redswitch.store import ChannelChange

OURS = {
    "variable_redswitch_dial_id": "d1",
    "variable_redswitch_org_id": "o1",
    "variable_redswitch_user_id": "u1",
    "variable_redswitch_side": "0",
}


def payload(name: str, **headers: str) -> bytes:
    return serialize_event_plain(Event((("Event-Name", name), *headers.items())))


def test_translate_maps_our_channel_events_and_ignores_others() -> None:
    assert translate({"Event-Name": "CHANNEL_ANSWER", **OURS}) == Action("answered", "d1", "o1", "u1", "0")
    hangup = translate(
        {
            "Event-Name": "CHANNEL_HANGUP",
            "Hangup-Cause": "NORMAL_CLEARING",
            **OURS,
            "Caller-Channel-Answered-Time": "1795754822836678",
        }
    )
    assert hangup == Action("hung_up", "d1", "o1", "u1", "0", cause="NORMAL_CLEARING")
    assert translate({"Event-Name": "CHANNEL_ANSWER"}) is None  # not one of ours
    assert translate({"Event-Name": "CHANNEL_ANSWER", **OURS, "variable_redswitch_side": "7"}) is None
    assert translate({"Event-Name": "CHANNEL_ANSWER", **OURS, "variable_redswitch_dial_id": "a.b"}) is None


def test_a_cause_that_is_not_a_freeswitch_cause_name_is_reported_as_normal_unspecified() -> None:
    action = translate({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": 'X", "type": "ack', **OURS})
    assert action is not None and action.cause == "NORMAL_UNSPECIFIED"


def test_background_job_results_are_read_from_the_event_body() -> None:
    event = Event(
        (("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "j1"), ("Job-Command", "originate")),
        body="-ERR INVALID_GATEWAY\n",
    )
    action = action_of(serialize_event_plain(event))
    assert action == Action("job_done", "", cause="INVALID_GATEWAY", job_uuid="j1", result="-ERR INVALID_GATEWAY")
    ok = Event(event.headers, body="+OK 1234\n")
    assert action_of(serialize_event_plain(ok)) == Action("job_done", "", job_uuid="j1", result="+OK 1234")


def test_changes_carry_validated_fields_and_their_event_encoded_once() -> None:
    answered = change_of(Action("answered", "d1", "o1", "u1", "1"), "n1")
    assert answered == ChannelChange("answered", "d1", "o1", "u1", "1", "n1", '{"type": "answer-event", "side": "1"}')
    clearing = change_of(Action("hung_up", "d1", "o1", "u1", "0", cause="NORMAL_CLEARING"), "n1")
    assert clearing is not None and clearing.ends_call
    assert clearing.event == '{"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}'
    busy = Action("hung_up", "d1", "o1", "u1", "1", cause="USER_BUSY", sip_code="486", retryable=False)
    busy_change = change_of(busy, "n1")
    assert busy_change is not None and not busy_change.ends_call
    assert json.loads(busy_change.event) == {
        "type": "hangup-event",
        "side": "1",
        "cause": "USER_BUSY",
        "sip_code": "486",
        "retryable": False,
    }
    assert change_of(Action("created", "d1", "o1", "u1", "2"), "n1") == ChannelChange(
        "seen", "d1", "o1", "u1", "2", "n1"
    )
    assert change_of(Action("job_done", "", job_uuid="j"), "n1") is None


def test_picker_reads_the_first_value_of_a_header_and_never_the_body() -> None:
    pick = header_picker(["Hangup-Cause", "Job-UUID", "variable_x"])
    raw = payload("CHANNEL_HANGUP_COMPLETE", **{"Hangup-Cause": "USER_BUSY", "variable_x": "a b:c"})
    raw = raw.replace(b"\n\n", b"\nHangup-Cause: OTHER\n\n")
    assert pick(raw) == {"Hangup-Cause": "USER_BUSY", "variable_x": "a b:c"}
    body_only = serialize_event_plain(Event((("Event-Name", "X"),), body="Job-UUID: not-a-header\n"))
    assert pick(body_only) == {}


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True), st.text(min_size=1), max_size=8))
def test_picker_agrees_with_the_full_parser(headers: dict[str, str]) -> None:
    headers.pop("Event-Name", None)
    headers.pop("Content-Length", None)
    raw = payload("CUSTOM", **headers)
    full = dict(parse_event_plain(raw).headers)
    picked = header_picker([*headers, "Event-Name"])(raw)
    # A value FreeSWITCH would have sent already holding %XX decodes the same way in both
    assert picked == {name: full[name] for name in picked}
    assert set(picked) == {"Event-Name", *headers}


def test_a_refused_side_carries_its_sip_code_and_whether_to_try_again() -> None:
    refused = {"Event-Name": "CHANNEL_HANGUP", **OURS, "Caller-Channel-Answered-Time": "0"}
    busy = translate(
        {
            **refused,
            "Hangup-Cause": "USER_BUSY",
            "variable_sip_term_status": "486",
            "variable_sip_invite_failure_status": "486",
        }
    )
    assert busy is not None and (busy.sip_code, busy.retryable) == ("486", False)
    congested = translate({**refused, "Hangup-Cause": "NORMAL_TEMPORARY_FAILURE", "variable_sip_term_status": "503"})
    assert congested is not None and (congested.sip_code, congested.retryable) == ("503", True)
    forged = translate({**refused, "Hangup-Cause": "USER_BUSY", "variable_sip_term_status": '486", "x": "'})
    assert forged is not None and forged.sip_code == ""


def test_a_transfers_pending_leg_and_the_leg_it_replaced_are_not_announced() -> None:
    hangup = {"Hangup-Cause": "NORMAL_CLEARING", "Caller-Channel-Answered-Time": "1795754822836678"}
    for name in ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP"):
        pending = payload(name, **OURS, variable_redswitch_transfer="pending", **hangup)
        assert action_of(pending) is None, name
        replaced = payload(name, **OURS, variable_redswitch_replaced_by="c1", **hangup)
        assert action_of(replaced) is None, name
    # once bridged in, the new leg is the side: its hangup is announced as any side's
    bridged = action_of(payload("CHANNEL_HANGUP", **OURS, variable_redswitch_transfer="bridged", **hangup))
    assert bridged == Action("hung_up", "d1", "o1", "u1", "0", cause="NORMAL_CLEARING")


def test_early_media_on_a_side_becomes_an_early_media_event() -> None:
    early = action_of(payload("CHANNEL_PROGRESS_MEDIA", **OURS))
    assert early == Action("early_media", "d1", "o1", "u1", "0")
    change = change_of(early, "n1")
    assert change is not None and change.kind == "early_media"
    assert json.loads(change.event) == {"type": "early-media-event", "side": "0"}
    # not ours, or a transfer's new leg still ringing: nothing
    assert action_of(payload("CHANNEL_PROGRESS_MEDIA")) is None
    assert action_of(payload("CHANNEL_PROGRESS_MEDIA", **OURS, variable_redswitch_transfer="pending")) is None
    assert "CHANNEL_PROGRESS_MEDIA" in EVENTS


def test_record_start_and_stop_become_record_events_with_the_file_name() -> None:
    path = "/var/lib/freeswitch/recordings/d1_1800000000123.wav"
    start = action_of(payload("RECORD_START", **OURS, **{"Record-File-Path": path}))
    assert start == Action("record_start", "d1", "o1", "u1", "0", file="d1_1800000000123.wav")
    change = change_of(start, "n1")
    assert change is not None and change.kind == "record_start"
    assert json.loads(change.event) == {
        "type": "record-event",
        "state": "start",
        "file": "d1_1800000000123.wav",
        "side": "0",
    }
    stop = action_of(
        payload("RECORD_STOP", **OURS, **{"Record-File-Path": path, "Record-Completion-Cause": "success-maxtime"})
    )
    assert stop is not None and change_of(stop, "n1") is not None
    assert json.loads(change_of(stop, "n1").event)["cause"] == "success-maxtime"  # type: ignore[union-attr]
    # a replaced leg's recording still reports its stop (the recording did end)
    replaced = payload("RECORD_STOP", **OURS, variable_redswitch_replaced_by="c1", **{"Record-File-Path": path})
    assert action_of(replaced) == Action("record_stop", "d1", "o1", "u1", "0", file="d1_1800000000123.wav")
    # a name that could break out of the JSON or a path is not published; nor a recording of a channel not ours
    for bad in ('/x/a"b.wav', "/x/", "/x/.hidden", "/x/a b.wav"):
        assert action_of(payload("RECORD_START", **OURS, **{"Record-File-Path": bad})) is None, bad
    assert action_of(payload("RECORD_START", **{"Record-File-Path": path})) is None
