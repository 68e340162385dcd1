"""``transfer`` and ``record-event``s over real processes: redis-server, the simulator, bridge, worker, listener.

A transfer dials the new number as a leg of the side (parked until it answers), then ``uuid_bridge``s the other side
to it, which ends the replaced leg; the client sees the new leg's ``answer-event`` (``"transfer": true``) and the
``ack``, and nothing of the replaced leg. A failed new leg leaves the call as it was (``error`` with the cause).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch.simulator import Scenario
from redswitch.simulator.scenario import Outcome, Rule
from tests.payloads import INJECTIONS, SEED_JOB, next_event
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer
from tests.test_control import command, reply_to, unique

RECORDINGS = "/var/lib/freeswitch/recordings"
GATEWAY = SEED_JOB["call_provider"]
#: Numbers the simulated far end answers after ringing a while, so that a test sees the new leg ring first.
SLOW = "15105550777"

pytestmark = pytest.mark.sim_only  # reads the simulator's channels (who is bridged to whom)


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    scenario = Scenario(rules=(Rule(Outcome(ring=0.4), suffix="0777"), *Scenario().rules))
    running = Pipeline(redis_server.url, scenario=scenario, recordings_dir=RECORDINGS).start()
    yield running
    running.stop()


def since(pipeline: Pipeline, before: int) -> list[str]:
    return pipeline.commands_since(before)


def published(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Redswitch published (the control messages the test itself published left out)."""
    return [e for e in events if e["type"] in ("answer-event", "hangup-event", "ack", "error", "record-event")]


def settle(pubsub: Any, seconds: float = 0.6) -> list[dict[str, Any]]:
    """Whatever else is published in the next ``seconds`` (e.g. a late event of the replaced leg)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = next_event(pubsub, timeout=0.1)
        if event is not None:
            out.append(event)
    return published(out)


def recorded(pipeline: Pipeline, pubsub: Any, dial_id: str, kind: str, *more: str) -> list[dict[str, Any]]:
    """Publish ``kind`` (record, stop-record), wait for its ack and its record-event (and the ``more`` hangups) in
    whichever order they come: what Redswitch published meanwhile."""
    pipeline.publish(dial_id, {"type": kind})
    done = lambda ev: reply_to(kind)(ev) and has("record-event")(ev) and hung_up(*more)(ev)  # noqa: E731
    return published(pipeline.events_until(pubsub, done))


def record_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "record-event"]


def new_leg(commands: list[str], side: str) -> str:
    originate = next(c for c in commands if c.startswith("api originate ") and "redswitch_transfer=pending" in c)
    assert f"redswitch_side={side}," in originate, originate
    return originate.split("origination_uuid=")[1].split(",")[0]


def test_transfer_side_1_dials_the_new_number_bridges_it_and_ends_the_replaced_leg(pipeline: Pipeline) -> None:
    dial_id = unique("xfer1")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    before = len(pipeline.switch.commands())
    pipeline.publish(dial_id, {"type": "transfer", "side": "1", "phone_number": "1-510-555-0777", "by": "crm"})
    time.sleep(0.2)  # the new leg rings (0.4 s): the call is untouched meanwhile
    channels = pipeline.simulator.channels()
    assert channels[callee].other_uuid == caller and channels[caller].other_uuid == callee
    ringing = [c for c in channels.values() if c.variables.get("redswitch_transfer") == "pending"]
    assert [(c.number, c.answered, c.variables["redswitch_dial_id"]) for c in ringing] == [
        ("15105550777", False, dial_id)
    ]
    events = published(pipeline.events_until(pubsub, reply_to("transfer")))
    ack = events[-1]
    assert ack == {"type": "ack", "event": "transfer", "side": "1", "phone_number": "15105550777"}
    sent = since(pipeline, before)
    new = new_leg(sent, "1")
    originate = next(c for c in sent if c.startswith("api originate "))
    assert originate.endswith(f"}}sofia/gateway/{GATEWAY}/15105550777 &park()"), originate
    for var in (f"redswitch_dial_id={dial_id}", "ignore_early_media=true", "originate_timeout=2"):
        assert var in originate, var
    # the caller id defaults to the one the side was dialled with (the job's caller_id_legb)
    assert f"origination_caller_id_number={SEED_JOB['caller_id_legb']}," in originate
    assert [c for c in sent if not c.startswith("api originate ")] == [
        f"api uuid_setvar {callee} redswitch_replaced_by {new}",
        f"api uuid_bridge {caller} {new}",
        f"api uuid_setvar {new} redswitch_transfer bridged",
    ]
    events += settle(pubsub)
    # the client sees the new leg's answer, then the ack: nothing of the replaced leg's hangup
    assert events == [{"type": "answer-event", "side": "1", "transfer": True}, ack], events
    channels = pipeline.simulator.channels()
    assert callee not in channels
    assert channels[new].other_uuid == caller and channels[caller].other_uuid == new
    assert channels[new].number == "15105550777"
    record = pipeline.client.hgetall(f"redswitch:call:{dial_id}")
    assert record["uuid1"] == new and "transfer" not in record
    assert pipeline.client.sismember("redswitch:active", dial_id)
    active = pipeline.client.lrange(f"redswitch.{dial_id}.{SEED_JOB['org_id']}.{dial_id}", 0, -1)
    assert sorted(active) == ["ACTIVE.0", "ACTIVE.1"]
    history = [
        json.loads(e) for e in pipeline.client.lrange(f"redswitch_history.{SEED_JOB['org_id']}.{dial_id}", 0, -1)
    ]
    assert history[0] == {"type": "answer-event", "side": "1", "transfer": True}
    # the new leg is the side now: its hangup is side 1's, and the caller follows (the call ends)
    assert pipeline.switch.hangup(new)
    events = published(pipeline.events_until(pubsub, hung_up("0", "1")))
    assert [(e["type"], e["side"], e["cause"]) for e in events] == [
        ("hangup-event", "1", "NORMAL_CLEARING"),
        ("hangup-event", "0", "NORMAL_CLEARING"),
    ]
    assert pipeline.wait_for(lambda: not pipeline.client.sismember("redswitch:active", dial_id), timeout=5)
    pubsub.close()


def test_transfer_side_0_keeps_the_call_and_its_recording_reports_its_stop(pipeline: Pipeline) -> None:
    dial_id = unique("xfer0")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    name = next(e for e in recorded(pipeline, pubsub, dial_id, "record") if e["type"] == "ack")["file"]
    before = len(pipeline.switch.commands())
    message = {"type": "transfer", "side": "0", "phone_number": "15105550123", "caller_id": "+1-415-555-0100"}
    pipeline.publish(dial_id, message)
    events = published(pipeline.events_until(pubsub, lambda ev: reply_to("transfer")(ev) and has("record-event")(ev)))
    events += settle(pubsub)
    new = new_leg(since(pipeline, before), "0")
    assert f"api uuid_bridge {callee} {new}" in since(pipeline, before)
    originate = next(c for c in since(pipeline, before) if c.startswith("api originate "))
    assert "origination_caller_id_number=+14155550100," in originate
    assert "sip_h_X-TalkIQ-Callprovider=" in originate  # side 0's headers, as the original sent them
    # side 0's hangup would end the call: the replaced leg's is never published, and the call goes on
    assert not [e for e in events if e["type"] == "hangup-event"], events
    assert {"type": "answer-event", "side": "0", "transfer": True} in events
    # the recording was of the replaced leg's channel: it closed with it (FreeSWITCH's RECORD_STOP)
    assert {"type": "record-event", "state": "stop", "file": name, "side": "0"} in events
    assert pipeline.wait_for(lambda: not pipeline.client.hget(f"redswitch:call:{dial_id}", "recording"), timeout=5)
    assert pipeline.client.sismember("redswitch:active", dial_id)
    channels = pipeline.simulator.channels()
    assert caller not in channels and channels[callee].other_uuid == new
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "uuid0") == new
    # a hangup now hangs up the new side 0; the call ends as any call does
    pipeline.publish(dial_id, {"type": "hangup"})
    pipeline.events_until(pubsub, lambda ev: reply_to("hangup")(ev) and hung_up("0", "1")(ev))
    assert f"api uuid_kill {new} NORMAL_CLEARING" in pipeline.switch.commands()
    assert pipeline.wait_for(lambda: not pipeline.client.sismember("redswitch:active", dial_id), timeout=5)
    pubsub.close()


@pytest.mark.parametrize(("number", "cause"), [("15105550486", "USER_BUSY"), ("15105550408", "NO_ANSWER")])
def test_a_transfer_whose_new_leg_fails_leaves_the_call_as_it_was(pipeline: Pipeline, number: str, cause: str) -> None:
    dial_id = unique("xferbad")
    pubsub = pipeline.call(dial_id)
    caller, callee = pipeline.channel_of_side(dial_id, "0"), pipeline.channel_of_side(dial_id, "1")
    before = len(pipeline.switch.commands())
    pipeline.publish(dial_id, {"type": "transfer", "side": "1", "phone_number": number})
    events = published(pipeline.events_until(pubsub, reply_to("transfer", "error")))
    events += settle(pubsub)
    assert len(events) == 1, events  # the error, and nothing of the new leg (neither its ringing nor its end)
    assert events[0]["cause"] == cause and cause in events[0]["reason"], events
    sent = since(pipeline, before)
    assert len(sent) == 1 and sent[0].startswith("api originate "), sent  # no uuid_bridge, no setvar
    channels = pipeline.simulator.channels()
    assert channels[caller].other_uuid == callee and channels[callee].other_uuid == caller
    legs = [u for u, c in channels.items() if c.variables.get("redswitch_dial_id") == dial_id]
    assert sorted(legs) == sorted([caller, callee])  # the new leg is gone
    record = pipeline.client.hgetall(f"redswitch:call:{dial_id}")
    assert record["uuid1"] == callee and "transfer" not in record
    # the call still works: a transfer to a number that answers goes through
    command(pipeline, pubsub, dial_id, {"type": "transfer", "side": "1", "phone_number": "15105550124"}, "transfer")
    assert callee not in pipeline.simulator.channels()
    pubsub.close()


def test_one_transfer_at_a_time_and_only_between_two_sides_that_are_up(pipeline: Pipeline) -> None:
    dial_id = unique("xferone")
    pubsub = pipeline.call(dial_id)
    pipeline.publish(dial_id, {"type": "transfer", "side": "1", "phone_number": SLOW})
    assert pipeline.wait_for(lambda: pipeline.client.hexists(f"redswitch:call:{dial_id}", "transfer"), timeout=5)
    pipeline.publish(dial_id, {"type": "transfer", "side": "0", "phone_number": "15105550128"})
    events = published(pipeline.events_until(pubsub, reply_to("transfer")))
    replies = [e for e in events if e["type"] in ("ack", "error")]
    assert [e["type"] for e in replies] == ["error", "ack"], events
    assert replies[0]["reason"] == "a transfer of this call is already under way"
    assert not [c for c in pipeline.switch.commands() if "15105550128" in c]
    pubsub.close()
    # a call whose side 1 still rings: nothing to bridge to
    ringing = unique("xferring")
    pubsub = pipeline.subscribe(ringing)
    pipeline.push(dial_id=ringing, user_id=ringing, callee_number="14155550408")
    pipeline.events_until(pubsub, has("answer-event", "0"))
    error = command(
        pipeline, pubsub, ringing, {"type": "transfer", "side": "0", "phone_number": "15105550129"}, "transfer", "error"
    )
    assert error["reason"] == "side 1 is not up (answered and connected)"
    assert not [c for c in pipeline.switch.commands() if "15105550129" in c]
    pubsub.close()


BAD_NUMBERS = [f"1510555{bad}0123" for bad in INJECTIONS] + [
    "1510 555 0123",
    '15105550123"',
    "15105550123|15105550124",
    "15105550123&park()",
    "15105550123\n\napi hupall",
    "user@example.com",  # a SIP address: a transfer goes through the call's gateway only
    "12",
    "1" * 21,
    "",
]


def test_transfer_refuses_numbers_sides_and_caller_ids_that_could_inject_before_freeswitch(pipeline: Pipeline) -> None:
    dial_id = unique("xferinj")
    pubsub = pipeline.call(dial_id)
    before = len(pipeline.switch.commands())
    bad_messages: list[dict[str, Any]] = [{"side": "1", "phone_number": bad} for bad in BAD_NUMBERS]
    bad_messages += [{"side": "1", "phone_number": "15105550123", "caller_id": bad} for bad in BAD_NUMBERS[:8]]
    bad_messages += [{"side": side, "phone_number": "15105550123"} for side in ("2", "0 1", "both", "", "1\n", " 1")]
    bad_messages += [
        {"side": 1, "phone_number": "15105550123"},
        {"side": "1", "phone_number": 15105550123},
        {"phone_number": "15105550123"},
        {"side": "1"},
    ]
    for bad in bad_messages:
        error = command(pipeline, pubsub, dial_id, json.dumps({"type": "transfer", **bad}), "transfer", "error")
        assert error["reason"], bad
    time.sleep(0.3)
    assert since(pipeline, before) == []
    assert pipeline.client.hget(f"redswitch:call:{dial_id}", "uuid1") == pipeline.channel_of_side(dial_id, "1")
    pubsub.close()


def test_record_events_report_start_and_stop_and_the_stop_of_a_hangup(pipeline: Pipeline) -> None:
    dial_id = unique("recev")
    pubsub = pipeline.call(dial_id)
    events = recorded(pipeline, pubsub, dial_id, "record")
    name = next(e for e in events if e["type"] == "ack")["file"]
    assert re.fullmatch(rf"{dial_id}_[0-9]+\.wav", name)
    assert record_events(events) == [{"type": "record-event", "state": "start", "file": name, "side": "0"}]
    events = recorded(pipeline, pubsub, dial_id, "stop-record")
    assert record_events(events) == [{"type": "record-event", "state": "stop", "file": name, "side": "0"}]
    # a second recording, ended by the hangup: FreeSWITCH closes it as the channel goes (after its hangup)
    again = next(e for e in recorded(pipeline, pubsub, dial_id, "record") if e["type"] == "ack")["file"]
    assert pipeline.switch.hangup(pipeline.channel_of_side(dial_id, "1"))
    events = published(pipeline.events_until(pubsub, lambda ev: hung_up("0", "1")(ev) and has("record-event")(ev)))
    assert events[-1] == {"type": "record-event", "state": "stop", "file": again, "side": "0"}, events
    # the event log has them too, in order; the history keeps the call's events only (HISTORY_EVENTS=call)
    entries: list[tuple[str, dict[str, str]]] = pipeline.client.xrange(f"redswitch:events:{dial_id}")  # type: ignore[assignment]
    logged = [json.loads(fields["event"]) for _, fields in entries]
    records = [(e["state"], e["file"]) for e in logged if e["type"] == "record-event"]
    assert records == [("start", name), ("stop", name), ("start", again), ("stop", again)]
    history = pipeline.client.lrange(f"redswitch_history.{SEED_JOB['org_id']}.{dial_id}", 0, -1)
    assert not [e for e in history if "record-event" in e]
    assert not pipeline.client.hget(f"redswitch:call:{dial_id}", "recording")
    pubsub.close()


def test_record_events_go_to_the_history_with_history_events_all(own_redis_server: RedisServer) -> None:
    """A Redis of its own: the module's pipeline's listener holds the lease on the (same-named) switch node."""
    running = Pipeline(own_redis_server.url, recordings_dir=RECORDINGS, history_events="all").start()
    try:
        dial_id = unique("rechist")
        pubsub = running.call(dial_id)
        name = next(e for e in recorded(running, pubsub, dial_id, "record") if e["type"] == "ack")["file"]
        history = [
            json.loads(e) for e in running.client.lrange(f"redswitch_history.{SEED_JOB['org_id']}.{dial_id}", 0, -1)
        ]
        assert {"type": "record-event", "state": "start", "file": name, "side": "0"} in history
        pubsub.close()
    finally:
        running.stop()


def test_redswitch_send_transfer_waits_for_the_new_leg_and_prints_the_ack(pipeline: Pipeline) -> None:
    dial_id = unique("xfercli")
    pubsub = pipeline.call(dial_id)
    callee = pipeline.channel_of_side(dial_id, "1")
    env = {**os.environ, **pipeline.settings.env()}
    base = [sys.executable, "-m", "redswitch", "send", dial_id, "transfer"]
    for bad in (["--phone", "15105550126"], ["--side", "1"], ["--side", "1", "--phone", "1510 555"]):
        done = subprocess.run([*base, *bad], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and done.stdout == "", (bad, done.stderr)
    argv = [*base, "--side", "1", "--phone", "15105550777", "--caller-id", "14155550100"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"type": "ack", "event": "transfer", "side": "1", "phone_number": "15105550777"}
    assert callee not in pipeline.simulator.channels()
    originate = [c for c in pipeline.switch.commands() if "redswitch_transfer=pending" in c and dial_id in c]
    assert len(originate) == 1 and "origination_caller_id_number=14155550100," in originate[0]
    pubsub.close()


def test_a_transfer_of_side_0_ends_a_bargers_eavesdrop_and_the_call_goes_on(pipeline: Pipeline) -> None:
    dial_id = unique("xferbarge")
    pubsub = pipeline.call(dial_id)
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "15105550177"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    pipeline.publish(dial_id, {"type": "transfer", "side": "0", "phone_number": "15105550130"})
    events = published(pipeline.events_until(pubsub, lambda ev: reply_to("transfer")(ev) and hung_up("2")(ev)))
    events += settle(pubsub)
    # the replaced leg's hangup ends the eavesdrop (the barger's leg hangs up, published as any barger's), in
    # whichever order against the new leg's answer; side 0's own hangup is never published
    call_events = sorted((e["type"], e.get("side")) for e in events if e["type"].endswith("-event"))
    assert call_events == [("answer-event", "0"), ("hangup-event", "2")], events
    assert pipeline.client.sismember("redswitch:active", dial_id)
    assert not pipeline.client.hget(f"redswitch:call:{dial_id}", "barger_uuid")
    # a new barge eavesdrops on the new side 0
    new = pipeline.client.hget(f"redswitch:call:{dial_id}", "uuid0")
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550178", "caller_id": "15105550178"})
    pipeline.events_until(pubsub, lambda ev: reply_to("barge")(ev) and has("answer-event", "2")(ev))
    assert pipeline.simulator.channels()[pipeline.channel_of_side(dial_id, "2")].eavesdrop_target == new
    pubsub.close()
