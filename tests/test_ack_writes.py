"""State writes riding on a message's ack: applied with the ack, in one round trip, or at once elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis

from redswitch.broker.ack_writes import ATTRIBUTE, write_with_ack
from redswitch.broker.waking import WakingRedisBroker
from redswitch.config import Settings
from redswitch.store import CallStore, StoreWrite, open_store
from tests.servers import RedisServer


def sent_write(client: redis.Redis, dial_id: str) -> tuple[CallStore, StoreWrite]:
    """A call being dialled, and the store's write recording that FreeSWITCH took it (what the actor defers)."""
    store = open_store(client, Settings())
    store.claim(dial_id, "org", "user", {"org_id": "org", "user_id": "user", "job_uuid": dial_id, "state": "dialling"})
    return store, store.sent(dial_id, "fs1")


def state_of(store: CallStore, dial_id: str) -> str:
    return store.call_record(dial_id)["state"]


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[WakingRedisBroker]:
    broker = WakingRedisBroker(url=redis_server.url)  # type: ignore[no-untyped-call]
    broker.carries_state_writes = True
    broker.declare_queue("q")
    yield broker
    broker.close()


def fetched(broker: WakingRedisBroker) -> tuple[object, object]:
    message: dramatiq.Message[None] = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    broker.enqueue(message)
    consumer = broker.consume("q", prefetch=1, timeout=100)
    proxy = next(m for m in consumer if m is not None)
    return consumer, proxy


@pytest.mark.parametrize("flush_scripts", [False, True], ids=["cached", "script-cache-lost"])
def test_a_write_rides_on_the_ack_and_both_land(broker: WakingRedisBroker, flush_scripts: bool) -> None:
    client = redis.Redis(connection_pool=broker.client.connection_pool)
    consumer, proxy = fetched(broker)
    store, write = sent_write(client, f"ack-{flush_scripts}")
    setattr(proxy, ATTRIBUTE, [write])
    assert state_of(store, f"ack-{flush_scripts}") == "dialling"
    if flush_scripts:
        client.script_flush()
    consumer.ack(proxy)  # type: ignore[attr-defined]
    assert state_of(store, f"ack-{flush_scripts}") == "sent"
    # acked: the message is gone from the queue's store
    assert not client.hexists("dramatiq:q.msgs", proxy.options["redis_message_id"])  # type: ignore[attr-defined]


def test_a_nacked_message_still_applies_its_writes(broker: WakingRedisBroker) -> None:
    client = redis.Redis(connection_pool=broker.client.connection_pool)
    consumer, proxy = fetched(broker)
    store, write = sent_write(client, "nacked")
    setattr(proxy, ATTRIBUTE, [write])
    consumer.nack(proxy)  # type: ignore[attr-defined]
    assert state_of(store, "nacked") == "sent"


def test_outside_an_actor_the_write_runs_at_once(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store, write = sent_write(client, "outside")
    write_with_ack(client, write)
    assert state_of(store, "outside") == "sent"
