"""The bridge: legacy ``asp-call`` jobs from the Redis list to the ``asp_call`` actor, without losing one.

Reliable-queue pattern: a job is moved atomically (``BLMOVE``) from the jobs list to this bridge's own
processing list, and removed from there only after its Dramatiq message is enqueued or it is parked in the
dead list with its reason. A bridge that dies leaves its jobs in its processing list; every bridge
heartbeats a key with a TTL, and the others adopt the processing list of a bridge whose key expired.

The legacy pushers ``RPUSH`` and the original consumer popped from the left, so the list is FIFO.

Duplicates: the first bridge to accept a ``dial_id`` records it for ``DEDUP_TTL`` (24 h) with a hash of
the payload; a later job with that dial_id is dead-lettered (with its reason and ``cause`` ``DUPLICATE_DIAL_ID``),
logged and counted, and nothing is published on the channel, which belongs to the first call.
A job adopted from a dead bridge may already
have been enqueued: it is enqueued again, and the actor's own claim makes sure it dials once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from redswitch import metrics
from redswitch.config import Settings
from redswitch.errors import PayloadError
from redswitch.messages import AspCall, parse_job, peek_field
from redswitch.store import evalsha as scripts
from redswitch.store import events, open_store
from redswitch.store.connection import reply_text

logger = logging.getLogger(__name__)

#: Enqueues a batch of jobs for the asp_call actor, in one round trip where the broker allows.
Sender = Callable[[list[dict[str, str]]], object]
#: Jobs taken in one go: one script call moves them, one pipeline dedups them, one enqueues them.
BATCH = 100

# Move up to ARGV[1] jobs from the jobs list to a processing list, oldest first, atomically each.
_TAKE_SCRIPT = """
local taken = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not job then break end
  taken[#taken + 1] = job
end
return taken
"""


class Bridge:
    """Moves jobs from the legacy list to Dramatiq; several may run against one Redis."""

    def __init__(self, settings: Settings, client: redis.Redis, send: Sender, bridge_id: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.send = send
        self.store = open_store(client, settings)
        self.keys = self.store.keys
        self.bridge_id = bridge_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.processing = self.keys.processing(self.bridge_id)
        self._next_heartbeat = 0.0
        #: Until when (monotonic) our liveness key surely exists: read by the relay (see ``surely_alive``).
        self._alive_until = 0.0
        #: Jobs handled (enqueued or parked) but still in the processing list: removed on the next round trip.
        self._done: list[Any] = []

    # -- main loop -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, block: float = 1.0) -> None:
        """Serve until ``stop`` is set; survives Redis going away and coming back."""
        logger.info("bridge %s taking jobs from %s", self.bridge_id, self.keys.jobs)
        while not stop.is_set():
            try:
                self.beat()
                self.take(block)
            except redis.exceptions.ConnectionError as exc:
                logger.warning("bridge %s: Redis unavailable (%s); retrying", self.bridge_id, exc)
                stop.wait(0.5)
        try:
            self._forget_done()
            self.client.delete(self.keys.bridge_alive(self.bridge_id))
        except redis.exceptions.ConnectionError as exc:
            # Stopping while Redis is away: handled jobs still listed are enqueued again by whoever adopts
            # our processing list (the actor's claim dials each call once), and our liveness key expires.
            logger.warning("bridge %s: stopping without Redis (%s)", self.bridge_id, exc)

    def beat(self) -> None:
        """Heartbeat, then adopt the jobs of dead bridges (and our own, after a Redis outage)."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.settings.bridge_heartbeat
        self._forget_done()  # before _resume, which would take a handled job for one left by an error
        ttl_ms = int(self.settings.bridge_dead_after * 1000)
        sent_at = time.monotonic()
        self.client.set(self.keys.bridge_alive(self.bridge_id), "1", px=ttl_ms)
        self._alive_until = sent_at + ttl_ms / 1000
        self._resume(self.processing)
        for other in self._dead_bridges():
            self._adopt(other)

    def surely_alive(self) -> bool:
        """True while the liveness key set by our last heartbeat cannot have expired: no other bridge can take
        over a call our relay owns (a Redis restart wipes the key, but it also breaks the relay's subscription,
        and the relay forgets what it owned when it subscribes again)."""
        return time.monotonic() < self._alive_until

    def take(self, block: float) -> bool:
        """Wait up to ``block`` seconds for a job, then handle it with whatever else is waiting (up to BATCH).

        One round trip: the previous batch's removals, the blocking move of the first job, and the move of
        the rest are pipelined; Redis runs the last one as soon as the blocking move returns.
        """
        removals = len(self._done)
        pipe = self.client.pipeline(transaction=False)
        self._stage_forget(pipe)
        pipe.blmove(self.keys.jobs, self.processing, block, "LEFT", "RIGHT")  # type: ignore[arg-type]
        if self.store.atomic:  # a cluster pipeline refuses scripts: there, the rest is a round trip of its own
            scripts.stage(pipe, _TAKE_SCRIPT, [self.keys.jobs, self.processing], [BATCH - 1])
        replies = scripts.checked(pipe.execute(raise_on_error=False))
        self._done = []
        first, more = replies[removals], replies[-1]
        if not self.store.atomic:
            more = self._take_rest(self.keys.jobs, BATCH - 1) if first is not None else []
        elif scripts.missing(more):  # Redis lost its script cache: the take of the rest did not run
            more = self._take_rest(self.keys.jobs, BATCH - 1)
        taken = ([first] if first is not None else []) + list(more)
        if taken:
            self.handle_batch(taken, adopted=False)
        return bool(taken)

    def _take_rest(self, source: str, count: int) -> list[Any]:
        """Move up to ``count`` jobs from ``source`` to our processing list (one script call)."""
        return list(scripts.run(self.client, _TAKE_SCRIPT, [source, self.processing], [count]))

    def drain(self) -> int:
        """Handle every job waiting now, without blocking; return how many (for tests and benchmarks)."""
        count = 0
        while batch := self._take_rest(self.keys.jobs, BATCH):
            self.handle_batch(batch, adopted=False)
            self._forget_done()
            count += len(batch)
        return count

    # -- jobs ------------------------------------------------------------------------------------------------

    def handle_batch(self, raws: list[Any], adopted: bool) -> None:
        """Enqueue or park every job of ``raws`` (in our processing list); only then mark them for removal.

        The removal itself rides on the next round trip (:meth:`take`) or follows at once (:meth:`_forget_done`).
        A bridge killed in between leaves handled jobs in its processing list: they are enqueued again when
        adopted, and the actor's claim makes sure each call is dialled once.
        """
        if not adopted:
            metrics.JOBS_TAKEN.inc(len(raws))
        valid = []
        for raw in raws:
            try:
                valid.append((parse_job(raw), raw))
            except PayloadError as exc:
                self._park(raw, exc.reason, duplicate=False)
        jobs = self._first_of_their_dial_id(valid, adopted)
        if jobs:
            self.send([job.to_dict() for job in jobs])
            metrics.JOBS_ENQUEUED.inc(len(jobs))
        self._done.extend(raws)

    def _stage_forget(self, pipe: Any) -> None:
        for raw in self._done:
            pipe.lrem(self.processing, 1, raw)

    def _forget_done(self) -> None:
        """Drop the handled jobs from the processing list now."""
        if self._done:
            pipe = self.client.pipeline(transaction=False)
            self._stage_forget(pipe)
            pipe.execute()
            self._done = []

    def _first_of_their_dial_id(self, valid: list[tuple[AspCall, bytes]], adopted: bool) -> list[AspCall]:
        """Record each dial_id as dialled (24 h); park the jobs whose dial_id was already taken."""
        digests = [hashlib.sha256(raw).hexdigest() for _, raw in valid]
        pipe = self.client.pipeline(transaction=False)
        for (job, _), digest in zip(valid, digests, strict=True):
            pipe.set(self.keys.dialled(job.dial_id), digest, nx=True, ex=self.settings.dedup_ttl)
        accepted = []
        for (job, raw), digest, fresh in zip(valid, digests, pipe.execute(), strict=True):
            if fresh or (adopted and reply_text(self.client.get(self.keys.dialled(job.dial_id))) == digest):
                accepted.append(job)
            else:
                reason = f"duplicate dial_id {job.dial_id!r}: already dialled within the last 24 h"
                self._park(raw, reason, duplicate=True)
        return accepted

    def _park(self, raw: bytes, reason: str, duplicate: bool) -> None:
        """Keep a refused job where an operator can find it, and tell its channel why, if it has one."""
        record: dict[str, Any] = {"reason": reason, "time": _now_iso(), "bridge": self.bridge_id}
        try:
            record["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(raw).decode("ascii")
        dial_id = peek_field(raw, "dial_id")
        record["dial_id"] = dial_id
        if duplicate:
            record["cause"] = "DUPLICATE_DIAL_ID"
        self.client.rpush(self.keys.dead, json.dumps(record))
        metrics.JOBS_DEAD.labels("DUPLICATE_DIAL_ID" if duplicate else "INVALID_JOB").inc()
        logger.warning("dial_id=%s job parked in %s: %s", dial_id, self.keys.dead, reason)
        if dial_id is not None and not duplicate:
            # A duplicate's channel is the call with that dial_id, maybe still live: a failure there would read as
            # the end of that call. It is parked, logged and counted only.
            org, user = peek_field(raw, "org_id"), peek_field(raw, "user_id")
            self.store.fail(dial_id, org, user, events.failure("INVALID_JOB", reason=reason))

    # -- recovery --------------------------------------------------------------------------------------------

    def _dead_bridges(self) -> list[str]:
        prefix = self.keys.processing("")
        dead = []
        for key in self.client.scan_iter(match=self.keys.processing_pattern(), count=100):
            other = reply_text(key)[len(prefix) :]
            if other != self.bridge_id and not self.client.exists(self.keys.bridge_alive(other)):
                dead.append(other)
        return dead

    def _adopt(self, other: str) -> None:
        source = self.keys.processing(other)
        while batch := self._take_rest(source, BATCH):
            logger.warning("bridge %s adopting %d jobs of dead bridge %s", self.bridge_id, len(batch), other)
            self.handle_batch(batch, adopted=True)
            self._forget_done()

    def _resume(self, key: str) -> None:
        """Jobs already in our own processing list (left by an error) are handled again first."""
        left = self.client.lrange(key, 0, -1)
        if left:
            self.handle_batch(left, adopted=True)
            self._forget_done()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
