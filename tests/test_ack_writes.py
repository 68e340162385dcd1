"""State writes riding on a message's ack: applied with the ack, in one round trip, or at once elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis

from redswitch.ack_writes import ATTRIBUTE, ScriptWrite, write_with_ack
from redswitch.waking_broker import WakingRedisBroker
from tests.servers import RedisServer

SET_IF_MISSING = "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end"


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
    key = f"state:1:{flush_scripts}"
    setattr(proxy, ATTRIBUTE, [ScriptWrite(SET_IF_MISSING, [key], ["sent"])])
    assert client.get(key) is None
    if flush_scripts:
        client.script_flush()
    consumer.ack(proxy)  # type: ignore[attr-defined]
    assert client.get(key) == b"sent"
    # acked: the message is gone from the queue's store
    assert not client.hexists("dramatiq:q.msgs", proxy.options["redis_message_id"])  # type: ignore[attr-defined]


def test_a_nacked_message_still_applies_its_writes(broker: WakingRedisBroker) -> None:
    client = redis.Redis(connection_pool=broker.client.connection_pool)
    consumer, proxy = fetched(broker)
    setattr(proxy, ATTRIBUTE, [ScriptWrite(SET_IF_MISSING, ["state:2"], ["sent"])])
    consumer.nack(proxy)  # type: ignore[attr-defined]
    assert client.get("state:2") == b"sent"


def test_outside_an_actor_the_write_runs_at_once(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    write_with_ack(client, ScriptWrite(SET_IF_MISSING, ["state:3"], ["now"]))
    assert client.get("state:3") == b"now"
