"""A Dramatiq Redis broker whose idle workers wake up when a message arrives, instead of polling.

Dramatiq's Redis consumer sleeps with a growing back-off (up to the worker timeout, 1 s by default) when
its queue is empty, so a message sent to an idle worker waits tens to hundreds of milliseconds before it
runs. That is fine for batch work and wrong for call control: a barge or a hangup that waits is felt by the
people on the call. Here every enqueue also pushes a token on the queue's wake list, and an idle consumer
waits on that list with ``BLPOP`` for as long as it would have slept; the token wakes it at once.

The same knowledge saves round trips: a consumer whose fetch emptied the queue waits for a token rather than
fetching again at once, and fetches in the round trip that waited; each fetch drops the tokens of what it
takes; a consumer whose prefetch is full waits for the ack that frees room; and an ack may carry the actor's
last state write (:mod:`redswitch.broker.ack_writes`).
Messages, their storage, retries and crash recovery are Dramatiq's own, through its dispatch script.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from redswitch.broker.ack_writes import pending_writes
from redswitch.store import evalsha as scripts

if TYPE_CHECKING:  # the broker is set up before prometheus_client is imported (redswitch.broker)
    from redswitch.store import StoreWrite

#: Tokens kept per wake list; more would only cause spurious wake-ups.
MAX_TOKENS = 64
#: Milliseconds of the first idle wait on the wake list, doubling after each empty fetch up to the worker
#: timeout. A token ends the wait at once; the timeout only matters for messages enqueued without a token
#: (requeued by Dramatiq's maintenance, or sent by a plain RedisBroker).
WAIT_FACTOR = 20
#: Longest wait of a consumer whose prefetch is full; an ack or nack ends the wait at once.
FULL_PREFETCH_PAUSE = 0.05


def wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.wake"


class WakingRedisBroker(RedisBroker):
    """RedisBroker + a wake-up list per queue (see the module docstring)."""

    #: True when this broker's Redis also holds the call state: an ack may carry state writes
    #: (:mod:`redswitch.broker.ack_writes`).
    carries_state_writes = False

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if delay is not None:  # delayed messages (retries) take Dramatiq's own path, then wake their queue
            enqueued = super().enqueue(message, delay=delay)
            self._wake(self.client, {enqueued.queue_name})
            return enqueued
        return self.enqueue_many([message])[0]

    def enqueue_many(self, messages: list[Message[Any]]) -> list[Message[Any]]:
        """Enqueue ``messages`` (no delay) and wake their consumers in one round trip.

        The same dispatch script and message encoding as ``RedisBroker.enqueue``, issued on a pipeline; the
        middleware hooks run for each message as they would one by one. The script goes by its SHA alone:
        redis-py would first ask ``SCRIPT EXISTS`` (a round trip per batch) for a script that is almost
        always loaded; the messages refused with ``NOSCRIPT`` (they did not run) are sent once more after a load.
        """
        enqueued = []
        for original in messages:
            message = original.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            enqueued.append(message)
        for message in self._dispatch_all(enqueued):  # Redis did not know the script: these did not run
            scripts.run(self.client, self._dispatch_script, [self.namespace], self._enqueue_args(message))
        for message in enqueued:
            self.emit_after("enqueue", message, None)
        return enqueued

    @property
    def _dispatch_script(self) -> str:
        """Dramatiq's dispatch.lua (redis-py keeps the text it was given: here, bytes)."""
        script = self.scripts["dispatch"].script
        return script.decode() if isinstance(script, bytes) else str(script)

    def _dispatch_all(self, messages: list[Message[Any]]) -> list[Message[Any]]:
        """Dispatch every message and wake its queue; return those Redis refused for not knowing the script."""
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            scripts.stage(pipe, self._dispatch_script, [self.namespace], self._enqueue_args(message))
        self._wake(pipe, {message.queue_name for message in messages})
        replies = scripts.checked(pipe.execute(raise_on_error=False))
        return [message for message, reply in zip(messages, replies, strict=False) if scripts.missing(reply)]

    def _enqueue_args(self, message: Message[Any]) -> list[Any]:
        return self._dispatch_args("enqueue", message.queue_name, message.options["redis_message_id"], message.encode())

    def _wake(self, client: Any, queue_names: set[str]) -> None:
        pipe = client if client is not self.client else self.client.pipeline(transaction=False)
        for queue_name in queue_names:
            key = wake_key(self.namespace, queue_name)
            pipe.rpush(key, b"1")
            pipe.ltrim(key, -MAX_TOKENS, -1)
        if pipe is not client:
            pipe.execute()

    def ack_with_writes(self, queue_name: str, message: MessageProxy, writes: list[StoreWrite]) -> None:
        """``writes``, then the ack of ``message``, in one round trip (``NOSCRIPT`` ones go again on their own)."""
        pipe = self.client.pipeline(transaction=False)
        for write in writes:
            write.stage(pipe)
        ack_args = self._dispatch_args("ack", queue_name, message.options["redis_message_id"])
        scripts.stage(pipe, self._dispatch_script, [self.namespace], ack_args)
        *written, acked = scripts.checked(pipe.execute(raise_on_error=False))
        for write, reply in zip(writes, written, strict=True):
            if scripts.missing(reply):
                write.run(self.client)
        if scripts.missing(acked):
            scripts.run(self.client, self._dispatch_script, [self.namespace], ack_args)

    def _dispatch_args(self, command: str, queue_name: str, *args: Any) -> list[Any]:
        """The arguments ``RedisBroker._dispatch(command)`` passes to dispatch.lua."""
        return [
            command,
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance(command),
            self._max_unpack_size(),  # type: ignore[no-untyped-call]
            *args,
        ]

    def fetch_clearing_wake(self, queue_name: str, wanted: int, wait: float = 0.0) -> list[bytes]:
        """Fetch up to ``wanted`` messages and drop the queue's wake tokens, in one round trip; with ``wait``,
        first wait up to that many seconds for a token, in the same round trip.

        The tokens dropped are those of messages enqueued before this fetch, which it takes (or leaves for
        a consumer with room); a later enqueue leaves a new token. Stale tokens would only wake an idle
        consumer for an empty fetch. Redis runs the fetch as soon as the wait ends (a token, or the time is
        up: messages requeued without a token are found then), so an idle consumer woken by an enqueue gets
        the message in the round trip that waited for it.
        """
        key = wake_key(self.namespace, queue_name)
        pipe = self.client.pipeline(transaction=False)
        if wait > 0:
            pipe.blpop([key], timeout=max(wait, 0.001))
        pipe.delete(key)
        fetch_args = self._dispatch_args("fetch", queue_name, wanted)
        scripts.stage(pipe, self._dispatch_script, [self.namespace], fetch_args)
        fetched = scripts.checked(pipe.execute(raise_on_error=False))[-1]
        if scripts.missing(fetched):
            fetched = scripts.run(self.client, self._dispatch_script, [self.namespace], fetch_args)
        return list(fetched)


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer with the idle ``time.sleep`` replaced by a wait on the wake list, and the wait
    for room in a full prefetch ended by the ack (or nack) that makes the room."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._room = threading.Event()
        self._drained = False

    def ack(self, message: MessageProxy) -> None:
        """Dramatiq's ack, with the writes the actor left on the message in the same round trip."""
        try:
            self.broker.ack_with_writes(self.queue_name, message, pending_writes(message))
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._room.set()

    def nack(self, message: MessageProxy) -> None:
        try:
            for write in pending_writes(message):  # what the run did stays recorded, whatever failed after it
                write.run(self.broker.client)
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

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
                self._room.clear()
                if self.outstanding_message_count >= self.prefetch:
                    # Every prefetched message is still being worked on: new work cannot be taken, and a
                    # back-off (or a poll) would outlast the ack that frees room. Wait for that ack instead.
                    self._room.wait(FULL_PREFETCH_PAUSE)
                    return None
                wanted = self.prefetch - self.outstanding_message_count
                wait = 0.0
                if self._drained:
                    # The last fetch emptied the queue: anything enqueued since left a token, so wait for one
                    # (or the back-off, for messages requeued or sent without a token) before fetching again.
                    self.misses, backoff_ms = compute_backoff(self.misses, factor=WAIT_FACTOR, max_backoff=self.timeout)
                    wait = backoff_ms / 1000
                self.message_cache = self.broker.fetch_clearing_wake(self.queue_name, wanted, wait)
                self._drained = len(self.message_cache) < wanted
                if wait and not self.message_cache:
                    return None  # the consumer thread handles acks and stop requests between waits
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
