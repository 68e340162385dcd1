"""A Dramatiq Redis broker whose idle workers wake up when a message arrives, instead of polling.

Dramatiq's Redis consumer sleeps with a growing back-off (up to the worker timeout, 1 s by default) when
its queue is empty, so a message sent to an idle worker waits tens to hundreds of milliseconds before it
runs. That is fine for batch work and wrong for call control: a barge or a hangup that waits is felt by the
people on the call. Here every enqueue also pushes a token on the queue's wake list, and an idle consumer
waits on that list with ``BLPOP`` for as long as it would have slept; the token wakes it at once.
Messages, acks, retries and crash recovery are Dramatiq's own; only the idle wait changes.
"""

from __future__ import annotations

from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

#: Tokens kept per wake list; more would only cause spurious wake-ups.
MAX_TOKENS = 64


def wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.wake"


class WakingRedisBroker(RedisBroker):
    """RedisBroker + a wake-up list per queue (see the module docstring)."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        key = wake_key(self.namespace, enqueued.queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, b"1")
        pipe.ltrim(key, -MAX_TOKENS, -1)
        pipe.execute()
        return enqueued

    def wait_for_work(self, queue_name: str, seconds: float) -> None:
        """Block until a message is enqueued on ``queue_name`` or ``seconds`` pass."""
        self.client.blpop([wake_key(self.namespace, queue_name)], timeout=max(seconds, 0.001))


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer with the idle ``time.sleep`` replaced by a wait on the wake list."""

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.outstanding_message_count < self.prefetch:
                    wanted = self.prefetch - self.outstanding_message_count
                    self.message_cache = self.broker.do_fetch(self.queue_name, wanted)
                if not self.message_cache:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    self.broker.wait_for_work(self.queue_name, backoff_ms / 1000)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
