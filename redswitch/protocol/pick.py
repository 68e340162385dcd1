"""Read a few headers out of a plain event without decoding the other seventy (pure, no I/O).

A consumer that needs five headers of a ``CHANNEL_ANSWER`` should not pay for url-decoding all of them: at
tens of thousands of events per second that is most of its time. Header names are never encoded and values
never hold a raw newline (FreeSWITCH encodes it), so a line-anchored regex over the header block is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from redswitch.protocol.urlcode import url_decode

__all__ = ["header_picker"]

Picker = Callable[[bytes], dict[str, str]]


def header_picker(names: Iterable[str]) -> Picker:
    """A function returning ``{name: decoded value}`` for ``names`` found in a plain event payload.

    Only the header block is searched (not a body such as a BACKGROUND_JOB result); when a name repeats, the
    first value wins, as with :meth:`Frame.get`. Each name costs one C-level ``bytes.find``.
    """
    wanted = [(name, ("\n" + name + ": ").encode()) for name in dict.fromkeys(names)]

    def pick(payload: bytes) -> dict[str, str]:
        end = payload.find(b"\n\n")
        end = len(payload) if end < 0 else end
        block = b"\n" + payload[:end] + b"\n"
        found: dict[str, str] = {}
        for name, marker in wanted:
            start = block.find(marker)
            if start >= 0:
                start += len(marker)
                found[name] = url_decode(block[start : block.index(b"\n", start)].decode("utf-8", errors="replace"))
        return found

    return pick
