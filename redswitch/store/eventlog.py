"""Reading the event log: a call's stream from any position, and the firehose alone or as a consumer group.

Every event Redswitch publishes on a call's channel is also appended, in the same step, to the call's stream
(``redswitch:events:<dial_id>``) and to the firehose (``redswitch:firehose``) (see :meth:`CallStore.publish_event
<redswitch.store.base.CallStore.publish_event>` and ``lua/log.lua``). A stream entry's id is a position: a reader
that remembers the last id it handled resumes right after it, with no gap and no duplicate. Readers here never
use pub/sub: following a stream with ``XREAD BLOCK`` from the last id read is gap-free by construction.

* :func:`follow` reads one stream (a call's, or the firehose) from a position, then follows it live;
* :class:`GroupReader` reads the firehose as one member of a consumer group: each entry is handed to one member,
  acknowledged once the member asks for the next ones, and the entries of a member that died (pending longer
  than ``claim_idle``) are claimed by another (``XAUTOCLAIM``): every event is handled at least once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import redis

from redswitch.store.connection import reply_text

logger = logging.getLogger(__name__)

#: Before the first entry: read a stream from its start.
START = "0-0"
#: After the stream's current last entry: only what comes next (resolved to an id once, so nothing is skipped).
LATEST = "$"


@dataclasses.dataclass(frozen=True)
class LoggedEvent:
    """One event of the log: its stream entry id (the position to resume after), its call, and the event exactly
    as it was published on the call's channel (``text``; :attr:`event` decodes it)."""

    id: str
    dial_id: str
    text: str

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.text))


def last_id(client: redis.Redis, stream: str) -> str:
    """The id of the stream's last entry, or :data:`START` when it has none (or does not exist yet)."""
    newest = client.xrevrange(stream, count=1)
    return reply_text(newest[0][0]) if newest else START


def reply_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of an ``XREAD``/``XREADGROUP`` reply on one stream, whatever the protocol's shape."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return [entry for entries in reply.values() for entry in (entries[0] if entries else [])]
    return [entry for _, entries in reply for entry in entries]


def _logged(entry_id: Any, fields: Any, dial_id: str = "") -> LoggedEvent | None:
    """A stream entry as a LoggedEvent; None for an entry trimmed away while pending (no fields left)."""
    if not fields:
        return None
    values = {reply_text(k): reply_text(v) for k, v in dict(fields).items()}
    return LoggedEvent(reply_text(entry_id), values.get("dial_id", dial_id), values.get("event", ""))


def follow(
    client: redis.Redis,
    stream: str,
    after: str = START,
    *,
    dial_id: str = "",
    block: float = 1.0,
    deadline: float | None = None,
    live: bool = True,
) -> Generator[LoggedEvent, None, None]:
    """The entries of ``stream`` after the id ``after`` (:data:`START`: all of them; :data:`LATEST`: only those
    still to come), in order, then, with ``live``, each new one as it is appended, until ``deadline`` (a
    ``time.monotonic()`` value; None: never). ``dial_id`` names the call of a call's stream (firehose entries
    carry theirs)."""
    position = last_id(client, stream) if after == LATEST else after
    while True:
        wait = block if deadline is None else min(block, deadline - time.monotonic())
        if live and wait <= 0:
            return
        reply = client.xread({stream: position}, count=500, block=max(1, int(wait * 1000)) if live else None)
        entries = reply_entries(reply)
        for entry_id, fields in entries:
            position = reply_text(entry_id)
            logged = _logged(entry_id, fields, dial_id)
            if logged is not None:
                yield logged
        if not live and not entries:
            return


class GroupReader:
    """One member (``consumer``) of the consumer group ``group`` on ``stream`` (the firehose).

    Iterating yields the group's entries handed to this member: first those it was handed before and never
    acknowledged (a restarted member finishes its own work), then new ones, and, every ``claim_idle`` seconds
    or when there is nothing new, those another member left pending longer than ``claim_idle`` (it died). An
    entry is acknowledged once the loop that got it asks for the next one, together with the next read (one round
    trip): a member killed while handling an entry leaves it pending, and another gets it. At least once: an
    entry handled but not yet acknowledged when its member died is handled again.

    The group is created on first use at ``create_at`` (:data:`LATEST`: events from now on; :data:`START`: every
    event the stream still holds); an existing group keeps its position.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        create_at: str = LATEST,
        count: int = 100,
        block: float = 1.0,
        claim_idle: float = 30.0,
    ) -> None:
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.count, self.block, self.claim_idle = count, block, claim_idle
        self.create(create_at)

    def create(self, at: str) -> bool:
        """Create the group (and the stream if need be); False when it exists already."""
        try:
            self.client.xgroup_create(self.stream, self.group, id=at, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def pending(self) -> int:
        """How many of the group's entries are handed out and not acknowledged (all members)."""
        return int(self.client.xpending(self.stream, self.group)["pending"])

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def claim(self) -> list[LoggedEvent]:
        """Take over the entries other members left pending longer than ``claim_idle`` (up to ``count``)."""
        reply = self.client.xautoclaim(
            self.stream, self.group, self.consumer, int(self.claim_idle * 1000), start_id="0-0", count=self.count
        )
        entries = reply[1] if len(reply) > 1 else []
        claimed = [logged for entry_id, fields in entries if (logged := _logged(entry_id, fields)) is not None]
        if claimed:
            logger.info("claimed %d events another consumer of %s left pending", len(claimed), self.group)
        return claimed

    def _read(self, done: list[str], own: str | None) -> tuple[list[LoggedEvent], str | None]:
        """Acknowledge ``done`` and read the next entries in one round trip: this member's own pending entries
        after ``own``, or (``own`` None) new ones, waiting up to ``block`` for them. Also the last id read (None:
        nothing), trimmed entries included."""
        pipe = self.client.pipeline(transaction=False)
        if done:
            pipe.xack(self.stream, self.group, *done)
        if own is None:
            pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, self.count, int(self.block * 1000))
        else:
            pipe.xreadgroup(self.group, self.consumer, {self.stream: own}, self.count)
        entries = reply_entries(pipe.execute()[-1])
        gone = [reply_text(entry_id) for entry_id, fields in entries if not fields]
        self.ack(gone)  # trimmed away while pending: nothing left to hand over
        found = [logged for entry_id, fields in entries if (logged := _logged(entry_id, fields)) is not None]
        return found, (reply_text(entries[-1][0]) if entries else None)

    def __iter__(self) -> Iterator[LoggedEvent]:
        return self.events()

    def events(self, deadline: float | None = None) -> Generator[LoggedEvent, None, None]:
        """The entries handed to this member (see the class), until ``deadline`` (``time.monotonic()``; None:
        never)."""
        done: list[str] = []
        own: str | None = START  # first this member's own unacknowledged entries, from the oldest
        next_claim = time.monotonic() + self.claim_idle
        try:
            while deadline is None or time.monotonic() < deadline:
                batch, last = self._read(done, own)
                done = []
                if own is not None:
                    own = last  # None once its own backlog is done: new entries from now on
                    if own is not None and not batch:
                        continue
                if not batch or time.monotonic() >= next_claim:
                    batch += self.claim()
                    next_claim = time.monotonic() + self.claim_idle
                for logged in batch:
                    yield logged
                    done.append(logged.id)
        finally:
            try:
                self.ack(done)
            except redis.exceptions.RedisError:  # the entries stay pending: another member handles them again
                logger.warning("could not acknowledge %d handled events of %s", len(done), self.group)
