"""Redswitch on a real Redis Cluster (three masters on loopback): detection, the broker rule, call state with
ordered writes and cross-node pub/sub, reconciliation, and the asp-call and control paths over real processes
(the Dramatiq broker on a single redis-server, as the broker rule requires)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from redswitch.admission import Admission
from redswitch.broker import build_broker
from redswitch.config import Settings
from redswitch.errors import ConfigError
from redswitch.launcher import redswitch_command
from redswitch.messages import AspCall
from redswitch.nodes import calls_key
from redswitch.redis_client import is_cluster, redis_from_settings
from redswitch.scheduler import RECONCILED_REASON
from redswitch.simulator import Scenario, Simulator
from redswitch.state import CallState, Keys
from tests import test_legacy as legacy
from tests.cluster import RedisClusterServers
from tests.payloads import SEED_JOB_TEXT, next_event
from tests.pipeline import Pipeline, has, hung_up
from tests.servers import RedisServer
from tests.test_scheduler import drain, place_call, reconcile


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers().start()
    yield servers
    servers.stop()


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
    assert type(CallState(single, on_cluster)) is CallState and not CallState(text, on_cluster).atomic


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
    env = {**os.environ, "PUBSUB_REDIS_URL": cluster.url}
    command = [*redswitch_command("watch", "cl_watch", "--until-hangup", "--timeout", "20")]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as watch:
        hangup = '{"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"}'
        deadline = time.monotonic() + 15
        while not subscribers(cluster, "cl_watch") and time.monotonic() < deadline:
            time.sleep(0.05)
        for payload in ('{"type": "answer-event", "side": "0"}', hangup):
            cluster_client.publish("cl_watch", payload)
        output, _ = watch.communicate(timeout=20)
    assert watch.returncode == 0
    assert output.decode().splitlines() == ['{"type": "answer-event", "side": "0"}', hangup]


# -- call state: the ordered path ----------------------------------------------------------------------------


def test_claim_and_events_on_a_cluster_write_state_and_reach_subscribers_on_other_nodes(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    settings = Settings(pubsub_redis_url=cluster.url)
    state, keys = CallState(cluster_client, settings), Keys(settings)
    dial = "cl_dial"
    active, history = keys.active(dial, "org", "usr"), keys.history("org", "usr")
    # the call's keys really are spread over the nodes (else this test would prove nothing about slots)
    touched = [Keys.call(dial), active, history, Keys.active_calls(), calls_key("fs1"), dial, Keys.lifecycle()]
    assert len({node_of(cluster_client, key) for key in touched}) == 3
    pubsub = subscribe(cluster_client, dial, Keys.lifecycle())
    cluster_client.rpush(history, '{"type": "stale"}')
    record = {"org_id": "org", "user_id": "usr", "job_uuid": "job-1", "state": "dialling"}
    created, stored = state.claim_call(dial, "org", "usr", record)
    assert created and stored == record
    assert state.claim_call(dial, "org", "usr", record) == (False, record)  # the second claim changes nothing
    state.call_sent(dial, "fs1")
    assert cluster_client.smembers(calls_key("fs1")) == {dial} and state.call_record(dial)["state"] == "sent"
    state.call_sent(dial, "fs2")  # only from dialling: a late second reply changes nothing
    assert state.call_record(dial)["node"] == "fs1" and not cluster_client.exists(calls_key("fs2"))
    state.record_events([f"S|{dial}|org|usr|0", f"A|{dial}|org|usr|0", f"A|{dial}|org|usr|1"])
    assert cluster_client.lrange(active, 0, -1) == ["ACTIVE.1", "ACTIVE.0"]  # newest first, as the original
    state.record_events([f"H|{dial}|org|usr|1|NORMAL_CLEARING", f"H|{dial}|org|usr|0|NORMAL_CLEARING"])
    heard = drain(pubsub)
    events = [event for event in heard if isinstance(event, dict)]
    assert events == [
        {"type": "call-start", "dial_id": dial},
        {"type": "answer-event", "side": "0"},
        {"type": "answer-event", "side": "1"},
        {"type": "hangup-event", "side": "1", "cause": "NORMAL_CLEARING"},
        {"type": "hangup-event", "side": "0", "cause": "NORMAL_CLEARING"},
    ]
    assert [item for item in heard if isinstance(item, str)] == [f"start:{dial}", f"end:{dial}"]
    assert [json.loads(item) for item in cluster_client.lrange(history, 0, -1)] == events[::-1]  # fresh at start
    assert 0 < cluster_client.ttl(history) <= 4 * 3600
    assert cluster_client.lrange(active, 0, -1) == [] and not state.is_active(dial)
    assert cluster_client.smembers(calls_key("fs1")) == set()
    assert cluster_client.get(Keys.job("job-1")) == dial
    assert state.call_record(dial)["seen"] == "1"


def test_on_a_cluster_state_is_written_before_the_event_announcing_it(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    # A consumer reads the history and the active list the moment each event arrives, on its own connection
    # (later changes may be there too: the calls below do not wait for it).
    settings = Settings(pubsub_redis_url=cluster.url)
    state, keys = CallState(cluster_client, settings), Keys(settings)
    reader = redis_from_settings(settings)
    seen: list[tuple[dict[str, Any], list[Any], list[Any]]] = []
    pubsub = subscribe(reader, "ord_dial")
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            event = next_event(pubsub, timeout=0.1)
            if event is not None:
                history = reader.lrange(keys.history("org", "ord_user"), 0, -1)
                seen.append((event, history, reader.lrange(keys.active("ord_dial", "org", "ord_user"), 0, -1)))

    consumer = threading.Thread(target=consume)
    consumer.start()
    state.claim_call("ord_dial", "org", "ord_user", {"org_id": "org", "user_id": "ord_user", "job_uuid": "j2"})
    for side in ("0", "1"):
        state.record_events([f"A|ord_dial|org|ord_user|{side}"])
    state.side_hung_up("ord_dial", "org", "ord_user", "1", {"cause": "NORMAL_CLEARING"})
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    consumer.join()
    assert [event["type"] for event, _, _ in seen] == ["call-start", "answer-event", "answer-event", "hangup-event"]
    for event, history, active in seen:
        assert event in [json.loads(item) for item in history]  # already in the history when it was heard
        if event["type"] == "hangup-event":
            assert "ACTIVE.1" not in active


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


def test_relay_ownership_on_a_cluster_is_kept_by_a_live_bridge_and_taken_from_a_dead_one(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    state = CallState(cluster_client, Settings(pubsub_redis_url=cluster.url))
    cluster_client.set(Keys.bridge_alive("b1"), "1")
    assert state.claim_relay("own_dial", "b1") and state.claim_relay("own_dial", "b1")
    assert not state.claim_relay("own_dial", "b2")  # b1 is alive
    cluster_client.delete(Keys.bridge_alive("b1"))
    cluster_client.set(Keys.bridge_alive("b2"), "1")
    assert state.claim_relay("own_dial", "b2") and not state.claim_relay("own_dial", "b1")
    assert cluster_client.get(Keys.relay_owner("own_dial")) == "b2"


def test_admission_on_a_cluster_paces_sessions_and_queues_over_the_org_limit(
    cluster_client: redis.Redis, cluster: RedisClusterServers
) -> None:
    settings = Settings(pubsub_redis_url=cluster.url, switch_cps=2, org_max_calls="org=1")
    admission, state = Admission(cluster_client, settings), CallState(cluster_client, settings)
    first, second = (AspCall("gw", "1", "2", "3", "4", dial, "org", dial) for dial in ("adm1", "adm2"))
    for call in (first, second):
        state.claim_call(call.dial_id, "org", call.dial_id, {"org_id": "org", "job_uuid": call.dial_id})
    pubsub = subscribe(cluster_client, "adm2")
    assert admission.check(first, "fs").verdict == "go"
    queued = admission.check(second, "fs")  # the org's one slot is taken by adm1, which is still active
    assert (queued.verdict, queued.position, queued.announced) == ("queued", 1, True)
    assert admission.check(second, "fs").announced is False  # announced once
    assert [e for e in drain(pubsub) if isinstance(e, dict)] == [
        {"type": "queued", "reason": "org_max_calls", "position": 1}
    ]
    history = [json.loads(item)["type"] for item in cluster_client.lrange(Keys(settings).history("org", "adm2"), 0, -1)]
    assert history == ["call-start"]  # queued is published only: the history keeps the call's events
    state.end_call("adm1")  # the slot frees when adm1 ends; adm2 then waits for the switch's sessions instead
    paced = admission.check(second, "fs")
    assert paced.verdict == "wait" and paced.reason == "switch_cps" and 0 < paced.delay <= 1.3


@pytest.mark.parametrize("order", ["original", "redswitch"])
def test_list_order_and_history_events_on_a_cluster_match_a_single_redis(
    cluster_client: redis.Redis, cluster: RedisClusterServers, order: str
) -> None:
    settings = legacy.settings_for(cluster.url, order)
    dial = f"clplay_{order}"
    played = legacy.play_call(cluster_client, settings, dial)
    keys = Keys(settings)
    assert node_of(cluster_client, keys.active(dial, "org", f"{dial}_u")) != node_of(cluster_client, dial)
    legacy.check_played(played, dial, order)


# -- the pipeline over real processes ---------------------------------------------------------------------------


class ClusterPipeline(Pipeline):
    """The test pipeline with state, jobs and pub/sub on the cluster and the broker on a single Redis."""

    def start(self) -> ClusterPipeline:
        super().start()
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
