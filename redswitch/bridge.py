"""The bridge: legacy ``asp-call`` jobs from the Redis list to the ``asp_call`` actor, without losing one.

Reliable-queue pattern: a job is moved atomically (``BLMOVE``) from the jobs list to this bridge's own
processing list, and removed from there only after its Dramatiq message is enqueued or it is parked in the
dead list with its reason. A bridge that dies leaves its jobs in its processing list; every bridge
heartbeats a key with a TTL, and the others adopt the processing list of a bridge whose key expired.

The legacy pushers ``RPUSH`` and the original consumer popped from the left, so the list is FIFO.

Duplicates: the first bridge to accept a ``dial_id`` records it for ``DEDUP_TTL`` (24 h) with a hash of
the payload; a later job with that dial_id is dead-lettered. A job adopted from a dead bridge may already
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
from redswitch.state import CallState, Keys, now_iso

logger = logging.getLogger(__name__)

Sender = Callable[[dict[str, str]], object]


class Bridge:
    """Moves jobs from the legacy list to Dramatiq; several may run against one Redis."""

    def __init__(self, settings: Settings, client: redis.Redis, send: Sender, bridge_id: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.send = send
        self.keys = Keys(settings)
        self.state = CallState(client, settings)
        self.bridge_id = bridge_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.processing = self.keys.processing(self.bridge_id)
        self._next_heartbeat = 0.0

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
        self.client.delete(Keys.bridge_alive(self.bridge_id))

    def beat(self) -> None:
        """Heartbeat, then adopt the jobs of dead bridges (and our own, after a Redis outage)."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.settings.bridge_heartbeat
        ttl_ms = int(self.settings.bridge_dead_after * 1000)
        self.client.set(Keys.bridge_alive(self.bridge_id), "1", px=ttl_ms)
        self._resume(self.processing)
        for other in self._dead_bridges():
            self._adopt(other)

    def take(self, block: float) -> bool:
        """Wait up to ``block`` seconds for one job and handle it; False when none came."""
        raw = self.client.blmove(self.keys.jobs, self.processing, block, "LEFT", "RIGHT")  # type: ignore[arg-type]
        if raw is None:
            return False
        self.handle(raw, adopted=False)
        return True

    def drain(self) -> int:
        """Handle every job waiting now, without blocking; return how many (for tests and benchmarks)."""
        count = 0
        while (raw := self.client.lmove(self.keys.jobs, self.processing, "LEFT", "RIGHT")) is not None:
            self.handle(raw, adopted=False)
            count += 1
        return count

    # -- one job ---------------------------------------------------------------------------------------------

    def handle(self, raw: Any, adopted: bool) -> None:
        """Enqueue or park ``raw``; only then drop it from the processing list."""
        if not adopted:
            metrics.JOBS_TAKEN.inc()
        try:
            job = parse_job(raw)
            self._accept(job, raw, adopted)
        except PayloadError as exc:
            self._park(raw, exc.reason, duplicate=exc.reason.startswith("duplicate"))
        self.client.lrem(self.processing, 1, raw)

    def _accept(self, job: AspCall, raw: bytes, adopted: bool) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        key = Keys.dialled(job.dial_id)
        if not self.client.set(key, digest, nx=True, ex=self.settings.dedup_ttl):
            if not (adopted and _text(self.client.get(key)) == digest):
                raise PayloadError(f"duplicate dial_id {job.dial_id!r}: already dialled within the last 24 h")
        self.send(job.to_dict())
        metrics.JOBS_ENQUEUED.inc()

    def _park(self, raw: bytes, reason: str, duplicate: bool) -> None:
        """Keep a refused job where an operator can find it, and tell its channel why, if it has one."""
        record: dict[str, Any] = {"reason": reason, "time": now_iso(), "bridge": self.bridge_id}
        try:
            record["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(raw).decode("ascii")
        dial_id = peek_field(raw, "dial_id")
        record["dial_id"] = dial_id
        self.client.rpush(self.keys.dead, json.dumps(record))
        metrics.JOBS_DEAD.labels("DUPLICATE_DIAL_ID" if duplicate else "INVALID_JOB").inc()
        logger.warning("dial_id=%s job parked in %s: %s", dial_id, self.keys.dead, reason)
        if dial_id is not None:
            cause = "DUPLICATE_DIAL_ID" if duplicate else "INVALID_JOB"
            org, user = (None, None) if duplicate else (peek_field(raw, "org_id"), peek_field(raw, "user_id"))
            self.state.fail(dial_id, org, user, cause, reason=reason, end_call=not duplicate)

    # -- recovery --------------------------------------------------------------------------------------------

    def _dead_bridges(self) -> list[str]:
        prefix = self.keys.processing("")
        dead = []
        for key in self.client.scan_iter(match=self.keys.processing_pattern(), count=100):
            other = _text(key)[len(prefix) :]
            if other != self.bridge_id and not self.client.exists(Keys.bridge_alive(other)):
                dead.append(other)
        return dead

    def _adopt(self, other: str) -> None:
        source = self.keys.processing(other)
        while (raw := self.client.lmove(source, self.processing, "LEFT", "RIGHT")) is not None:
            logger.warning("bridge %s adopting a job of dead bridge %s", self.bridge_id, other)
            self.handle(raw, adopted=True)

    def _resume(self, key: str) -> None:
        """Jobs already in our own processing list (left by an error) are handled again first."""
        for raw in self.client.lrange(key, 0, -1):
            self.handle(raw, adopted=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
