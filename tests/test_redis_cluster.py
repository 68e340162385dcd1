"""Redswitch on a real Redis Cluster (three masters on loopback): detection, the broker rule, call state with
ordered writes and cross-node pub/sub, reconciliation, and the asp-call and control paths over real processes
(the Dramatiq broker on a single redis-server, as the broker rule requires)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from redswitch.broker import build_broker
from redswitch.cli.launcher import redswitch_command
from redswitch.config import Settings
from redswitch.errors import ConfigError
from redswitch.services.scheduler import RECONCILED_REASON
from redswitch.simulator import Scenario, Simulator
from redswitch.store import Keys, open_store
from redswitch.store.connection import is_cluster, redis_from_settings
from tests.cluster import RedisClusterServers
from tests.payloads import SEED_JOB_TEXT, next_event
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer
from tests.test_scheduler import drain, place_call, reconcile


@pytest.fixture(scope="session")
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    return redis_cluster


@pytest.fixture
def cluster_client(cluster: RedisClusterServers) -> Iterator[redis.Redis]:
    cluster.flush()
    client = redis_from_settings(Settings(pubsub_redis_url=cluster.url))
    yield client
    client.close()


def node_of(client: Any, key: str) -> str:
    return str(client.get_node_from_key(key).name)


def subscribers(cluster: RedisClusterServers, channel: str) -> int:
    """Subscribers of ``channel`` on every node (NUMSUB counts only the node asked)."""
    total = 0
    for node in cluster.nodes:
        plain = node.client()
        total += int(plain.pubsub_numsub(channel)[0][1])
        plain.close()
    return total


def subscribe(client: Any, *channels: str) -> Any:
    pubsub = client.pubsub()
    pubsub.subscribe(*channels)
    return pubsub


# -- detection and the broker rule ----------------------------------------------------------------------------


def test_a_cluster_node_url_gets_cluster_clients_and_a_single_redis_keeps_its_client(
    cluster: RedisClusterServers, redis_server: RedisServer
) -> None:
    assert is_cluster(cluster.url) and not is_cluster(redis_server.url)
    on_cluster = Settings(pubsub_redis_url=cluster.url)
    text, raw = redis_from_settings(on_cluster), redis_from_settings(on_cluster, decode=False)
    assert isinstance(text, RedisCluster) and isinstance(raw, RedisCluster)
    text.set("redswitch:probe", "é")
    assert text.get("redswitch:probe") == "é" and raw.get("redswitch:probe") == "é".encode()
    single = redis_from_settings(Settings(pubsub_redis_url=redis_server.url))
    assert type(single) is redis.Redis
    assert open_store(single, on_cluster).atomic and not open_store(text, on_cluster).atomic


def test_the_broker_refuses_a_cluster_naming_the_variables(cluster: RedisClusterServers) -> None:
    with pytest.raises(ConfigError, match="PUBSUB_REDIS_URL is a Redis Cluster and BROKER_URL is not set"):
        build_broker(Settings(pubsub_redis_url=cluster.url))
    with pytest.raises(ConfigError, match="BROKER_URL points at a Redis Cluster"):
        build_broker(Settings(pubsub_redis_url="redis://127.0.0.1:1", broker_url=cluster.url))


def test_the_bridge_exits_at_start_when_its_broker_would_run_on_the_cluster(cluster: RedisClusterServers) -> None:
    env = {**os.environ, "PUBSUB_REDIS_URL": cluster.url}
    env.pop("BROKER_URL", None)
    done = subprocess.run(redswitch_command("bridge"), env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"BROKER_URL" in done.stderr + done.stdout


def test_watch_on_a_cluster_prints_a_calls_events_until_its_hangup(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    """From the call's event stream (written by the cluster store), from its first event: no subscription to wait
    for, nothing published before the watcher started is missed."""
    from redswitch.store import Batch, ChannelChange, events

    env = {**os.environ, "PUBSUB_REDIS_URL": cluster.url}
    command = [*redswitch_command("watch", "cl_watch", "--from-start", "--until-hangup", "--timeout", "20")]
    store = open_store(cluster_client, Settings(pubsub_redis_url=cluster.url))
    record = {"org_id": "org", "user_id": "cl_watch", "job_uuid": "job-cl_watch", "state": "sent"}
    store.claim("cl_watch", "org", "cl_watch", record)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as watch:
        answer, hangup = events.answer("0"), events.hangup("0", "NORMAL_CLEARING")
        for number, (kind, event) in enumerate((("answered", answer), ("hung_up", hangup)), start=1):
            change = ChannelChange(kind, "cl_watch", "org", "cl_watch", "0", "fs1", events.encode(event))
            store.apply([change], Batch("l", number))
        output, _ = watch.communicate(timeout=20)
    assert watch.returncode == 0
    printed = [json.loads(line) for line in output.decode().splitlines()]
    assert printed == [events.call_start("cl_watch"), answer, hangup]


def test_watch_on_a_cluster_without_the_event_log_follows_the_channel(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    env = {**os.environ, "PUBSUB_REDIS_URL": cluster.url, "EVENT_STREAMS": "false"}
    command = [*redswitch_command("watch", "cl_watch_ch", "--until-hangup", "--timeout", "20")]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as watch:
        hangup = '{"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}'
        deadline = time.monotonic() + 15
        while not subscribers(cluster, "cl_watch_ch") and time.monotonic() < deadline:
            time.sleep(0.05)
        for payload in ('{"type": "answer-event", "side": "0"}', hangup):
            cluster_client.publish("cl_watch_ch", payload)
        output, _ = watch.communicate(timeout=20)
    assert watch.returncode == 0
    assert output.decode().splitlines() == ['{"type": "answer-event", "side": "0"}', hangup]


# -- call state on a cluster (the store's contract for both backends is in store/test_store.py) ------------------------


def test_reconciliation_on_a_cluster_publishes_lost_hangups_and_ends_the_call(
    cluster_client: redis.Redis, cluster: RedisClusterServers, simulator: Simulator
) -> None:
    settings = Settings(pubsub_redis_url=cluster.url, esl_port=simulator.port, reconcile_grace=0.0)
    place_call(cluster_client, settings, "cl_lost")
    pubsub = subscribe(cluster_client, "cl_lost", Keys.lifecycle())
    report = reconcile(settings, cluster_client)
    heard = drain(pubsub)
    expected = {"cause": "NORMAL_UNSPECIFIED", "reason": RECONCILED_REASON}
    assert [e for e in heard if isinstance(e, dict)] == [
        {"type": "hangup-event", "side": "1", **expected},
        {"type": "hangup-event", "side": "0", **expected},
    ]
    assert "end:cl_lost" in heard and report.ended == ["cl_lost"]
    assert not cluster_client.sismember(Keys.active_calls(), "cl_lost")
    assert cluster_client.lrange(Keys(settings).active("cl_lost", "org", "cl_lost"), 0, -1) == []


# -- the pipeline over real processes ---------------------------------------------------------------------------


class ClusterPipeline(Pipeline):
    """The test pipeline with state, jobs and pub/sub on the cluster and the broker on a single Redis."""

    def start(self) -> ClusterPipeline:
        super().start()
        self.client.close()  # the single-node client the base class made: this one speaks to the whole cluster
        self.client = RedisCluster.from_url(self.redis_url, decode_responses=True)  # type: ignore[assignment]
        return self

    def enqueue(self, actor_name: str, *args: Any, queue: str = "redswitch-control") -> None:
        raise NotImplementedError("not used on the cluster")


@pytest.fixture(scope="module")
def pipeline(cluster: RedisClusterServers, redis_server: RedisServer) -> Iterator[ClusterPipeline]:
    scenario = Scenario.default().with_changes(gateways=("talk_call_provider",))
    running = ClusterPipeline(cluster.url, scenario, bridges=2, broker_url=redis_server.url).start()
    yield running
    running.stop()


def test_seed_job_on_the_cluster_becomes_a_call_with_events_active_list_and_history(pipeline: Pipeline) -> None:
    history_key = "redswitch_history.talkiq_org_id.talkiq_user_id"
    pipeline.client.rpush(history_key, '{"type": "stale"}')
    pubsub = pipeline.subscribe("talkiq_dial_id")
    pipeline.client.lpush("talkiq-asp.calls", SEED_JOB_TEXT)
    events = pipeline.events_until(pubsub, lambda ev: has("answer-event", "0")(ev) and has("answer-event", "1")(ev))
    assert events[0] == {"type": "call-start", "dial_id": "talkiq_dial_id"}
    active = "redswitch.talkiq_dial_id.talkiq_org_id.talkiq_user_id"
    assert pipeline.client.lrange(active, 0, -1) == ["ACTIVE.1", "ACTIVE.0"]
    assert pipeline.client.lindex(active, 0) == "ACTIVE.1"
    assert [json.loads(item) for item in pipeline.client.lrange(history_key, 0, -1)] == events[::-1]
    assert pipeline.leftovers() == {}


def ended(pipeline: Pipeline, dial_id: str) -> bool:
    return not pipeline.client.sismember(Keys.active_calls(), dial_id)


def test_control_messages_on_the_cluster_reach_the_call_and_end_it(pipeline: Pipeline) -> None:
    # several calls at once: the relays subscribe to each and unsubscribe as each ends
    dial_ids = [f"clctl_{index}_{uuid.uuid4().hex[:6]}" for index in range(3)]
    pubsubs = [pipeline.call(dial_id) for dial_id in dial_ids]
    for dial_id, pubsub in zip(dial_ids, pubsubs, strict=True):
        pipeline.publish(dial_id, {"type": "hangup"})
        events = pipeline.events_until(pubsub, lambda ev: has("ack")(ev) and hung_up("0", "1")(ev))
        assert [e for e in events if e["type"] == "ack"] == [{"type": "ack", "event": "hangup"}]  # executed once
        assert pipeline.wait_for(partial(ended, pipeline, dial_id), 10)
    pipeline.publish(dial_ids[0], {"type": "hangup"})  # the call is over: nobody relays it any more
    heard = [next_event(pubsubs[0], timeout=1.0), next_event(pubsubs[0], timeout=1.0)]
    assert heard == [{"type": "hangup"}, None]  # our own message, and no ack or error after it


def test_a_bad_job_on_the_cluster_is_parked_and_its_channel_told(pipeline: Pipeline) -> None:
    pubsub = pipeline.subscribe("clbad")
    pipeline.client.rpush("talkiq-asp.calls", json.dumps({"type": "asp-call", "dial_id": "clbad"}))
    events = pipeline.events_until(pubsub, has("failure"))
    assert events[0]["cause"] == "INVALID_JOB"
    assert pipeline.wait_for(lambda: pipeline.client.llen("talkiq-asp.calls.dead") == 1, 10)
    assert json.loads(pipeline.client.lindex("talkiq-asp.calls.dead", 0) or "{}")["dial_id"] == "clbad"
