"""The waking consumer over a real Redis: an idle consumer is handed a message in the round trip that waited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from redswitch.broker.waking import WakingRedisBroker
from tests.servers import RedisServer


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[WakingRedisBroker]:
    broker = WakingRedisBroker(url=redis_server.url)  # type: ignore[no-untyped-call]
    yield broker
    broker.close()


def idle_consumer(broker: WakingRedisBroker, queue: str, misses: int) -> Any:
    """A consumer that found the queue empty: its next call waits (its back-off grows with ``misses``)."""
    broker.declare_queue(queue)
    consumer: Any = broker.consume(queue, prefetch=2, timeout=5000)
    assert next(consumer) is None and next(consumer) is None
    consumer.misses = misses
    return consumer


def test_a_waiting_consumer_returns_the_message_enqueued_while_it_waited(broker: WakingRedisBroker) -> None:
    # Given an idle consumer about to wait up to its full timeout (5 s) for a token
    queue = f"wake{time.monotonic_ns()}"
    consumer = idle_consumer(broker, queue, misses=10)
    sent: dramatiq.Message[None] = dramatiq.Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={})
    # When a message is enqueued while it waits
    threading.Timer(0.2, broker.enqueue, args=(sent,)).start()
    started = time.monotonic()
    got = next(consumer)
    # Then that same call returns the message (no empty round before a fetch), long before the wait would end
    assert got is not None and got.message_id == sent.message_id
    assert time.monotonic() - started < 4


def test_a_wait_that_no_message_ends_gives_the_consumer_thread_control_back(broker: WakingRedisBroker) -> None:
    # Given an idle consumer whose wait is short, and no message coming
    consumer = idle_consumer(broker, f"wake{time.monotonic_ns()}", misses=0)
    # Then its next call returns nothing, so that Dramatiq's consumer thread can handle acks and stop requests
    assert next(consumer) is None
