"""The dashboard's one reader of Redis: a snapshot of the active calls, then every event of the firehose as it comes.

One thread, one connection, so the page's cost to Redis does not grow with the pages open: each page gets the
view's deltas from memory (``app.py``).

No gap between the snapshot and the stream: the firehose's last id is read *first*, then the active calls and each
one's own stream, then the firehose is followed from that id with ``XREAD BLOCK``. An event appended meanwhile is
seen twice (in a call's stream and in the firehose), which the view folds to the same state (``view.py``); none
is missed. Every :data:`SLOW_EVERY` seconds, between two reads, the feed also reads what no event announces: the
FreeSWITCH nodes (calls each holds, marked down, the listener following it), the dead list, and whether a queued
call has left its line (its record's ``state``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from redswitch.config import Settings
from redswitch.dashboard.view import TEXT_MAX, View
from redswitch.store import open_store
from redswitch.store.connection import reply_map, reply_text
from redswitch.store.eventlog import last_id, reply_entries
from redswitch.store.keys import Keys

logger = logging.getLogger(__name__)

#: Seconds between two reads of the slower state (nodes, dead list, admission).
SLOW_EVERY = 2.0
#: Dead-list entries shown (the newest).
DEAD_SHOWN = 20
#: How long one XREAD waits for new events, so that the slow state and a stop are looked at in time.
BLOCK_MS = 500
#: Calls read per pipeline in the snapshot.
CHUNK = 200


class Feed:
    """Reads Redis into ``view`` under ``lock`` (the web side reads the view under the same lock)."""

    def __init__(self, settings: Settings, client: redis.Redis, view: View, lock: threading.Lock) -> None:
        self.settings, self.client, self.view, self.lock = settings, client, view, lock
        self.store = open_store(client, settings)
        self.ready = threading.Event()
        self._next_slow = 0.0

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: the snapshot, then the firehose; a Redis error is logged and the read tried again."""
        position: str | None = None
        while not stop.is_set():
            try:
                if position is None:
                    position = self.load()
                    self.ready.set()
                position = self.step(position)
            except redis.exceptions.RedisError as exc:
                logger.warning("dashboard feed: %s; reading again in 1s", exc)
                stop.wait(1.0)

    def load(self) -> str:
        """Fold every active call's stream and record into the view (as history, not live); the firehose position
        to follow from (read before anything else: see the module)."""
        position = last_id(self.client, Keys.firehose())
        active = sorted(reply_text(d) for d in self.client.smembers(Keys.active_calls()))
        for start in range(0, len(active), CHUNK):
            chunk = active[start : start + CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for dial_id in chunk:
                pipe.xrange(Keys.events(dial_id))
                pipe.hgetall(Keys.call(dial_id))
            replies = pipe.execute()
            with self.lock:
                for index, dial_id in enumerate(chunk):
                    for entry_id, fields in replies[2 * index]:
                        self._fold(reply_text(entry_id), dial_id, fields, live=False)
                    self.view.describe(dial_id, reply_map(replies[2 * index + 1]))
        logger.info("dashboard feed: %d active calls loaded, following the firehose after %s", len(active), position)
        return position

    def step(self, position: str) -> str:
        """One read of the firehose (waiting up to :data:`BLOCK_MS`), folded; then the records of new calls and,
        when due, the slow state. The position after what was read."""
        reply = self.client.xread({Keys.firehose(): position}, count=1000, block=BLOCK_MS)
        entries = reply_entries(reply)
        if entries:
            with self.lock:
                folded = {self._fold(reply_text(entry_id), "", fields, live=True) for entry_id, fields in entries}
                wanted = [dial_id for dial_id in folded if dial_id and self.view.needs_record(dial_id)]
            position = reply_text(entries[-1][0])
            self.describe(wanted)
        if time.monotonic() >= self._next_slow:
            self._next_slow = time.monotonic() + SLOW_EVERY
            self.slow()
        return position

    def describe(self, dial_ids: Sequence[str]) -> None:
        """Read the records of ``dial_ids`` (one pipeline) into the view."""
        if not dial_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for dial_id in dial_ids:
            pipe.hgetall(Keys.call(dial_id))
        records = pipe.execute()
        with self.lock:
            for dial_id, record in zip(dial_ids, records, strict=True):
                self.view.describe(dial_id, reply_map(record))

    def slow(self) -> None:
        """The nodes, the dead list and the queued calls' records (which say when a call left its line)."""
        names = [node.name for node in self.settings.nodes()]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.scard(Keys.node_calls(name))
            pipe.pttl(Keys.node_down(name))
        pipe.llen(self.store.keys.dead)
        pipe.lrange(self.store.keys.dead, -DEAD_SHOWN, -1)
        *counts, dead_length, dead = pipe.execute()
        leases = self.store.node_leases(names)
        nodes = [
            {
                "name": name,
                "calls": int(counts[2 * i]),
                "down_ms": max(0, int(counts[2 * i + 1])),
                "listener": lease.listener,
                "lease_age_ms": lease.age_ms,
                "lease_expires_ms": lease.expires_ms,
            }
            for i, (name, lease) in enumerate(zip(names, leases, strict=True))
        ]
        with self.lock:
            self.view.set_nodes(nodes)
            self.view.set_dead(int(dead_length), [dead_entry(reply_text(raw)) for raw in reversed(dead)])
            queued = self.view.queued()
        self.describe(queued)

    def _fold(self, entry_id: str, dial_id: str, fields: Any, live: bool) -> str:
        """Fold one stream entry into the view; its dial_id (the firehose's field, else ``dial_id``)."""
        values = reply_map(fields)
        dial_id = values.get("dial_id", dial_id)
        try:
            event = json.loads(values.get("event", ""))
        except ValueError:
            return dial_id
        if isinstance(event, dict):
            self.view.apply(entry_id, dial_id, event, live)
        return dial_id


def dead_entry(raw: str) -> dict[str, Any]:
    """A dead-list entry for the page: its reason, cause, time and dial_id, as text (bounded), never its payload."""
    try:
        entry = json.loads(raw)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return {"reason": "(not JSON)", "cause": "", "time": "", "dial_id": ""}
    return {name: str(entry.get(name) or "")[:TEXT_MAX] for name in ("reason", "cause", "time", "dial_id")}


def start(
    feed: Feed, stop: threading.Event, on_error: Callable[[BaseException], None] | None = None
) -> threading.Thread:
    """Run ``feed`` in a daemon thread of its own."""

    def run() -> None:
        try:
            feed.run(stop)
        except BaseException as exc:  # the page must say its data stopped, not show stale calls as live
            logger.exception("dashboard feed stopped")
            if on_error is not None:
                on_error(exc)

    thread = threading.Thread(target=run, name="dashboard-feed", daemon=True)
    thread.start()
    return thread
