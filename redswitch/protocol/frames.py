"""Frozen value types of the ESL wire: ``Frame`` (one block on the socket) and ``Event`` (a decoded event).

Headers are kept as an ordered tuple of ``(name, value)`` pairs, not a dict, because FreeSWITCH repeats names
(``CHANNEL_HANGUP_COMPLETE`` carries ``Hangup-Cause`` twice) and order is part of byte-faithfulness.
Look-ups are case-insensitive, as in FreeSWITCH (``switch_event_get_header`` uses ``strcasecmp``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Event", "Frame", "Headers", "HeaderPairs"]

HeaderPairs = tuple[tuple[str, str], ...]


def _pairs(items: Iterable[tuple[str, str]]) -> HeaderPairs:
    return tuple((str(k), str(v)) for k, v in items)


@dataclass(frozen=True)
class Headers:
    """Mixin giving a header multimap with case-insensitive ``get``/``get_all``; ``headers`` is the ordered pairs."""

    headers: HeaderPairs

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (case-insensitive), else ``default``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order (names can repeat)."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def as_dict(self) -> dict[str, str]:
        """Last value wins, original case kept: convenient for tests and logging, lossy for repeated names."""
        return dict(self.headers)


@dataclass(frozen=True)
class Frame(Headers):
    """One ESL block. ``command`` is the first line for client->server blocks, ``None`` for server->client ones.

    ``body`` is the Content-Length payload decoded as UTF-8 (for an event frame: the serialised event; use
    ``parse_event_plain``); ``raw_body`` keeps the exact bytes.
    """

    body: str = ""
    command: str | None = None
    raw_body: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def make(
        cls, headers: Iterable[tuple[str, str]], body: str = "", command: str | None = None, raw_body: bytes = b""
    ) -> Frame:
        return cls(_pairs(headers), body, command, raw_body or body.encode("utf-8"))

    @property
    def content_type(self) -> str | None:
        return self.get("Content-Type")

    @property
    def reply_text(self) -> str | None:
        return self.get("Reply-Text")


@dataclass(frozen=True)
class Event(Headers):
    """A FreeSWITCH event: ordered headers (values decoded) and an optional body (e.g. a BACKGROUND_JOB result)."""

    body: str = ""

    @classmethod
    def make(cls, headers: Iterable[tuple[str, str]], body: str = "") -> Event:
        return cls(_pairs(headers), body)

    @property
    def name(self) -> str | None:
        """``Event-Name`` (e.g. ``CHANNEL_ANSWER``)."""
        return self.get("Event-Name")

    @property
    def unique_id(self) -> str | None:
        return self.get("Unique-ID")
