"""Where legacy consumers can see it, Redswitch behaves as the original did (issue 16).

The original's code, not only its README, is the contract: it LPUSHed the active list and the history (a reader
taking ``LINDEX key 0`` gets the latest entry), its history held the call's events only, and its legs carried the
``Accuvit-*`` SIP headers. Checked on real processes (the simulator records what each leg was sent) and, for the
settings that keep Redswitch's other behaviour, on the state writes themselves (the cluster path in
tests/test_redis_cluster.py runs the same scenario).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redswitch.admission import Admission
from redswitch.config import Settings
from redswitch.messages import AspCall
from redswitch.simulator import Scenario
from redswitch.state import CALL_EVENTS, CallState, Keys
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer
from tests.test_scheduler import drain


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    scenario = Scenario.default().with_changes(gateways=("talk_call_provider",))  # any other gateway is refused
    running = Pipeline(redis_server.url, scenario).start()  # default settings: the original's behaviour
    yield running
    running.stop()


def unique(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns()}"


def replied(kind: str, reply: str) -> Any:
    return lambda events: any(e["type"] == reply and e.get("event") == kind for e in events)


# -- over real processes, default settings ------------------------------------------------------------------------


def test_a_reader_taking_lindex_0_gets_the_latest_event_and_the_side_that_answered_last(pipeline: Pipeline) -> None:
    dial_id = unique("lindex")
    pubsub = pipeline.call(dial_id)  # waits for both answers
    active = f"redswitch.{dial_id}.talkiq_org_id.{dial_id}"
    history = f"redswitch_history.talkiq_org_id.{dial_id}"
    # Side 1 answers after side 0 (it is dialled only then): the newest entry is first, as the original LPUSHed
    assert pipeline.client.lindex(active, 0) == "ACTIVE.1"
    assert pipeline.client.lrange(active, 0, -1) == ["ACTIVE.1", "ACTIVE.0"]
    assert json.loads(pipeline.client.lindex(history, 0) or "{}") == {"type": "answer-event", "side": "1"}
    assert json.loads(pipeline.client.lindex(history, -1) or "{}") == {"type": "call-start", "dial_id": dial_id}
    # And after the hangup the latest event is again at index 0
    pipeline.publish(dial_id, {"type": "hangup"})
    events = pipeline.events_until(pubsub, hung_up("0", "1"))
    last = [e for e in events if e["type"] == "hangup-event"][-1]
    assert json.loads(pipeline.client.lindex(history, 0) or "{}") == last


def test_the_history_of_a_full_call_holds_its_events_newest_first_and_no_ack_or_error(pipeline: Pipeline) -> None:
    # Given a call with a barger, a command that cannot apply (error) and commands that do (ack)
    dial_id = unique("story")
    pubsub = pipeline.call(dial_id)
    pipeline.publish(dial_id, {"type": "unthreeway"})  # no barger yet: error
    events = pipeline.events_until(pubsub, replied("unthreeway", "error"))
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "777-777-7777"})
    events += pipeline.events_until(pubsub, lambda ev: replied("barge", "ack")(ev) and has("answer-event", "2")(ev))
    # When the call is hung up and every side is gone
    pipeline.publish(dial_id, {"type": "hangup"})
    events += pipeline.events_until(pubsub, lambda ev: replied("hangup", "ack")(ev) and hung_up("0", "1", "2")(ev))
    # Then the channel carried the acks and the error (beside the commands themselves)...
    events = [e for e in events if e["type"] not in ("unthreeway", "barge", "hangup")]
    assert {e["type"] for e in events} == {"answer-event", "hangup-event", "ack", "error"}
    # ...and the history holds exactly the call's events, newest first, as they were published
    stored = [json.loads(item) for item in pipeline.client.lrange(f"redswitch_history.talkiq_org_id.{dial_id}", 0, -1)]
    first = [{"type": "call-start", "dial_id": dial_id}] + [{"type": "answer-event", "side": s} for s in "01"]
    call_events = first + [e for e in events if e["type"] in CALL_EVENTS]  # pipeline.call heard the first three
    assert stored == call_events[::-1]
    assert {(e["type"], e.get("side")) for e in stored} == {
        ("call-start", None),
        *{(kind, side) for kind in ("answer-event", "hangup-event") for side in "012"},
    }


def test_a_call_freeswitch_refused_keeps_call_start_and_its_failure_in_the_history(pipeline: Pipeline) -> None:
    dial_id = unique("refused")
    pubsub = pipeline.subscribe(dial_id)
    pipeline.push(dial_id=dial_id, user_id=dial_id, call_provider="unknown_gateway")
    events = pipeline.events_until(pubsub, has("failure"))
    stored = [json.loads(item) for item in pipeline.client.lrange(f"redswitch_history.talkiq_org_id.{dial_id}", 0, -1)]
    assert [e["type"] for e in stored] == ["failure", "call-start"]
    assert stored[0] == events[-1] and stored[0]["cause"] == "INVALID_GATEWAY"


def sip_headers(pipeline: Pipeline, dial_id: str, side: str) -> dict[str, str]:
    """The SIP header variables the simulator's channel of ``side`` was created with."""
    channel = pipeline.simulator.channels()[pipeline.channel_of_side(dial_id, side)]
    return {name: value for name, value in channel.variables.items() if name.startswith("sip_h_")}


def test_the_legs_carry_the_original_sip_headers_each_with_its_side(pipeline: Pipeline) -> None:
    dial_id = unique("sip")
    pubsub = pipeline.call(dial_id, call_provider="talk_call_provider")
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550177", "caller_id": "777-777-7777"})
    pipeline.events_until(pubsub, lambda ev: replied("barge", "ack")(ev) and has("answer-event", "2")(ev))
    # Side 0 (the originate's leg): the ids, its side and the call provider, under the original's names
    assert sip_headers(pipeline, dial_id, "0") == {
        "sip_h_Accuvit-Dial-ID": dial_id,
        "sip_h_Accuvit-Dial-Side": "0",
        "sip_h_Accuvit-Organization-ID": "talkiq_org_id",
        "sip_h_Accuvit-User-ID": dial_id,
        "sip_h_X-TalkIQ-Callprovider": "talk_call_provider",
    }
    # Side 1 (dialled by the bridge once side 0 answered) and the barger: their side, as the original's side 1
    assert sip_headers(pipeline, dial_id, "1") == {"sip_h_Accuvit-Dial-Side": "1"}
    assert sip_headers(pipeline, dial_id, "2") == {"sip_h_Accuvit-Dial-Side": "2"}
    pipeline.publish(dial_id, {"type": "hangup"})
    pipeline.events_until(pubsub, hung_up("0", "1", "2"))


# -- the state writes, under each setting (a single Redis here; the cluster runs play_call too) ------------------


def settings_for(url: str, order: str) -> Settings:
    """``original``: the defaults (newest first, the call's events); ``redswitch``: the settings keeping the other."""
    if order == "original":
        return Settings(pubsub_redis_url=url, list_order="newest_first", history_events="call")
    return Settings(pubsub_redis_url=url, list_order="oldest_first", history_events="all")


@dataclasses.dataclass
class Played:
    events: list[Any]  # every event published, in order
    history: list[Any]  # the history as stored, index 0 first
    active_answered: list[str]  # the active list once both sides answered
    head_answered: str  # LINDEX 0 of the active list then


def play_call(client: redis.Redis, settings: Settings, dial: str) -> Played:
    """A whole call as the processes write it: call-start, a ``queued`` wait (the org's one slot is taken), both
    answers, an ack and an error, side 1's hangup reconciled by the scheduler, side 0's from the listener."""
    state, keys = CallState(client, settings), Keys(settings)
    admission = Admission(client, dataclasses.replace(settings, org_max_calls="org=1", switch_cps=0))
    holder, call = (AspCall("gw", "1", "2", "3", "4", d, "org", f"{d}_u") for d in (f"{dial}_hold", dial))
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(dial)
    for one in (holder, call):
        state.claim_call(
            one.dial_id, "org", one.user_id, {"org_id": "org", "user_id": one.user_id, "job_uuid": one.dial_id}
        )
    assert admission.check(holder, "fs").verdict == "go"
    assert admission.check(call, "fs").verdict == "queued"
    state.end_call(holder.dial_id)
    state.record_events([f"A|{dial}|org|{call.user_id}|0", f"A|{dial}|org|{call.user_id}|1"])
    active = keys.active(dial, "org", call.user_id)
    active_answered, head = [str(item) for item in client.lrange(active, 0, -1)], client.lindex(active, 0)
    state.reply(dial, {"type": "ack", "event": "whisper"})
    state.reply(dial, {"type": "error", "event": "mute", "reason": "no barger on this call"})
    state.side_hung_up(dial, "org", call.user_id, "1", {"cause": "NORMAL_UNSPECIFIED"})
    state.record_events([f"H|{dial}|org|{call.user_id}|0|NORMAL_CLEARING|-|-"])
    events = [e for e in drain(pubsub) if isinstance(e, dict)]
    history = [json.loads(item) for item in client.lrange(keys.history("org", call.user_id), 0, -1)]
    return Played(events, history, active_answered, str(head))


def check_played(played: Played, dial: str, order: str) -> None:
    assert played.events[0] == {"type": "call-start", "dial_id": dial}
    assert [e["type"] for e in played.events] == [
        "call-start",
        "queued",
        "answer-event",
        "answer-event",
        "ack",
        "error",
        "hangup-event",
        "hangup-event",
    ]
    if order == "original":  # newest first; the call's events only
        assert played.active_answered == ["ACTIVE.1", "ACTIVE.0"] and played.head_answered == "ACTIVE.1"
        assert played.history == [e for e in played.events if e["type"] in CALL_EVENTS][::-1]
        assert played.history[0] == {"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}
    else:  # oldest first; everything published
        assert played.active_answered == ["ACTIVE.0", "ACTIVE.1"] and played.head_answered == "ACTIVE.0"
        assert played.history == played.events


@pytest.mark.parametrize("order", ["original", "redswitch"])
def test_list_order_and_history_events_choose_what_a_reader_of_the_lists_sees(
    redis_client: redis.Redis, redis_server: RedisServer, order: str
) -> None:
    settings = settings_for(redis_server.url, order)
    dial = unique(f"play_{order}")
    check_played(play_call(redis_client, settings, dial), dial, order)


@pytest.mark.parametrize("order", ["original", "redswitch"])
def test_a_failure_is_a_call_event_kept_in_the_history_under_either_setting(
    redis_client: redis.Redis, redis_server: RedisServer, order: str
) -> None:
    settings = settings_for(redis_server.url, order)
    state = CallState(redis_client, settings)
    state.claim_call("fail_dial", "org", "fail_user", {"org_id": "org", "user_id": "fail_user", "job_uuid": "j"})
    state.fail("fail_dial", "org", "fail_user", "INVALID_GATEWAY")
    stored = [json.loads(i)["type"] for i in redis_client.lrange(Keys(settings).history("org", "fail_user"), 0, -1)]
    assert stored == (["failure", "call-start"] if order == "original" else ["call-start", "failure"])
