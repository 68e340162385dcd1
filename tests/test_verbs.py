"""The control verbs beyond the seed's six, on the switch of the end-to-end tier: the simulator, or a real
FreeSWITCH (``REDSWITCH_TEST_FREESWITCH``, tests/switch.py).

What each verb did is read from the switch itself over ESL (``uuid_dump``'s call state), from its files (a
recording a real switch wrote), or from the command line it was sent; tests/test_control_verbs.py reads the
simulator's own inspection for the details a real switch does not expose (DTMF sent out, eavesdrop mode).
"""

from __future__ import annotations

import json
import math
import pathlib
import struct
import time
import wave
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch.esl.client import EslClient
from redswitch.protocol import callstates
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer
from tests.switch import real_address
from tests.test_control import command, reply_to, unique


@pytest.fixture(scope="module")
def directories(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """The recordings directory and a sounds directory holding one real prompt (a second of 440 Hz, 8 kHz mono)."""
    recordings = tmp_path_factory.mktemp("recordings")
    sounds = tmp_path_factory.mktemp("sounds")
    with wave.open(str(sounds / "tone.wav"), "wb") as prompt:
        prompt.setnchannels(1)
        prompt.setsampwidth(2)
        prompt.setframerate(8000)
        prompt.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(i / 8000 * 2 * math.pi * 440))) for i in range(8000))
        )
    return recordings, sounds


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer, directories: tuple[pathlib.Path, pathlib.Path]) -> Iterator[Pipeline]:
    recordings, sounds = directories
    running = Pipeline(redis_server.url, recordings_dir=str(recordings), sounds_dir=str(sounds)).start()
    yield running
    running.stop()


def dump(pipeline: Pipeline, uuid: str) -> dict[str, str]:
    """The channel as the switch reports it (``uuid_dump``: the live channel, not the database)."""
    esl = EslClient("127.0.0.1", pipeline.switch.port, pipeline.switch.password)
    try:
        return {key: str(value) for key, value in json.loads(esl.api(f"uuid_dump {uuid} json")).items()}
    finally:
        esl.close()


def call_state(pipeline: Pipeline, uuid: str) -> str:
    return dump(pipeline, uuid)["Channel-Call-State"]


def recorded(pipeline: Pipeline, pubsub: Any, dial_id: str, kind: str, state: str) -> tuple[dict[str, Any], ...]:
    """Send ``kind`` (record, stop-record); its ack and the ``record-event`` of ``state`` the switch's event makes,
    which may come in either order."""
    pipeline.publish(dial_id, {"type": kind})

    def both(events: list[dict[str, Any]]) -> bool:
        return reply_to(kind)(events) and any(e["type"] == "record-event" and e["state"] == state for e in events)

    events = pipeline.events_until(pubsub, both)
    ack = next(e for e in events if e["type"] == "ack" and e.get("event") == kind)
    return ack, next(e for e in events if e["type"] == "record-event" and e["state"] == state)


def sent_once(pipeline: Pipeline, line: str) -> bool:
    return pipeline.switch.commands().count(line) == 1


def test_hold_and_unhold_change_the_sides_call_state_on_the_switch(pipeline: Pipeline) -> None:
    dial_id = unique("vhold")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    assert call_state(pipeline, caller) == "ACTIVE"
    command(pipeline, pubsub, dial_id, {"type": "hold", "side": "0"}, "hold")
    assert sent_once(pipeline, f"api uuid_hold {caller}")
    assert (call_state(pipeline, caller), call_state(pipeline, callee)) == ("HELD", "ACTIVE")
    command(pipeline, pubsub, dial_id, {"type": "unhold", "side": "0"}, "unhold")
    assert sent_once(pipeline, f"api uuid_hold off {caller}")
    # UNHELD, then ACTIVE once the far end took the re-INVITE (a real switch; the simulator goes straight through)
    assert pipeline.wait_for(lambda: call_state(pipeline, caller) == "ACTIVE", timeout=5), call_state(pipeline, caller)
    assert (
        "not on hold"
        in command(pipeline, pubsub, dial_id, {"type": "unhold", "side": "0"}, "unhold", "error")["reason"]
    )


def test_send_dtmf_is_accepted_by_the_switch_for_the_side_asked_for(pipeline: Pipeline) -> None:
    dial_id = unique("vdtmf")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    # the ack comes only on the switch's +OK (a real one answers "+OK <uuid> sent DTMF 12#.")
    command(pipeline, pubsub, dial_id, {"type": "send-dtmf", "side": "1", "digits": "12#"}, "send-dtmf")
    assert sent_once(pipeline, f"api uuid_send_dtmf {callee} 12#")


def test_record_writes_the_file_the_server_named_and_stop_record_ends_it(
    pipeline: Pipeline, directories: tuple[pathlib.Path, pathlib.Path]
) -> None:
    recordings = directories[0]
    dial_id = unique("vrec")
    pubsub = pipeline.call(dial_id)
    caller = pipeline.channel_of_side(dial_id, "0")
    ack, started = recorded(pipeline, pubsub, dial_id, "record", "start")
    name = ack["file"]
    assert sent_once(pipeline, f"api uuid_record {caller} start {recordings}/{name}")
    # the switch's RECORD_START became a record-event naming the file
    assert (started["file"], started["side"]) == (name, "0"), started
    time.sleep(1.0)  # a second of the call
    ack, stopped = recorded(pipeline, pubsub, dial_id, "stop-record", "stop")
    assert ack["file"] == stopped["file"] == name
    assert sent_once(pipeline, f"api uuid_record {caller} stop {recordings}/{name}")
    if real_address() is not None:  # a real switch wrote the file (the simulator writes none)
        path = recordings / name
        assert pipeline.wait_for(lambda: path.exists() and path.stat().st_size > 44, timeout=5), list(
            recordings.iterdir()
        )
        assert path.read_bytes()[:4] == b"RIFF"


def test_play_and_stop_play_a_prompt_on_both_sides(
    pipeline: Pipeline, directories: tuple[pathlib.Path, pathlib.Path]
) -> None:
    sounds = directories[1]
    dial_id = unique("vplay")
    pubsub = pipeline.call(dial_id)
    caller = pipeline.channel_of_side(dial_id, "0")
    command(pipeline, pubsub, dial_id, {"type": "play", "side": "both", "file": "tone.wav"}, "play")
    assert sent_once(pipeline, f"api uuid_broadcast {caller} {sounds}/tone.wav both")
    command(pipeline, pubsub, dial_id, {"type": "stop-play", "side": "both"}, "stop-play")
    assert sent_once(pipeline, f"api uuid_break {caller} both")
    # the call is still up on the switch, both sides answered (FreeSWITCH 1.11 at times shows the caller RING_WAIT
    # after a broadcast to both legs of a bridge: an answered state too)
    callee = pipeline.channel_of_side(dial_id, "1")
    assert {call_state(pipeline, leg) for leg in (caller, callee)} <= callstates.ANSWERED
    assert pipeline.client.sismember("redswitch:active", dial_id)


def test_coach_callee_on_a_barged_call(pipeline: Pipeline) -> None:
    dial_id = unique("vcoach")
    pubsub = pipeline.call(dial_id)
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    barger = pipeline.channel_of_side(dial_id, "2")
    command(pipeline, pubsub, dial_id, {"type": "coach-callee"}, "coach-callee")
    assert sent_once(pipeline, f"api uuid_recv_dtmf {barger} 1")
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "barger_mode") == "coach"
    command(pipeline, pubsub, dial_id, {"type": "mute"}, "mute")
    assert dump(pipeline, barger)["Answer-State"] == "answered"  # still eavesdropping


def test_transfer_of_side_1_bridges_the_new_number_and_ends_the_replaced_leg_on_the_switch(pipeline: Pipeline) -> None:
    dial_id = unique("vxfer")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    before = len(pipeline.switch.commands())
    ack = command(
        pipeline, pubsub, dial_id, {"type": "transfer", "side": "1", "phone_number": "15105550777"}, "transfer"
    )
    assert ack["phone_number"] == "15105550777"
    bridge = [line for line in pipeline.commands_since(before) if line.startswith("api uuid_bridge ")]
    assert len(bridge) == 1 and bridge[0].startswith(f"api uuid_bridge {caller} "), bridge
    new = bridge[0].split()[-1]
    # the switch: the replaced leg is gone, the caller talks to the new leg, both answered
    assert pipeline.wait_for(lambda: callee not in pipeline.switch.channels(), timeout=5)
    assert pipeline.channel_of_side(dial_id, "1") == new
    assert dump(pipeline, new)["Answer-State"] == "answered"
    assert pipeline.wait_for(lambda: dump(pipeline, caller).get("Other-Leg-Unique-ID") == new, timeout=5), dump(
        pipeline, caller
    ).get("Other-Leg-Unique-ID")
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "uuid1") == new
    # and the call goes on: a hangup of side 0 still ends it, the new leg with it
    pipeline.publish(dial_id, {"type": "hangup"})
    events = pipeline.events_until(pubsub, lambda ev: reply_to("hangup")(ev) and hung_up("0", "1")(ev))
    assert [e for e in events if e["type"] == "hangup-event" and e["side"] == "1"], events
    assert pipeline.wait_for(lambda: new not in pipeline.switch.channels(), timeout=5)


def test_a_transfer_to_a_busy_number_leaves_the_call_as_it_was_on_the_switch(pipeline: Pipeline) -> None:
    dial_id = unique("vxferbusy")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    message = {"type": "transfer", "side": "1", "phone_number": "15105550486"}
    error = command(pipeline, pubsub, dial_id, message, "transfer", "error")
    assert error["cause"] == "USER_BUSY", error
    assert dump(pipeline, caller).get("Other-Leg-Unique-ID") == callee
    assert pipeline.channel_of_side(dial_id, "1") == callee
