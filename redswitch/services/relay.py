"""The control relay: call-control messages published on a call's ``dial_id`` channel → control actors.

Part of the bridge process. Pub/sub does not buffer: a message published on a channel nobody has subscribed to yet
is gone. So every relay pattern-subscribes to every channel at once (``PSUBSCRIBE *``), before any call exists, and
decides per message: a channel that is not an active call's (``redswitch:active``, checked on arrival) is none of
its business, Redswitch's own events, acks and errors are recognised by their ``type`` and ignored, and a control
message is turned into a Dramatiq message for the matching actor. A message published the moment ``call-start`` is
heard is received: the call is active before ``call-start`` is published.

Every relay hears every message, so each call has one owner relay (a key in Redis, taken over when the owner's
bridge stops heartbeating) that forwards at once; malformed messages are answered with an ``error`` by the owner.
An owner may die (``kill -9``) between a message's publication and its forwarding, and its liveness key outlives it
by up to ``BRIDGE_DEAD_AFTER``; so every relay notes each message in the call's control log
(``redswitch:control:<dial_id>``: the relays agree on which message is which by its digest and its order), and a
relay that does not own the call forwards it itself when no execution has taken it within
:data:`FALLBACK_AFTER`. The control actor takes the message in the log before executing it, so it runs once
whichever relays forwarded it (``redswitch/actors/control.py``).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from redswitch import metrics
from redswitch.errors import PayloadError
from redswitch.messages import (
    CONTROL_ID,
    CONTROL_TYPES,
    CONTROL_WINDOW_MS,
    EVENT_TYPES,
    ID_PATTERN,
    load_object,
    parse_control,
)
from redswitch.store import CallStore, events
from redswitch.store.connection import reply_text

logger = logging.getLogger(__name__)

Forward = Callable[[str, str, dict[str, str]], object]  # (actor name, dial_id, message)

#: Seconds a relay that does not own a call waits for the owner's execution to take a message before it forwards
#: the message itself (the owner's bridge may have died without its liveness key expiring yet).
FALLBACK_AFTER = 1.0
#: Our own events start with their type (``store/events.py`` encodes them so): recognised without parsing JSON.
_OWN_PREFIXES = tuple(f'{{"type": "{kind}"' for kind in EVENT_TYPES)


class Relay:
    def __init__(
        self,
        client: redis.Redis,
        store: CallStore,
        bridge_id: str,
        forward: Forward,
        surely_alive: Callable[[], bool] = lambda: False,
        fallback_after: float = FALLBACK_AFTER,
    ) -> None:
        self.client = client
        self.store = store
        self.bridge_id = bridge_id
        self.forward = forward
        self.fallback_after = fallback_after
        #: Calls this relay owns, skipping the ownership check while ``surely_alive()`` (our bridge's liveness
        #: key cannot have expired, so no other relay can have taken them over).
        self.owned: set[str] = set()
        self.surely_alive = surely_alive
        #: Per call and message digest, the last control-log entry this relay matched (and when, monotonic).
        self.matched: dict[str, dict[str, tuple[int, float]]] = {}
        #: Messages of calls another relay owns, to forward if nobody took them: (due, n, dial_id, id, type, message).
        self.pending: list[tuple[float, int, str, str, str, dict[str, str]]] = []
        self._order = itertools.count()
        #: When (Redis clock, ms) our subscription began: older log entries may be messages we never heard.
        self.since_ms = 0

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; after a Redis outage, subscribe again."""
        while not stop.is_set():
            try:
                self._serve(stop)
            except redis.exceptions.RedisError as exc:
                logger.warning("relay: Redis unavailable (%s); subscribing again", exc)
                stop.wait(0.5)

    def _serve(self, stop: threading.Event) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            seconds, micros = self.client.time()
            self.since_ms = int(seconds) * 1000 + int(micros) // 1000  # before subscribing: never too late
            pubsub.psubscribe("*")
            self.owned = set()  # Redis may have restarted (our liveness key lost): ask again
            self.matched = {}  # messages may have been missed meanwhile
            while not stop.is_set():
                message = pubsub.get_message(timeout=self._idle())
                if message is not None:
                    self._dispatch(message)
                self._run_due()
        finally:
            pubsub.close()

    def _idle(self) -> float:
        if not self.pending:
            return 0.5
        return min(0.5, max(0.0, self.pending[0][0] - time.monotonic()))

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        channel, data = reply_text(message["channel"]), reply_text(message["data"])
        if channel == self.store.keys.lifecycle():
            kind, _, dial_id = data.partition(":")
            if kind == "end":
                self.owned.discard(dial_id)
                self.matched.pop(dial_id, None)
            return
        if ID_PATTERN.fullmatch(channel):
            self.on_message(channel, data)

    def on_message(self, dial_id: str, data: str) -> None:
        """Handle one message published on ``dial_id``'s channel, if it is a command for an active call."""
        if _is_our_own(data):
            return
        owner = self._owner(dial_id)
        if not owner:
            return  # not an active call's channel
        try:
            control = parse_control(data)
        except PayloadError as exc:
            if owner == "mine":
                kind = _type_of(data)
                logger.info("dial_id=%s control message refused: %s", dial_id, exc.reason)
                self.store.reply(dial_id, events.error(kind, exc.reason))
                metrics.CONTROL_MESSAGES.labels(kind if kind in CONTROL_TYPES else "unknown", "refused").inc()
            return
        digest = hashlib.sha1(data.encode()).hexdigest()[:16]
        number, taker = self.store.control_note(
            dial_id, digest, self.since_ms, CONTROL_WINDOW_MS, self._last(dial_id, digest)
        )
        self.matched.setdefault(dial_id, {})[digest] = (number, time.monotonic())
        control_id = f"{digest}:{number}"
        if taker:
            return  # already executed: we are late
        forwarded = {**control.to_dict(), CONTROL_ID: control_id}
        if owner == "mine":
            self.forward(control.type, dial_id, forwarded)
            metrics.CONTROL_MESSAGES.labels(control.type, "forwarded").inc()
            return
        due = time.monotonic() + self.fallback_after
        heapq.heappush(self.pending, (due, next(self._order), dial_id, control_id, control.type, forwarded))

    def _run_due(self) -> None:
        """Forward the messages of other relays' calls that no execution took in time (their owner died)."""
        now = time.monotonic()
        while self.pending and self.pending[0][0] <= now:
            _, _, dial_id, control_id, kind, message = heapq.heappop(self.pending)
            if self.store.control_taken(dial_id, control_id):
                continue
            logger.warning(
                "dial_id=%s control_id=%s %s not taken within %.1fs (its owner relay may have died); forwarding it",
                dial_id,
                control_id,
                kind,
                self.fallback_after,
            )
            self.forward(kind, dial_id, message)
            metrics.CONTROL_MESSAGES.labels(kind, "taken_over").inc()

    def _last(self, dial_id: str, digest: str) -> int:
        """The last entry of this digest this relay matched on the call, unless the log has forgotten it since."""
        last, at = self.matched.get(dial_id, {}).get(digest, (0, 0.0))
        return last if time.monotonic() - at < CONTROL_WINDOW_MS / 1000 else 0

    def _owner(self, dial_id: str) -> str:
        """``mine``, ``other`` or ``''`` (no active call): one script call, or none while ours cannot have moved."""
        if dial_id in self.owned and self.surely_alive():
            return "mine"
        owner = self.store.relay_owner(dial_id, self.bridge_id)
        if owner == "mine":
            self.owned.add(dial_id)
        else:
            self.owned.discard(dial_id)
        return owner

    def _owns(self, dial_id: str) -> bool:
        return self._owner(dial_id) == "mine"


def _is_our_own(data: str) -> bool:
    """Events, acks and errors that Redswitch itself publishes on the call's channel."""
    if data.startswith(_OWN_PREFIXES):
        return True
    try:
        return load_object(data).get("type") in EVENT_TYPES
    except PayloadError:
        return False


def _type_of(data: str) -> str:
    try:
        kind = json.loads(data).get("type")
    except (ValueError, AttributeError, RecursionError):
        return "unknown"
    return kind if isinstance(kind, str) and len(kind) <= 32 else "unknown"
