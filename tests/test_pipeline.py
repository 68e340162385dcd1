"""asp-call end to end, over real processes (the issue's "done when")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from redswitch.simulator import Scenario
from tests.payloads import INJECTIONS, JOB_FIELDS, SEED_JOB_TEXT, job
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer

SIP_CODES = {"USER_BUSY": "486", "UNALLOCATED_NUMBER": "404", "NORMAL_TEMPORARY_FAILURE": "503"}


@pytest.fixture(scope="module")
def pipeline(redis_server: RedisServer) -> Iterator[Pipeline]:
    scenario = Scenario.default().with_changes(gateways=("talk_call_provider",))
    running = Pipeline(redis_server.url, scenario).start()
    yield running
    running.stop()


def test_seed_job_pushed_the_legacy_way_becomes_a_bridged_call(pipeline: Pipeline) -> None:
    # Given someone subscribed to the seed example's channel, and an old history for its user
    history_key = "redswitch_history.talkiq_org_id.talkiq_user_id"
    pipeline.client.rpush(history_key, '{"type": "stale"}')
    pubsub = pipeline.subscribe("talkiq_dial_id")
    # When the seed's example job is LPUSHed as printed in the original README
    pipeline.client.lpush("talkiq-asp.calls", SEED_JOB_TEXT)
    events = pipeline.events_until(pubsub, lambda ev: has("answer-event", "0")(ev) and has("answer-event", "1")(ev))
    # Then call-start came first, then both answers
    assert events[0] == {"type": "call-start", "dial_id": "talkiq_dial_id"}
    assert {"type": "answer-event", "side": "0"} in events and {"type": "answer-event", "side": "1"} in events
    # And the active list holds both sides, expiring within 24 h
    active = "redswitch.talkiq_dial_id.talkiq_org_id.talkiq_user_id"
    assert pipeline.client.lrange(active, 0, -1) == ["ACTIVE.1", "ACTIVE.0"]  # newest first, as the original
    assert 0 < pipeline.client.ttl(active) <= 24 * 3600
    # And the history was cleared at call start and holds exactly the events published (newest first), within 4 h
    assert [json.loads(item) for item in pipeline.client.lrange(history_key, 0, -1)] == events[::-1]
    assert 0 < pipeline.client.ttl(history_key) <= 4 * 3600
    # And FreeSWITCH got one originate: side 0 through the gateway, bridged to side 1
    originates = [c for c in pipeline.switch.commands() if "talkiq_dial_id" in c]
    assert len(originates) == 1
    assert "sofia/gateway/talk_call_provider/15105625882 &bridge(" in originates[0]
    # And the worker recorded the hand-over (written with the message's ack): the node holds the call
    record: dict[str, str] = pipeline.client.hgetall("redswitch:call:talkiq_dial_id")  # type: ignore[assignment]
    assert record["state"] == "sent" and record["node"]
    assert pipeline.client.sismember("redswitch:node-calls:" + record["node"], "talkiq_dial_id")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"callee_number": "14155550486"}, {"0": "USER_BUSY", "1": "USER_BUSY"}),
        # FreeSWITCH ends side 0 NORMAL_CLEARING here unless continue_on_fail=false (switch_channel_handle_cause:
        # "no answer is *always* a reason to continue"); Redswitch sets it, so the user's side says NO_ANSWER too
        ({"callee_number": "14155550408"}, {"0": "NO_ANSWER", "1": "NO_ANSWER"}),
        ({"callee_number": "14155550404"}, {"0": "UNALLOCATED_NUMBER", "1": "UNALLOCATED_NUMBER"}),
        ({"callee_number": "14155550503"}, {"0": "NORMAL_TEMPORARY_FAILURE", "1": "NORMAL_TEMPORARY_FAILURE"}),
        ({"caller_number": "15105550486"}, {"0": "USER_BUSY"}),
        ({"caller_number": "15105550408"}, {"0": "NO_ANSWER"}),
        ({"caller_number": "15105550404"}, {"0": "UNALLOCATED_NUMBER"}),
        ({"caller_number": "15105550503"}, {"0": "NORMAL_TEMPORARY_FAILURE"}),
    ],
    ids=[
        "callee-busy",
        "callee-noanswer",
        "callee-unallocated",
        "callee-fails",
        "caller-busy",
        "caller-noanswer",
        "caller-unallocated",
        "caller-fails",
    ],
)
def test_failed_calls_publish_hangup_events_with_freeswitch_causes(pipeline: Pipeline, overrides, expected) -> None:
    dial_id = f"fail_{len(overrides)}_{time.monotonic_ns()}"
    pubsub = pipeline.subscribe(dial_id)
    pipeline.push(dial_id=dial_id, user_id=dial_id, **overrides)
    events = pipeline.events_until(pubsub, hung_up(*expected))
    causes = {e["side"]: e["cause"] for e in events if e["type"] == "hangup-event"}
    assert causes == expected
    refused = next(e for e in events if e["type"] == "hangup-event" and e["side"] == max(expected))
    if expected[max(expected)] in SIP_CODES:  # the refusing side says what the carrier answered
        assert refused["sip_code"] == SIP_CODES[expected[max(expected)]]
        assert refused["retryable"] is (expected[max(expected)] == "NORMAL_TEMPORARY_FAILURE")
    if "1" not in expected:  # side 0 never answered: side 1 was never dialled
        assert not has("answer-event")(events)
    assert pipeline.client.llen(f"redswitch.{dial_id}.talkiq_org_id.{dial_id}") == 0


def test_call_freeswitch_never_attempted_ends_in_failure(pipeline: Pipeline) -> None:
    dial_id = f"nogw_{time.monotonic_ns()}"
    pubsub = pipeline.subscribe(dial_id)
    pipeline.push(dial_id=dial_id, call_provider="unknown_gateway")
    events = pipeline.events_until(pubsub, has("failure"))
    assert events[-1]["cause"] == "INVALID_GATEWAY"


def test_bad_jobs_are_parked_with_a_reason_and_never_reach_freeswitch(pipeline: Pipeline) -> None:
    # Given not-JSON, invalid, injection-shaped and duplicate jobs
    before = len(pipeline.switch.commands())
    bad = ["not json at all", json.dumps(job(dial_id="bad_type", org_id=7))]
    for n, (field, fragment) in enumerate((f, x) for f in JOB_FIELDS for x in INJECTIONS[:8]):
        value = job()[field][:4] + fragment + "99"
        bad.append(json.dumps(job(**{"dial_id": f"inj_{n}", field: value})))
    dup_id = f"dup_{time.monotonic_ns()}"
    pubsub = pipeline.subscribe(dup_id)
    pipeline.push(dial_id=dup_id)
    pipeline.events_until(pubsub, has("answer-event", "1"))
    bad.append(json.dumps(job(dial_id=dup_id)))
    dead_before = pipeline.client.llen("talkiq-asp.calls.dead")
    # When they are pushed
    pipeline.client.rpush("talkiq-asp.calls", *bad)
    deadline = time.monotonic() + 10
    while pipeline.client.llen("talkiq-asp.calls.dead") < dead_before + len(bad) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Then every one is parked with a reason, and FreeSWITCH saw no command for any of them
    parked = [json.loads(r) for r in pipeline.client.lrange("talkiq-asp.calls.dead", dead_before, -1)]
    assert len(parked) == len(bad)
    assert all(p["reason"] and p["time"] for p in parked)
    assert parked[-1]["reason"].startswith("duplicate dial_id")
    time.sleep(0.3)
    new_commands = pipeline.switch.commands()[before:]
    assert [c for c in new_commands if "originate" in c and dup_id not in c] == []


@pytest.mark.sim_only  # 500 calls up at once, unpaced: 2,000 sessions, beyond a small real test switch
def test_five_hundred_jobs_pushed_at_once_become_calls_each_exactly_once(pipeline: Pipeline) -> None:
    prefix = f"bulk{time.monotonic_ns()}_"
    jobs = [json.dumps(job(dial_id=f"{prefix}{n}", user_id=f"u{n}")) for n in range(500)]
    pipeline.client.rpush("talkiq-asp.calls", *jobs)
    deadline = time.monotonic() + 90
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = [c for c in pipeline.switch.commands() if prefix in c and "originate" in c]
        if len(seen) >= 500:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    seen = [c for c in pipeline.switch.commands() if prefix in c and "originate" in c]
    dialled = [c.split("redswitch_dial_id=")[1].split(",")[0] for c in seen]
    assert sorted(dialled) == sorted(f"{prefix}{n}" for n in range(500))  # every job, none twice
