"""Read a few headers out of a plain event without decoding the other seventy (pure, no I/O).

A consumer that needs five headers of a ``CHANNEL_ANSWER`` should not pay for url-decoding all of them: at
tens of thousands of events per second that is most of its time. Header names are never encoded and values
never hold a raw newline (FreeSWITCH encodes it), so a line-anchored regex over the header block is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from redswitch.protocol.urlcode import url_decode

__all__ = ["event_name", "header_picker"]

Picker = Callable[[bytes], dict[str, str]]


def event_name(payload: bytes) -> str:
    """The event's name: FreeSWITCH writes ``Event-Name`` first, so this reads one line (else it searches)."""
    if payload.startswith(b"Event-Name: "):
        stop = payload.find(b"\n")
        return payload[12 : stop if stop >= 0 else len(payload)].decode("utf-8", "replace")
    return header_picker(["Event-Name"])(payload).get("Event-Name", "")


def header_picker(names: Iterable[str]) -> Picker:
    """A function returning ``{name: decoded value}`` for ``names`` found in a plain event payload.

    Only the header block is searched (not a body such as a BACKGROUND_JOB result); when a name repeats, the
    first value wins, as with :meth:`Frame.get`. Each name costs one C-level ``bytes.find``; names of channel
    variables are looked for only from the first ``variable_`` header on, where FreeSWITCH puts them all.
    """
    wanted = [(name, ("\n" + name + ": ").encode(), name.startswith("variable_")) for name in dict.fromkeys(names)]

    def pick(payload: bytes) -> dict[str, str]:
        end = payload.find(b"\n\n")
        end = len(payload) if end < 0 else end + 1
        variables = payload.find(b"\nvariable_", 0, end)
        found: dict[str, str] = {}
        for name, marker, is_variable in wanted:
            if is_variable and variables < 0:
                continue
            if payload.startswith(marker[1:]):  # the first header has no newline before it
                start = len(marker) - 1
            else:
                start = payload.find(marker, variables if is_variable else 0, end)
                if start < 0:
                    continue
                start += len(marker)
            stop = payload.find(b"\n", start)
            found[name] = url_decode(payload[start : stop if stop >= 0 else len(payload)].decode("utf-8", "replace"))
        return found

    return pick
