"""Event creation and fan-out: each event is serialised at most once per format, whatever the subscriber count."""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from redswitch.protocol import Event, encode_event_json, encode_event_plain, encode_event_xml

__all__ = ["EventBus", "OutEvent", "Subscriber", "Subscription", "SwitchInfo"]


@dataclass(frozen=True)
class SwitchInfo:
    """The identity every event carries (``switch_event_prep_for_delivery_detailed``)."""

    core_uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    hostname: str = "sim"
    ipv4: str = "127.0.0.1"
    ipv6: str = "::1"


class OutEvent:
    """An event on its way out, with lazily cached wire bytes per format."""

    __slots__ = ("_cache", "event", "name", "subclass", "unique_id")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.name = event.get("Event-Name") or ""
        self.subclass = event.get("Event-Subclass")
        self.unique_id = event.get("Unique-ID")
        self._cache: dict[str, bytes] = {}

    def wire(self, fmt: str) -> bytes:
        data = self._cache.get(fmt)
        if data is None:
            encoder = encode_event_json if fmt == "json" else encode_event_xml if fmt == "xml" else encode_event_plain
            data = self._cache[fmt] = encoder(self.event)
        return data


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
        if self.myevents is not None:
            if ev.unique_id != self.myevents:
                return False
        elif ev.name == "CUSTOM":
            if not (self.all or ev.subclass in self.customs or "CUSTOM" in self.names):
                return False
        elif not (self.all or ev.name in self.names):
            return False
        return not self.filters or self._passes_filters(ev.event)

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
    def deliver(self, ev: OutEvent) -> None: ...


class EventBus:
    """Builds standard headers (sequence, timestamps) and hands events to every subscriber (loop thread only)."""

    def __init__(self, info: SwitchInfo) -> None:
        self.info = info
        self.sequence = 0
        self.subscribers: set[Subscriber] = set()
        self._stamp_second = -1
        self._stamps = ("", "")

    def standard_headers(
        self, name: str, caller: tuple[str, str, int], subclass: str | None = None
    ) -> list[tuple[str, str]]:
        self.sequence += 1
        now = time.time()
        info = self.info
        headers = [
            ("Event-Name", name),
            ("Core-UUID", info.core_uuid),
            ("FreeSWITCH-Hostname", info.hostname),
            ("FreeSWITCH-Switchname", info.hostname),
            ("FreeSWITCH-IPv4", info.ipv4),
            ("FreeSWITCH-IPv6", info.ipv6),
            ("Event-Date-Local", self._dates(now)[0]),
            ("Event-Date-GMT", self._dates(now)[1]),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", caller[0]),
            ("Event-Calling-Function", caller[1]),
            ("Event-Calling-Line-Number", str(caller[2])),
            ("Event-Sequence", str(self.sequence)),
        ]
        if subclass is not None:
            headers.append(("Event-Subclass", subclass))
        return headers

    def _dates(self, now: float) -> tuple[str, str]:
        """Date strings change once a second: cache them (strftime dominated the cost of an event)."""
        second = int(now)
        if second != self._stamp_second:
            local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            self._stamps = (local, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
            self._stamp_second = second
        return self._stamps

    def fire(
        self,
        name: str,
        caller: tuple[str, str, int],
        headers: Iterable[tuple[str, str]] = (),
        body: str = "",
        subclass: str | None = None,
    ) -> OutEvent:
        event = Event.make([*self.standard_headers(name, caller, subclass), *headers], body)
        return self.publish(event)

    def publish(self, event: Event) -> OutEvent:
        out = OutEvent(event)
        for sub in tuple(self.subscribers):
            sub.deliver(out)
        return out
