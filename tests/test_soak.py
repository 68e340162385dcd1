"""Soak: steady load through every process, then nothing left behind (the long run is `-m slow`)."""

from __future__ import annotations

import pytest

from redswitch.simulator import Outcome, Scenario
from tests.pipeline import Pipeline
from tests.servers import RedisServer
from tests.soak import run_soak

#: Calls that nobody hangs up end by themselves after 2 s, as people do.
SCENARIO = Scenario.default().with_changes(default_outcome=Outcome(ring=0.05, hangup_after=2.0))


def leftovers(pipeline: Pipeline) -> dict[str, object]:
    client = pipeline.client
    found: dict[str, object] = {}
    active_lists = [k for k in client.scan_iter("redswitch.*") if client.type(k) == "list"]
    if active_lists:
        found["active lists"] = active_lists[:5]
    if client.scard("redswitch:active"):
        found["active set"] = client.smembers("redswitch:active")
    if pipeline.leftovers():
        found["job lists"] = pipeline.leftovers()
    channels = [c for c in client.pubsub_channels() if c != "redswitch:calls"]
    if channels:
        found["subscribed channels"] = channels[:5]
    return found


def soak(redis_url: str, rate: float, seconds: float) -> None:
    pipeline = Pipeline(redis_url, SCENARIO, bridges=2).start()
    try:
        report = run_soak(pipeline, rate, seconds)
        print("\n".join(report.lines()))
        # Afterwards every call ends (the far ends hang up within a few seconds) and nothing is left behind
        assert pipeline.wait_for(lambda: not leftovers(pipeline), timeout=30), leftovers(pipeline)
        assert pipeline.stack is not None and pipeline.stack.alive()
        for name, start in report.memory_start.items():
            growth = report.memory_end[name] - start
            assert growth < max(start // 2, 30 * 1024), f"{name} grew by {growth} KiB"
    finally:
        pipeline.stop()


def test_short_soak_leaves_nothing_behind(own_redis_server: RedisServer) -> None:
    soak(own_redis_server.url, rate=10, seconds=8)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_20_calls_per_second_for_2_minutes(own_redis_server: RedisServer) -> None:
    soak(own_redis_server.url, rate=20, seconds=120)
