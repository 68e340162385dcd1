"""Event creation and fan-out: each event is serialised at most once per format, whatever the subscriber count."""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from redswitch.protocol import Event, encode_event_json, encode_event_xml
from redswitch.protocol.codec import event_plain_frame, plain_body_section, serialize_headers_plain

__all__ = ["EventBus", "OutEvent", "Subscriber", "Subscription", "SwitchInfo"]


@dataclass(frozen=True)
class SwitchInfo:
    """The identity every event carries (``switch_event_prep_for_delivery_detailed``)."""

    core_uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    hostname: str = "sim"
    ipv4: str = "127.0.0.1"
    ipv6: str = "::1"


Pairs = list[tuple[str, str]]


class OutEvent:
    """An event on its way out: its standard header block already serialised, the rest serialised lazily, once per
    format, whatever the number of subscribers. ``rest`` may be a callable (template-built events build their
    pairs only if a json/xml subscriber or a filter needs them); ``rest_plain`` is their plain serialisation when
    the producer already has it."""

    __slots__ = (
        "_cache",
        "_event",
        "_rest",
        "body",
        "head",
        "head_plain",
        "name",
        "rest_plain",
        "subclass",
        "unique_id",
    )

    def __init__(
        self,
        name: str,
        head: Pairs,
        head_plain: bytes,
        rest: Pairs | Callable[[], Pairs],
        body: str = "",
        *,
        subclass: str | None = None,
        unique_id: str | None = None,
        rest_plain: bytes | Callable[[], bytes] | None = None,
    ) -> None:
        self.name = name
        self.head, self.head_plain = head, head_plain
        self._rest = rest
        self.rest_plain = rest_plain
        self.body = body
        self.subclass = subclass
        self.unique_id = unique_id
        self._event: Event | None = None
        self._cache: dict[str, bytes] = {}

    @property
    def event(self) -> Event:
        """The whole event as a value (built on first use: filters, json and xml need it, plain does not)."""
        if self._event is None:
            self._event = Event((*self.head, *self._rest_pairs()), self.body)
        return self._event

    def _rest_pairs(self) -> Pairs:
        if callable(self._rest):
            self._rest = self._rest()
        return self._rest

    def wire(self, fmt: str) -> bytes:
        data = self._cache.get(fmt)
        if data is None:
            data = self._cache[fmt] = self._encode(fmt)
        return data

    def _encode(self, fmt: str) -> bytes:
        if fmt == "json":
            return encode_event_json(self.event)
        if fmt == "xml":
            return encode_event_xml(self.event)
        rest_plain = self.rest_plain
        if callable(rest_plain):
            rest_plain = rest_plain()
        if rest_plain is None:
            rest_plain = serialize_headers_plain(self._rest_pairs())
        return event_plain_frame(self.head_plain + rest_plain + plain_body_section(self.body))


@dataclass
class Subscription:
    """One listener's ``event``/``nixevent``/``myevents``/``filter`` state (MES ``event_handler`` rules)."""

    fmt: str = "plain"
    all: bool = False
    names: set[str] = field(default_factory=set)
    customs: set[str] = field(default_factory=set)
    myevents: str | None = None
    filters: list[tuple[str, str]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.all or bool(self.names) or bool(self.customs) or self.myevents is not None

    def wants(self, ev: OutEvent) -> bool:
        if not self.may_take(ev.name, ev.subclass, ev.unique_id):
            return False
        return not self.filters or self._passes_filters(ev.event)

    def may_take(self, name: str, subclass: str | None, unique_id: str | None) -> bool:
        """Whether an event could pass, judged before it is built: everything but the filters."""
        if self.myevents is not None:
            return unique_id == self.myevents
        if name == "CUSTOM":
            return self.all or subclass in self.customs or "CUSTOM" in self.names
        return self.all or name in self.names

    def _passes_filters(self, event: Event) -> bool:
        positive = False
        matched = False
        for name, value in self.filters:
            negative = value.startswith("-")
            pattern = value[1:] if negative else value
            got = event.get(name)
            hit = got is not None and _filter_match(pattern, got)
            if negative and hit:
                return False
            if not negative:
                positive = True
                matched = matched or hit
        return matched or not positive


def _filter_match(pattern: str, value: str) -> bool:
    if pattern.startswith("/"):
        return re.search(pattern.strip("/"), value) is not None
    return pattern.lower() == value.lower()


class Subscriber(Protocol):
    def may_take(self, name: str, subclass: str | None, unique_id: str | None) -> bool:
        """Whether an event of this name could be delivered (filters aside): nobody taking it, it is not built."""
        ...

    def deliver(self, ev: OutEvent) -> None: ...

    def backlog(self) -> int:
        """Bytes accepted but not yet written to the peer (a flood waits while this is large)."""
        ...


class EventBus:
    """Builds standard headers (sequence, timestamps) and hands events to every subscriber (loop thread only).

    The standard header block is mostly constant (switch identity) or changes once a second (dates), so its plain
    serialisation is assembled from cached byte strings instead of url-encoding 13 values per event.
    """

    def __init__(self, info: SwitchInfo) -> None:
        self.info = info
        self.sequence = 0
        self.subscribers: set[Subscriber] = set()
        self._stamp_second = -1
        self._stamps = ("", "")
        self._stamps_plain = b""
        self._identity = [
            ("Core-UUID", info.core_uuid),
            ("FreeSWITCH-Hostname", info.hostname),
            ("FreeSWITCH-Switchname", info.hostname),
            ("FreeSWITCH-IPv4", info.ipv4),
            ("FreeSWITCH-IPv6", info.ipv6),
        ]
        self._identity_plain = serialize_headers_plain(self._identity)
        self._plain_cache: dict[tuple[str, ...], bytes] = {}

    def standard_headers(
        self, name: str, caller: tuple[str, str, int], subclass: str | None = None
    ) -> list[tuple[str, str]]:
        """The standard headers as pairs (advances the sequence)."""
        return self._standard(name, caller, subclass)[0]

    def _standard(self, name: str, caller: tuple[str, str, int], subclass: str | None) -> tuple[Pairs, bytes]:
        self.sequence += 1
        now = time.time()
        local, gmt = self._dates(now)
        stamp, seq = str(int(now * 1_000_000)), str(self.sequence)
        file, function, line = caller[0], caller[1], str(caller[2])
        headers = [
            ("Event-Name", name),
            *self._identity,
            ("Event-Date-Local", local),
            ("Event-Date-GMT", gmt),
            ("Event-Date-Timestamp", stamp),
            ("Event-Calling-File", file),
            ("Event-Calling-Function", function),
            ("Event-Calling-Line-Number", line),
            ("Event-Sequence", seq),
        ]
        parts = [self._cached(("Event-Name", name)), self._identity_plain, self._stamps_plain]
        parts += [b"Event-Date-Timestamp: ", stamp.encode(), b"\n", self._cached(("caller", file, function, line))]
        parts += [b"Event-Sequence: ", seq.encode(), b"\n"]
        if subclass is not None:
            headers.append(("Event-Subclass", subclass))
            parts.append(self._cached(("Event-Subclass", subclass)))
        return headers, b"".join(parts)

    def _cached(self, key: tuple[str, ...]) -> bytes:
        """Plain lines for a (name, value) pair or a caller triple; few distinct keys, so the cache stays small."""
        data = self._plain_cache.get(key)
        if data is None:
            if key[0] == "caller":
                pairs = [("Event-Calling-File", key[1]), ("Event-Calling-Function", key[2])]
                pairs.append(("Event-Calling-Line-Number", key[3]))
            else:
                pairs = [(key[0], key[1])]
            data = self._plain_cache[key] = serialize_headers_plain(pairs)
        return data

    def _dates(self, now: float) -> tuple[str, str]:
        """Date strings change once a second: cache them and their plain lines (strftime dominated an event)."""
        second = int(now)
        if second != self._stamp_second:
            local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            self._stamps = (local, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
            self._stamps_plain = serialize_headers_plain(
                [("Event-Date-Local", self._stamps[0]), ("Event-Date-GMT", self._stamps[1])]
            )
            self._stamp_second = second
        return self._stamps

    def fire(
        self,
        name: str,
        caller: tuple[str, str, int],
        headers: Iterable[tuple[str, str]] | Callable[[], Pairs] = (),
        body: str = "",
        subclass: str | None = None,
        *,
        unique_id: str | None = None,
        rest_plain: Callable[[], bytes] | None = None,
    ) -> OutEvent | None:
        """Create and deliver an event: standard headers, then ``headers``; ``unique_id`` defaults to theirs.

        ``headers`` may be a function building them (then give ``unique_id``): it runs only if a subscriber takes
        the event or a filter must look at it, while the event is being delivered. ``rest_plain``, if given,
        builds their plain serialisation (byte for byte what serialising ``headers`` would give), for plain
        subscribers. Returns the event, or None when no subscriber could take it (then it was never built).
        """
        rest: Pairs | Callable[[], Pairs] = headers if callable(headers) else list(headers)
        if unique_id is None and not callable(rest):
            unique_id = next((v for k, v in rest if k == "Unique-ID"), None)
        takers = self._takers(name, subclass, unique_id)
        if not takers:
            return None
        head, head_plain = self._standard(name, caller, subclass)
        out = OutEvent(
            name, head, head_plain, rest, body, subclass=subclass, unique_id=unique_id, rest_plain=rest_plain
        )
        return self._deliver(out, takers)

    def fire_prebuilt(
        self,
        name: str,
        caller: tuple[str, str, int],
        rest: Callable[[], Pairs],
        rest_plain: bytes,
        unique_id: str,
    ) -> OutEvent | None:
        """Deliver an event whose non-standard part is already serialised (the flood's templates)."""
        takers = self._takers(name, None, unique_id)
        if not takers:
            return None
        head, head_plain = self._standard(name, caller, None)
        out = OutEvent(name, head, head_plain, rest, subclass=None, unique_id=unique_id, rest_plain=rest_plain)
        return self._deliver(out, takers)

    def _takers(self, name: str, subclass: str | None, unique_id: str | None) -> list[Subscriber]:
        """The subscribers that may take an event. With none, the event is not built, but it still uses up its
        Event-Sequence number, as FreeSWITCH numbers every event it fires, delivered or not."""
        takers = [sub for sub in self.subscribers if sub.may_take(name, subclass, unique_id)]
        if not takers:
            self.sequence += 1
        return takers

    def publish(self, event: Event | OutEvent) -> OutEvent:
        """Hand an event to every subscriber (an ``Event`` is wrapped as is, its headers already complete)."""
        out = event if isinstance(event, OutEvent) else _wrap(event)
        return self._deliver(out, tuple(self.subscribers))

    @staticmethod
    def _deliver(out: OutEvent, subscribers: Iterable[Subscriber]) -> OutEvent:
        for sub in subscribers:
            sub.deliver(out)
        return out


def _wrap(event: Event) -> OutEvent:
    out = OutEvent(
        event.get("Event-Name") or "",
        list(event.headers),
        serialize_headers_plain(event.headers),
        [],
        event.body,
        subclass=event.get("Event-Subclass"),
        unique_id=event.get("Unique-ID"),
    )
    out._event = event
    return out
