"""Several FreeSWITCH nodes: new calls spread over healthy nodes, control follows the call, a node that goes
away loses nothing."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redswitch.cli.launcher import Stack
from redswitch.config import Settings
from redswitch.simulator import Simulator
from tests.payloads import job, next_event
from tests.servers import RedisServer


class Cluster:
    def __init__(self, redis_url: str, count: int) -> None:
        self.sims = {f"fs{n}": Simulator(host="127.0.0.1", port=0).start() for n in range(count)}
        nodes = ",".join(f"{name}=127.0.0.1:{sim.port}" for name, sim in self.sims.items())
        self.settings = Settings(pubsub_redis_url=redis_url, esl_nodes=nodes, originate_timeout=2, node_retry_after=30)
        self.stack = Stack(self.settings, log_dir=tempfile.mkdtemp(prefix="redswitch-nodes-")).start()
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)

    def stop(self) -> None:
        self.stack.stop()
        for sim in self.sims.values():
            sim.stop()
        self.client.close()

    def push(self, prefix: str, count: int) -> list[str]:
        dial_ids = [f"{prefix}{n}" for n in range(count)]
        self.client.rpush(self.settings.jobs_key, *[json.dumps(job(dial_id=d, user_id=d)) for d in dial_ids])
        return dial_ids

    def originated(self, prefix: str) -> dict[str, list[str]]:
        """node -> dial_ids it received an originate for."""
        found: dict[str, list[str]] = {}
        for name, sim in self.sims.items():
            for command in sim.commands():
                if "&bridge(" in command and f"redswitch_dial_id={prefix}" in command:
                    found.setdefault(name, []).append(command.split("redswitch_dial_id=")[1].split(",")[0])
        return found

    def wait(self, predicate: Any, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())


@pytest.fixture
def cluster(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Cluster]:
    running = Cluster(redis_server.url, 3)
    yield running
    running.stop()


def all_dialled(cluster: Cluster, prefix: str, count: int) -> bool:
    return sum(len(v) for v in cluster.originated(prefix).values()) >= count


def test_new_calls_spread_over_the_nodes_each_dialled_once(cluster: Cluster) -> None:
    dial_ids = cluster.push("spread_", 30)
    assert cluster.wait(lambda: all_dialled(cluster, "spread_", 30))
    per_node = cluster.originated("spread_")
    assert sorted(d for ids in per_node.values() for d in ids) == sorted(dial_ids)
    assert set(per_node) == set(cluster.sims) and min(len(ids) for ids in per_node.values()) >= 5
    # and every call's record names the node that has it
    for name, ids in per_node.items():
        assert {cluster.client.hget(f"redswitch:call:{d}", "node") for d in ids} == {name}


def test_control_goes_to_the_node_that_holds_the_call(cluster: Cluster) -> None:
    pubsub = cluster.client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("ctl_node")
    cluster.client.rpush(cluster.settings.jobs_key, json.dumps(job(dial_id="ctl_node", user_id="ctl_node")))
    answers: set[str] = set()
    while len(answers) < 2 and (event := next_event(pubsub, 10)) is not None:
        answers |= {event["side"]} if event["type"] == "answer-event" else set()
    node = cluster.client.hget("redswitch:call:ctl_node", "node")
    cluster.client.publish("ctl_node", json.dumps({"type": "hangup"}))
    assert cluster.wait(lambda: any("uuid_kill" in c for c in cluster.sims[str(node)].commands()))
    others = [sim for name, sim in cluster.sims.items() if name != node]
    assert not any("uuid_kill" in c for sim in others for c in sim.commands())


def test_a_node_shut_down_mid_run_ends_its_calls_and_the_others_take_new_ones(cluster: Cluster) -> None:
    # Given live calls on every node
    cluster.push("live_", 9)
    assert cluster.wait(lambda: all_dialled(cluster, "live_", 9))
    victim = "fs1"
    on_victim = cluster.originated("live_")[victim]
    pubsubs = {}
    for dial_id in on_victim:
        pubsubs[dial_id] = cluster.client.pubsub()  # type: ignore[no-untyped-call]
        pubsubs[dial_id].subscribe(dial_id)
    answered = lambda: all(  # noqa: E731
        cluster.client.llen(f"redswitch.{dial_id}.talkiq_org_id.{dial_id}") == 2 for dial_id in on_victim
    )
    assert cluster.wait(answered)
    # When that node shuts down
    cluster.sims[victim].shutdown()
    # Then each of its calls publishes side 0's hangup (FreeSWITCH's SYSTEM_SHUTDOWN) and the call ends
    for dial_id, pubsub in pubsubs.items():
        causes = {}
        while "0" not in causes and (event := next_event(pubsub, 10)) is not None:
            if event["type"] == "hangup-event":
                causes[event["side"]] = event["cause"]
        assert causes.get("0") == "SYSTEM_SHUTDOWN", (dial_id, causes)
    assert cluster.wait(lambda: cluster.client.scard("redswitch:node-calls:fs1") == 0)
    # And new calls go to the other nodes, none failing
    cluster.push("after_", 12)
    assert cluster.wait(lambda: all_dialled(cluster, "after_", 12))
    per_node = cluster.originated("after_")
    assert victim not in per_node and sum(len(v) for v in per_node.values()) == 12
    assert Counter(d for v in per_node.values() for d in v).most_common(1)[0][1] == 1
