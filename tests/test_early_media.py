"""Early media on a real pipeline: side 1 is never dialled before side 0 has answered.

Most mobile carriers answer an INVITE with ``183 Session Progress`` and ringback long before the person picks up.
FreeSWITCH's originate returns at that early media unless the leg says ``ignore_early_media=true``, and the
``&bridge`` to side 1 would then ring the callee for nobody. These tests watch the switch's own events on a
separate ESL connection (what FreeSWITCH did, not what Redswitch says it did).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from redswitch.protocol import Event
from redswitch.simulator import Scenario
from tests.esl_raw import RawClient
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer

WATCHED = "CHANNEL_CREATE CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_EXECUTE CHANNEL_HANGUP"


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    scenario = Scenario.default().with_changes(gateways=("talk_call_provider",))
    running = Pipeline(redis_server.url, scenario, originate_timeout=3).start()
    yield running
    running.stop()


@pytest.fixture
def switch_events(pipeline: Pipeline) -> Iterator[RawClient]:
    """An ESL connection of the test's own, subscribed to the channel events that show who was dialled when."""
    client = RawClient(pipeline.settings.esl_port)
    client.login(pipeline.settings.esl_password)
    client.command(f"event plain {WATCHED}")
    yield client
    client.close()


def _call_events(client: RawClient, dial_id: str, until: str, side: str, timeout: float = 10.0) -> list[Event]:
    """The switch's events of ``dial_id``'s legs, up to ``until`` on ``side``."""

    def ours(event: Event) -> bool:
        return event.get("variable_redswitch_dial_id") == dial_id

    def done(event: Event) -> bool:
        return ours(event) and event.name == until and event.get("variable_redswitch_side") == side

    return [e for e in client.events_until(done, timeout=timeout) if ours(e)]


def _steps(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.name or "", e.get("variable_redswitch_side") or "") for e in events]


def test_callee_is_dialled_only_after_the_user_answers_through_early_media(
    pipeline: Pipeline, switch_events: RawClient
) -> None:
    # Given a user whose carrier plays early media for 1.5 s before the user picks up
    dial_id = f"em_answer_{time.monotonic_ns()}"
    pubsub = pipeline.subscribe(dial_id)
    # When the click-to-call is pushed
    pipeline.push(dial_id=dial_id, user_id=dial_id, caller_number="15105550183")
    events = _call_events(switch_events, dial_id, "CHANNEL_ANSWER", "1")
    steps = _steps(events)
    # Then side 0 had early media, then answered, and only then was side 1 created
    assert steps.index(("CHANNEL_PROGRESS_MEDIA", "0")) < steps.index(("CHANNEL_ANSWER", "0"))
    assert steps.index(("CHANNEL_ANSWER", "0")) < steps.index(("CHANNEL_CREATE", "1"))
    # And the consumers saw side 0 answer before side 1
    published = pipeline.events_until(pubsub, lambda ev: has("answer-event", "1")(ev))
    answers = [e["side"] for e in published if e["type"] == "answer-event"]
    assert answers == ["0", "1"]
    # and were told of side 0's early media (once) before its answer
    kinds = [(e["type"], e.get("side")) for e in published if e["type"] != "call-start"]
    assert kinds[:2] == [("early-media-event", "0"), ("answer-event", "0")], kinds
    assert kinds.count(("early-media-event", "0")) == 1 and ("early-media-event", "1") not in kinds
    pipeline.publish(dial_id, {"type": "hangup"})
    pipeline.events_until(pubsub, hung_up("0", "1"))


def test_user_who_never_answers_early_media_ends_no_answer_and_callee_is_never_dialled(
    pipeline: Pipeline, switch_events: RawClient
) -> None:
    # Given a user whose carrier plays early media and who never picks up
    dial_id = f"em_never_{time.monotonic_ns()}"
    pubsub = pipeline.subscribe(dial_id)
    # When the click-to-call is pushed (ORIGINATE_TIMEOUT is 3 s here)
    pipeline.push(dial_id=dial_id, user_id=dial_id, caller_number="15105550187")
    events = _call_events(switch_events, dial_id, "CHANNEL_HANGUP", "0")
    # Then side 0 played early media until the originate timeout ended it with NO_ANSWER
    assert ("CHANNEL_PROGRESS_MEDIA", "0") in _steps(events)
    assert events[-1].get("Hangup-Cause") == "NO_ANSWER"
    published = pipeline.events_until(pubsub, hung_up("0"))
    assert [e.get("cause") for e in published if e["type"] == "hangup-event"] == ["NO_ANSWER"]
    # And side 1 was never created (nor anything answered), not even a moment later
    time.sleep(0.5)
    switch_events.command("api status")  # a reply after every event the switch had queued for us
    late = [f for f in switch_events.frames if b"redswitch_side=1" in (f.raw_body or b"")]
    assert all(side != "1" for _, side in _steps(events)) and late == []
    assert not has("answer-event")(published)


def test_barge_eavesdrops_only_once_the_supervisor_answered_through_early_media(
    pipeline: Pipeline, switch_events: RawClient
) -> None:
    # Given a live call
    dial_id = f"em_barge_{time.monotonic_ns()}"
    pubsub = pipeline.call(dial_id)
    # When a supervisor whose carrier plays early media barges in
    pipeline.publish(dial_id, {"type": "barge", "phone_number": "15105550183", "caller_id": "14155550100"})
    events = _call_events(switch_events, dial_id, "CHANNEL_EXECUTE", "2")
    steps = _steps(events)
    # Then the eavesdrop starts only after the supervisor's leg answered
    assert events[-1].get("Application") == "eavesdrop"
    assert steps.index(("CHANNEL_PROGRESS_MEDIA", "2")) < steps.index(("CHANNEL_ANSWER", "2"))
    assert steps.index(("CHANNEL_ANSWER", "2")) < len(steps) - 1
    pipeline.events_until(pubsub, has("answer-event", "2"))
    pipeline.publish(dial_id, {"type": "hangup"})
    pipeline.events_until(pubsub, hung_up("0", "1"))
