"""Call control over real processes: pub/sub → relay (in the bridge) → control actors → ESL → the switch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    running = Pipeline(redis_server.url, bridges=2).start()
    yield running
    running.stop()


def reply_to(kind: str, reply: str = "ack") -> Any:
    return lambda events: any(e["type"] == reply and e.get("event") == kind for e in events)


def command(
    pipeline: Pipeline, pubsub: Any, dial_id: str, message: dict[str, Any] | str, kind: str, reply: str = "ack"
) -> dict[str, Any]:
    pipeline.publish(dial_id, message)
    events = pipeline.events_until(pubsub, reply_to(kind, reply))
    return next(e for e in events if e["type"] == reply and e.get("event") == kind)


def unique(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns()}"


@pytest.mark.sim_only  # reads the barger's eavesdrop mode, which a real switch does not tell
def test_barge_whisper_mute_threeway_unthreeway_hangup_on_a_live_call(pipeline: Pipeline) -> None:
    dial_id = unique("ctl")
    pubsub = pipeline.call(dial_id)
    sim = pipeline.simulator
    # barge: the barger (side 2) is called, answers and eavesdrops side 0 listen-only
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "777-777-7777"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    barger = pipeline.channel_of_side(dial_id, "2")
    assert sim.channels()[barger].eavesdrop_target == pipeline.channel_of_side(dial_id, "0")
    assert sim.eavesdrop_mode(barger) == "listen"
    # each mode change is acked, in order, and FreeSWITCH's eavesdrop mode follows
    # (and the barger's mode is in the call record by the time the ack arrives: written in the ack's transaction)
    for kind, mode, recorded in [
        ("whisper", "talk_target", "whisper"),
        ("mute", "listen", "listen"),
        ("threeway", "threeway", "threeway"),
        ("unthreeway", "listen", "listen"),
        ("whisper", "talk_target", "whisper"),
        ("threeway", "threeway", "threeway"),
        ("unthreeway", "talk_target", "whisper"),
    ]:
        command(pipeline, pubsub, dial_id, {"type": kind}, kind)
        assert sim.eavesdrop_mode(barger) == mode, kind
        assert pipeline.client.hget(f"redswitch:call:{dial_id}", "barger_mode") == recorded, kind
    # hangup: every side hangs up and the active list is empty
    pipeline.publish(dial_id, {"type": "hangup"})
    events = pipeline.events_until(pubsub, lambda ev: reply_to("hangup")(ev) and hung_up("0", "1", "2")(ev))
    assert {e["side"] for e in events if e["type"] == "hangup-event"} == {"0", "1", "2"}
    assert pipeline.client.llen(f"redswitch.{dial_id}.talkiq_org_id.{dial_id}") == 0


@pytest.mark.sim_only  # reads the barger's eavesdrop mode
def test_commands_that_cannot_apply_are_answered_with_error_and_change_nothing(pipeline: Pipeline) -> None:
    dial_id = unique("err")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.simulator.commands())
    # no barger yet
    for kind in ("whisper", "mute", "threeway", "unthreeway"):
        error = command(pipeline, pubsub, dial_id, {"type": kind}, kind, reply="error")
        assert "no barger" in error["reason"]
    assert pipeline.commands_since(before) == []
    # a second barge while one is up
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    barger = pipeline.channel_of_side(dial_id, "2")
    error = command(
        pipeline,
        pubsub,
        dial_id,
        {"type": "barge", "phone_number": "15105550178", "caller_id": "1001"},
        "barge",
        reply="error",
    )
    assert "already" in error["reason"]
    error = command(pipeline, pubsub, dial_id, {"type": "unthreeway"}, "unthreeway", reply="error")
    assert "not in threeway" in error["reason"]
    assert pipeline.simulator.eavesdrop_mode(barger) == "listen"
    assert sum("originate" in c and "eavesdrop" in c and dial_id in c for c in pipeline.simulator.commands()) == 1


def test_malformed_control_messages_get_an_error_and_never_reach_freeswitch(pipeline: Pipeline) -> None:
    dial_id = unique("bad")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    cases: list[tuple[dict[str, Any] | str, str]] = [
        ("not json", "unknown"),
        ({"type": "explode"}, "explode"),
        ({"type": "barge", "phone_number": "1510 555", "caller_id": "1001"}, "barge"),
        ({"type": "barge", "phone_number": "15105550177&eavesdrop(x)", "caller_id": "1001"}, "barge"),
        ({"type": "barge", "phone_number": "a@b\n\napi hupall", "caller_id": "1001"}, "barge"),
        ({"type": "barge", "phone_number": "15105550177", "caller_id": "1}"}, "barge"),
    ]
    for message, kind in cases:
        error = command(pipeline, pubsub, dial_id, message, kind, reply="error")
        assert error["reason"]
    time.sleep(0.2)
    assert pipeline.commands_since(before) == []
    # the call is untouched
    assert sorted(pipeline.client.lrange(f"redswitch.{dial_id}.talkiq_org_id.{dial_id}", 0, -1)) == [
        "ACTIVE.0",
        "ACTIVE.1",
    ]


def test_our_own_events_on_the_channel_are_never_taken_for_commands(pipeline: Pipeline) -> None:
    dial_id = unique("own")
    pubsub = pipeline.call(dial_id)
    for event in (
        {"type": "ack", "event": "hangup"},
        {"type": "hangup-event", "side": "0", "cause": "X"},
        {"type": "call-start", "dial_id": dial_id},
        {"type": "error", "event": "x", "reason": "y"},
    ):
        pipeline.publish(dial_id, event)
    time.sleep(0.5)
    events = pipeline.events_until(pubsub, lambda ev: len(ev) >= 4)
    assert not any(e["type"] in ("ack", "error") and e not in events[:4] for e in events[4:])
    assert all(e["type"] != "error" or e.get("reason") == "y" for e in events)


def test_with_two_bridges_each_control_message_is_executed_once(pipeline: Pipeline) -> None:
    dial_id = unique("once")
    pubsub = pipeline.call(dial_id)
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    barger = pipeline.channel_of_side(dial_id, "2")
    for kind in ("whisper", "mute", "whisper"):
        command(pipeline, pubsub, dial_id, {"type": kind}, kind)
    time.sleep(0.5)
    dtmf = [c for c in pipeline.switch.commands() if c.startswith(f"api uuid_recv_dtmf {barger}")]
    assert dtmf == [
        f"api uuid_recv_dtmf {barger} 2",
        f"api uuid_recv_dtmf {barger} 0",
        f"api uuid_recv_dtmf {barger} 2",
    ]
    acks = [e for e in pipeline.events_until(pubsub, lambda ev: True, timeout=0.5)]
    assert [e for e in acks if e["type"] == "ack"] == []  # no late duplicate acks


def test_python_services_send_control_durably_without_pubsub(pipeline: Pipeline) -> None:
    dial_id = unique("direct")
    pubsub = pipeline.call(dial_id)
    pipeline.enqueue("hangup", dial_id, {"type": "hangup"})
    events = pipeline.events_until(pubsub, lambda ev: reply_to("hangup")(ev) and hung_up("0", "1")(ev))
    assert {e["cause"] for e in events if e["type"] == "hangup-event"} == {"NORMAL_CLEARING"}
    # and a command for a call that is over is answered with an error
    pipeline.enqueue("whisper", dial_id, {"type": "whisper"})
    error = next(e for e in pipeline.events_until(pubsub, reply_to("whisper", "error")) if e["type"] == "error")
    assert "no active call" in error["reason"]


def test_record_is_refused_when_no_recordings_directory_is_configured(pipeline: Pipeline) -> None:
    dial_id = unique("norec")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    error = command(pipeline, pubsub, dial_id, {"type": "record"}, "record", reply="error")
    assert "RECORDINGS_DIR" in error["reason"]
    error = command(pipeline, pubsub, dial_id, {"type": "stop-record"}, "stop-record", reply="error")
    assert "not being recorded" in error["reason"]
    assert pipeline.commands_since(before) == []


def test_play_is_refused_when_no_sounds_directory_is_configured(pipeline: Pipeline) -> None:
    dial_id = unique("noplay")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    error = command(pipeline, pubsub, dial_id, {"type": "play", "side": "0", "file": "a.wav"}, "play", reply="error")
    assert "SOUNDS_DIR" in error["reason"]
    assert pipeline.commands_since(before) == []
