"""Where legacy consumers can see it, Redswitch behaves as the original did (issue 16).

The original's code, not only its README, is the contract: it LPUSHed the active list and the history (a reader
taking ``LINDEX key 0`` gets the latest entry), its history held the call's events only, and its legs carried the
``Accuvit-*`` SIP headers. Checked on real processes (the simulator records what each leg was sent) and, for the
settings that keep Redswitch's other behaviour, on the state writes themselves (the cluster path in
tests/test_redis_cluster.py runs the same scenario).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redswitch.simulator import Scenario
from redswitch.store.events import CALL_EVENTS
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer


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
