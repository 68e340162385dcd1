from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from redswitch.config import Settings
from redswitch.services.bridge import Bridge
from tests.payloads import job_json, next_event
from tests.servers import RedisServer


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return Settings(pubsub_redis_url=redis_server.url, bridge_heartbeat=0.05, bridge_dead_after=0.3)


@pytest.fixture
def raw_client(redis_server: RedisServer, redis_client: redis.Redis) -> redis.Redis:
    return redis.Redis(host=redis_server.host, port=redis_server.port)  # bytes, as the bridge reads them


def make_bridge(settings: Settings, client: redis.Redis, sent: list[dict[str, str]], name: str = "b1") -> Bridge:
    return Bridge(settings, client, sent.extend, bridge_id=name)


def test_bridge_sends_jobs_in_fifo_order_and_leaves_nothing_behind(settings, raw_client) -> None:
    # Given three jobs pushed the legacy way (RPUSH)
    for n in range(3):
        raw_client.rpush("talkiq-asp.calls", job_json(dial_id=f"d{n}"))
    sent: list[dict[str, str]] = []
    # When the bridge drains the list
    assert make_bridge(settings, raw_client, sent).drain() == 3
    # Then they were sent in push order and no list holds them any more
    assert [job["dial_id"] for job in sent] == ["d0", "d1", "d2"]
    assert raw_client.llen("talkiq-asp.calls") == 0
    assert raw_client.keys("{talkiq-asp.calls}.processing.*") == []


def test_bridge_parks_invalid_job_with_reason_and_tells_its_channel(settings, raw_client) -> None:
    pubsub = raw_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bad1")
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="bad1", callee_number="1;2"))
    sent: list[dict[str, str]] = []
    make_bridge(settings, raw_client, sent).drain()
    assert sent == []
    dead = json.loads(raw_client.lindex("talkiq-asp.calls.dead", 0))
    assert "callee_number" in dead["reason"] and dead["dial_id"] == "bad1" and dead["time"].endswith("Z")
    assert json.loads(dead["payload"])["callee_number"] == "1;2"
    event = next_event(pubsub)
    assert event is not None
    assert event["type"] == "failure" and event["cause"] == "INVALID_JOB" and "callee_number" in event["reason"]


def test_bridge_parks_non_utf8_payload_losslessly(settings, raw_client) -> None:
    raw_client.rpush("talkiq-asp.calls", b"\xff\xfe\x00garbage")
    make_bridge(settings, raw_client, []).drain()
    dead = json.loads(raw_client.lindex("talkiq-asp.calls.dead", 0))
    assert dead["payload_base64"] == "//4AZ2FyYmFnZQ==" and dead["reason"] == "payload is not UTF-8"


def test_bridge_parks_a_duplicate_dial_id(settings, raw_client) -> None:
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="dup"), job_json(dial_id="dup", callee_number="1555"))
    sent: list[dict[str, str]] = []
    make_bridge(settings, raw_client, sent).drain()
    assert len(sent) == 1
    dead = json.loads(raw_client.lindex("talkiq-asp.calls.dead", 0))
    assert dead["reason"].startswith("duplicate dial_id 'dup'")


def test_bridge_adopts_the_jobs_of_a_dead_bridge(settings, raw_client) -> None:
    # Given a bridge that died holding a job it had already marked as accepted
    dead_bridge = make_bridge(settings, raw_client, [], name="dead")
    raw = job_json(dial_id="orphan").encode()
    raw_client.rpush(dead_bridge.processing, raw)
    dead_bridge.client.set("redswitch:dialled:orphan", __import__("hashlib").sha256(raw).hexdigest())
    # When a live bridge heartbeats
    sent: list[dict[str, str]] = []
    make_bridge(settings, raw_client, sent, name="alive").beat()
    # Then it sends the orphan (the actor's claim keeps it from dialling twice) and the dead list is empty
    assert [job["dial_id"] for job in sent] == ["orphan"]
    assert raw_client.llen(dead_bridge.processing) == 0
    assert raw_client.llen("talkiq-asp.calls.dead") == 0


def test_bridge_keeps_a_job_whose_send_failed_and_sends_it_again(settings, raw_client) -> None:
    attempts: list[dict[str, str]] = []

    def flaky_send(jobs: list[dict[str, str]]) -> None:
        attempts.extend(jobs)
        if len(attempts) == 1:
            raise redis.exceptions.ConnectionError("broker went away")

    bridge = Bridge(settings, raw_client, flaky_send, bridge_id="flaky")
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="retry1"))
    with pytest.raises(redis.exceptions.ConnectionError):
        bridge.drain()
    assert raw_client.llen(bridge.processing) == 1  # not lost
    bridge._next_heartbeat = 0
    bridge.beat()
    assert [job["dial_id"] for job in attempts] == ["retry1", "retry1"]
    assert raw_client.llen(bridge.processing) == 0


def test_bridge_run_loop_serves_until_stopped(settings, raw_client) -> None:
    sent: list[dict[str, str]] = []
    stop = threading.Event()
    thread = threading.Thread(target=make_bridge(settings, raw_client, sent).run, args=(stop, 0.1))
    thread.start()
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="loop1"))
    for _ in range(100):
        if sent:
            break
        stop.wait(0.05)
    stop.set()
    thread.join(5)
    assert [job["dial_id"] for job in sent] == ["loop1"]


def test_bridge_takes_jobs_in_batches_keeping_order_and_refusing_a_duplicate_within_one(settings, raw_client) -> None:
    # Given more jobs than one batch holds, one dial_id pushed twice inside the same batch
    payloads = [job_json(dial_id=f"b{n}") for n in range(250)]
    payloads.insert(10, job_json(dial_id="b3", callee_number="14155550000"))
    raw_client.rpush("talkiq-asp.calls", *payloads)
    batches: list[list[dict[str, str]]] = []
    bridge = Bridge(settings, raw_client, batches.append, bridge_id="batcher")
    # When the bridge takes them
    while bridge.take(0.1):
        pass
    # Then they went out in a few batches, in push order, each dial_id once, and the duplicate is parked
    assert 1 < len(batches) <= 4
    assert [job["dial_id"] for batch in batches for job in batch] == [f"b{n}" for n in range(250)]
    dead = json.loads(raw_client.lindex("talkiq-asp.calls.dead", 0))
    assert dead["reason"].startswith("duplicate dial_id 'b3'") and json.loads(dead["payload"])["callee_number"]
    assert raw_client.llen(bridge.processing) == 0 and raw_client.llen("talkiq-asp.calls") == 0


def test_bridge_take_survives_redis_losing_its_script_cache(settings, raw_client) -> None:
    # Given a bridge that has already taken jobs (its take script is cached in Redis), and then SCRIPT FLUSH
    earlier: list[dict[str, str]] = []
    bridge = Bridge(settings, raw_client, earlier.extend, bridge_id="flushed")
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="f0"))
    assert bridge.take(0.1)
    raw_client.script_flush()
    sent: list[dict[str, str]] = []
    bridge.send = sent.extend
    raw_client.rpush("talkiq-asp.calls", *[job_json(dial_id=f"f{n}") for n in range(1, 6)])
    # When it takes again until nothing is left
    while bridge.take(0.1):
        pass
    # Then every job went out once, in order, and none is left behind
    assert [job["dial_id"] for job in sent] == [f"f{n}" for n in range(1, 6)]
    assert raw_client.llen(bridge.processing) == 0 and raw_client.llen("talkiq-asp.calls") == 0


def test_bridge_removes_handled_jobs_before_it_looks_for_its_own_leftovers(settings, raw_client) -> None:
    # Given a bridge that handled a job whose removal rides on its next round trip
    sent: list[dict[str, str]] = []
    bridge = make_bridge(settings, raw_client, sent, name="beater")
    raw_client.rpush("talkiq-asp.calls", job_json(dial_id="once1"))
    assert bridge.take(0.1)
    # When its heartbeat comes first (it re-handles whatever is left in its processing list)
    bridge._next_heartbeat = 0
    bridge.beat()
    # Then the handled job was not taken for a leftover and sent again
    assert [job["dial_id"] for job in sent] == ["once1"]
    assert raw_client.llen(bridge.processing) == 0


def test_broker_batch_enqueue_survives_redis_losing_its_script_cache(redis_server: RedisServer) -> None:
    import dramatiq

    from redswitch.broker.waking import WakingRedisBroker

    broker = WakingRedisBroker(url=redis_server.url)  # type: ignore[no-untyped-call]
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    message: dramatiq.Message[None] = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    broker.enqueue_many([message])
    client.script_flush()
    broker.enqueue_many([message.copy(), message.copy()])
    assert client.llen("dramatiq:q") == 3
    broker.close()


def test_bridge_stops_cleanly_when_redis_is_already_gone() -> None:
    # Given a bridge serving its own Redis, which then goes away
    server = RedisServer().start()
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=2, socket_connect_timeout=2)
    settings = Settings(pubsub_redis_url=server.url, bridge_heartbeat=0.05, bridge_dead_after=0.3)
    sent: list[dict[str, str]] = []
    bridge = Bridge(settings, client, sent.extend, bridge_id="orphan")
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            bridge.run(stop, 0.1)
        except BaseException as exc:  # the test reports whatever escaped
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    deadline = time.monotonic() + 10
    while not client.exists(bridge.keys.bridge_alive("orphan")) and time.monotonic() < deadline:
        time.sleep(0.02)  # until it serves (its first heartbeat)
    assert client.exists(bridge.keys.bridge_alive("orphan"))
    server.stop()
    # When it is told to stop
    stop.set()
    thread.join(30)
    # Then it returned, without an error escaping
    assert not thread.is_alive() and errors == []
