"""Faults over real processes: nothing lost, nothing dialled twice (issue: reliability)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from redswitch.simulator import Outcome, Scenario
from tests.payloads import job
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer

#: Calls end by themselves shortly after answering, so thousands of them do not pile up in the simulator.
SHORT_CALLS = Scenario.default().with_changes(default_outcome=Outcome(ring=0.01, hangup_after=0.3))


def push_many(pipeline: Pipeline, prefix: str, count: int) -> list[str]:
    dial_ids = [f"{prefix}{n}" for n in range(count)]
    payloads = [json.dumps(job(dial_id=d, user_id=d)) for d in dial_ids]
    for start in range(0, count, 500):
        pipeline.client.rpush(pipeline.settings.jobs_key, *payloads[start : start + 500])
    return dial_ids


@pytest.fixture
def fast_failover(own_redis_server: RedisServer) -> Iterator[Pipeline]:
    """Two bridges that declare each other dead after 1 s; brokers that requeue a dead worker's messages fast."""
    running = Pipeline(
        own_redis_server.url,
        SHORT_CALLS,
        bridges=2,
        bridge_heartbeat=0.2,
        bridge_dead_after=1.0,
        broker_heartbeat_timeout=2000,
        broker_maintenance_chance=100_000,
    ).start()
    yield running
    running.stop()


@pytest.mark.sim_only  # thousands of calls that end by themselves (SHORT_CALLS)
def test_kill_9_of_a_bridge_while_2000_jobs_flow_dials_each_exactly_once(fast_failover: Pipeline) -> None:
    pipeline = fast_failover
    dial_ids = push_many(pipeline, "k9b_", 2000)
    # When one of the two bridges is killed in the middle of the flow
    assert pipeline.wait_for(lambda: len(pipeline.originated("k9b_")) >= 300)
    pipeline.kill("bridge0")
    # Then every dial_id is originated, each exactly once, and no list holds a job any more
    assert pipeline.wait_for(lambda: len(set(pipeline.originated("k9b_"))) >= 2000, timeout=120), pipeline.logs()
    time.sleep(1.5)
    counts = Counter(pipeline.originated("k9b_"))
    assert set(counts) == set(dial_ids)
    assert [d for d, n in counts.items() if n > 1] == []
    assert pipeline.leftovers() == {}
    assert pipeline.client.llen(pipeline.settings.effective_dead_key) == 0


@pytest.mark.sim_only  # SHORT_CALLS
def test_kill_9_of_the_worker_mid_calls_redelivers_and_still_dials_once(fast_failover: Pipeline) -> None:
    pipeline = fast_failover
    dial_ids = push_many(pipeline, "k9w_", 400)
    assert pipeline.wait_for(lambda: len(pipeline.originated("k9w_")) >= 50)
    pipeline.kill("worker")
    pipeline.respawn_worker()
    assert pipeline.wait_for(lambda: len(set(pipeline.originated("k9w_"))) >= 400, timeout=120), pipeline.logs()
    time.sleep(1.5)
    counts = Counter(pipeline.originated("k9w_"))
    assert set(counts) == set(dial_ids)
    assert [d for d, n in counts.items() if n > 1] == []
    assert pipeline.leftovers() == {}


def test_redis_restart_is_survived_by_bridge_listener_and_worker(own_redis_server: RedisServer) -> None:
    pipeline = Pipeline(own_redis_server.url).start()
    try:
        pubsub = pipeline.subscribe("before_restart")
        pipeline.push(dial_id="before_restart", user_id="u1")
        pipeline.events_until(pubsub, has("answer-event", "1"))
        # When Redis goes away and comes back (empty: it keeps nothing on disk)
        own_redis_server.stop()
        time.sleep(1.0)
        own_redis_server.start()
        # Then, without restarting anything, a job pushed afterwards is served end to end
        assert pipeline.wait_for(lambda: pipeline.client.ping(), timeout=10)
        # (dramatiq restarts its consumers after dramatiq_restart_delay, 3 s: the wait below covers it)
        pubsub = pipeline.subscribe("after_restart")
        pipeline.push(dial_id="after_restart", user_id="u2")
        events = pipeline.events_until(pubsub, has("answer-event", "1"), timeout=30)
        assert events[0] == {"type": "call-start", "dial_id": "after_restart"}
        assert pipeline.stack is not None and pipeline.stack.alive()
    finally:
        pipeline.stop()


def subscriptions(pipeline: Pipeline) -> int:
    """Event subscriptions the switch has received (one per listener connection)."""
    return sum(1 for command in pipeline.switch.commands() if command.startswith("event plain"))


def test_dropped_esl_connections_are_reestablished_by_listener_and_actors(redis_server: RedisServer) -> None:
    pipeline = Pipeline(redis_server.url).start()
    try:
        pubsub = pipeline.call("drop_live")
        uuid0 = pipeline.channel_of_side("drop_live", "0")
        # When the switch drops every ESL connection mid-call (a real switch: its proxy cuts them)
        subscribed_before = subscriptions(pipeline)
        pipeline.switch.drop_all_connections()
        assert pipeline.wait_for(lambda: subscriptions(pipeline) > subscribed_before, timeout=10)  # it reconnected
        # Then a hangup afterwards still publishes its events
        pipeline.switch.hangup(uuid0, "NORMAL_CLEARING")
        events = pipeline.events_until(pubsub, hung_up("0", "1"))
        assert {e["cause"] for e in events if e["type"] == "hangup-event"} == {"NORMAL_CLEARING"}
        # And the workers' dropped connections are replaced: the next call goes through
        pipeline.switch.drop_all_connections()
        pubsub = pipeline.subscribe("drop_next")
        pipeline.push(dial_id="drop_next", user_id="drop_next")
        pipeline.events_until(pubsub, has("answer-event", "1"), timeout=30)
        assert pipeline.originated("drop_next") == ["drop_next"]
    finally:
        pipeline.stop()


@pytest.mark.sim_only  # a switch slow to reply (set_reply_delay)
def test_slow_switch_never_holds_a_worker_longer_than_the_esl_timeout(redis_server: RedisServer) -> None:
    pipeline = Pipeline(redis_server.url, esl_timeout=0.5).start()
    try:
        pubsub = pipeline.call("slow_warmup")
        # When FreeSWITCH takes 2 s to answer every command
        pipeline.simulator.set_reply_delay(2.0)
        pubsub = pipeline.subscribe("slow_call")
        pipeline.push(dial_id="slow_call", user_id="slow_call")
        # Then the worker gave up on each try after ESL_TIMEOUT and retried (its log says so) ...
        gave_up = ("no reply from FreeSWITCH within 0.5s", "handshake timed out after 0.5s")
        assert pipeline.wait_for(lambda: any(text in pipeline.full_log("worker") for text in gave_up), timeout=15)
        log = pipeline.full_log("worker")
        assert "no reply from FreeSWITCH within 0.5s" in log or "handshake timed out after 0.5s" in log, log[-2000:]
        # ... and once the switch is fast again the call is placed exactly once
        pipeline.simulator.set_reply_delay(0)
        events = pipeline.events_until(pubsub, has("answer-event", "1"), timeout=40)
        assert events[0]["type"] == "call-start"
        time.sleep(1.0)
        assert pipeline.originated("slow_call") == ["slow_call"]
        assert len(pipeline.simulator.channels()) >= 2
        live = [
            c for c in pipeline.simulator.channels().values() if c.variables.get("redswitch_dial_id") == "slow_call"
        ]
        assert sorted(c.variables["redswitch_side"] for c in live) == ["0", "1"]
    finally:
        pipeline.stop()
