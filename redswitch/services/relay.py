"""The control relay: call-control messages published on a call's ``dial_id`` channel → control actors.

Part of the bridge process. It subscribes to the channel of every call in progress (``redswitch:active``,
then ``start:``/``end:`` announcements on ``redswitch:calls``) and turns each control message into a
Dramatiq message for the matching actor. Redswitch's own events, acks and errors on the same channel are
recognised by their ``type`` and ignored.

Pub/sub delivers every message to every bridge, so each call has one owner relay (a key in Redis, taken
over when the owner's bridge stops heartbeating); only the owner forwards, so with several bridges each
message is executed once. Malformed messages are answered with an ``error`` by the owner and go no further.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from redswitch import metrics
from redswitch.errors import PayloadError
from redswitch.messages import CONTROL_TYPES, EVENT_TYPES, load_object, parse_control
from redswitch.store import CallStore, events
from redswitch.store.connection import reply_text

logger = logging.getLogger(__name__)

Forward = Callable[[str, str, dict[str, str]], object]  # (actor name, dial_id, message)


class Relay:
    def __init__(
        self,
        client: redis.Redis,
        store: CallStore,
        bridge_id: str,
        forward: Forward,
        surely_alive: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.store = store
        self.bridge_id = bridge_id
        self.forward = forward
        self.subscribed: set[str] = set()
        #: Calls this relay owns, skipping the ownership check while ``surely_alive()`` (our bridge's liveness
        #: key cannot have expired, so no other relay can have taken them over).
        self.owned: set[str] = set()
        self.surely_alive = surely_alive

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; after a Redis outage, subscribe again to every active call."""
        while not stop.is_set():
            try:
                self._serve(stop)
            except redis.exceptions.RedisError as exc:
                logger.warning("relay: Redis unavailable (%s); resubscribing", exc)
                stop.wait(0.5)

    def _serve(self, stop: threading.Event) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.store.keys.lifecycle())  # first, so no call starts unseen between the two steps
            self.subscribed = set()
            self.owned = set()  # Redis may have restarted (our liveness key lost): ask again
            self._follow(pubsub, set(self.store.active_calls()))
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is not None:
                    self._dispatch(pubsub, message)
        finally:
            pubsub.close()

    def _follow(self, pubsub: Any, dial_ids: set[str]) -> None:
        new = dial_ids - self.subscribed
        if new:
            pubsub.subscribe(*new)
            self.subscribed |= new

    def _dispatch(self, pubsub: Any, message: Mapping[str, Any]) -> None:
        channel, data = reply_text(message["channel"]), reply_text(message["data"])
        if channel == self.store.keys.lifecycle():
            kind, _, dial_id = data.partition(":")
            if kind == "start":
                self._follow(pubsub, {dial_id})
            elif kind == "end" and dial_id in self.subscribed:
                pubsub.unsubscribe(dial_id)
                self.subscribed.discard(dial_id)
                self.owned.discard(dial_id)
            return
        self.on_message(channel, data)

    def on_message(self, dial_id: str, data: str) -> None:
        """Forward one message published on ``dial_id``'s channel, if it is a command and we own the call."""
        if _is_our_own(data) or not self._owns(dial_id):
            return
        try:
            control = parse_control(data)
        except PayloadError as exc:
            kind = _type_of(data)
            logger.info("dial_id=%s control message refused: %s", dial_id, exc.reason)
            self.store.reply(dial_id, events.error(kind, exc.reason))
            metrics.CONTROL_MESSAGES.labels(kind if kind in CONTROL_TYPES else "unknown", "refused").inc()
            return
        self.forward(control.type, dial_id, control.to_dict())
        metrics.CONTROL_MESSAGES.labels(control.type, "forwarded").inc()

    def _owns(self, dial_id: str) -> bool:
        """Is this relay the call's owner (one script call, or none while our ownership cannot have moved)?"""
        if dial_id in self.owned and self.surely_alive():
            return True
        if not self.store.claim_relay(dial_id, self.bridge_id):
            self.owned.discard(dial_id)
            return False
        self.owned.add(dial_id)
        return True


def _is_our_own(data: str) -> bool:
    """Events, acks and errors that Redswitch itself publishes on the call's channel."""
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
