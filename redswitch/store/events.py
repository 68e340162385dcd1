"""The protocol's events, built once, here, in pure Python.

Every event Redswitch publishes on a call's channel (and keeps in its user's history) is made by one of these
functions and encoded by :func:`encode`; the Lua scripts receive the encoded text and never assemble JSON, so
the single-Redis and the cluster paths publish the very same bytes. The layout of each event is in
docs/protocol.md; the contract's fields come first, Redswitch's extensions after them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

JsonDict = Mapping[str, Any]

#: What the original's history held: the events it published about the call. With ``HISTORY_EVENTS=call`` (the
#: default) the others (``ack``, ``error``, ``queued``) are published on the channel only.
CALL_EVENTS = frozenset({"call-start", "answer-event", "hangup-event", "failure"})

#: What :func:`queued_template` puts where the position goes (a Lua ``string.format`` placeholder).
POSITION = "%d"


def encode(event: JsonDict) -> str:
    """The wire form of an event: JSON with the original's separators (``", "`` and ``": "``)."""
    return json.dumps(event, separators=(", ", ": "))


def call_start(dial_id: str) -> dict[str, Any]:
    return {"type": "call-start", "dial_id": dial_id}


def answer(side: str, reason: str = "", *, transfer: bool = False) -> dict[str, Any]:
    """``answer-event``; ``reason`` marks one reconstructed by the reconciler rather than seen live, ``transfer``
    the answer of a transfer's new leg, bridged in as the side."""
    event: dict[str, Any] = {"type": "answer-event", "side": side, **({"reason": reason} if reason else {})}
    if transfer:
        event["transfer"] = True
    return event


def early_media(side: str) -> dict[str, Any]:
    """``early-media-event``: the side's far end sends early media (FreeSWITCH's CHANNEL_PROGRESS_MEDIA: a 183 with
    a ringback tone or an announcement) before it answers, or refuses."""
    return {"type": "early-media-event", "side": side}


def record(state: str, file: str, side: str, cause: str = "") -> dict[str, Any]:
    """``record-event``: a recording of the call started or stopped (FreeSWITCH's RECORD_START / RECORD_STOP);
    ``file`` is its name in RECORDINGS_DIR, ``side`` the side whose channel is recorded."""
    event: dict[str, Any] = {"type": "record-event", "state": state, "file": file, "side": side}
    if cause:
        event["cause"] = cause
    return event


def hangup(
    side: str, cause: str, *, sip_code: str = "", retryable: bool | None = None, reason: str = ""
) -> dict[str, Any]:
    """``hangup-event`` with FreeSWITCH's cause; for a side that never answered, the SIP code the carrier gave
    and whether the cause is worth another attempt (extensions beside the contract's ``cause``)."""
    event: dict[str, Any] = {"type": "hangup-event", "side": side, "cause": cause}
    if sip_code:
        event["sip_code"] = sip_code
    if retryable is not None:
        event["retryable"] = retryable
    if reason:
        event["reason"] = reason
    return event


def failure(cause: str, *, reason: str = "", retryable: bool | None = None) -> dict[str, Any]:
    """``failure``: FreeSWITCH never attempted the call (or the job was refused); ``reason`` says why in words."""
    event: dict[str, Any] = {"type": "failure", "cause": cause, **({"reason": reason} if reason else {})}
    if retryable is not None:
        event["retryable"] = retryable
    return event


def queued(reason: str, position: int) -> dict[str, Any]:
    """``queued``: admission holds the call back (``reason`` names the limit), ``position`` in its line."""
    return {"type": "queued", "reason": reason, "position": position}


def queued_template(reason: str) -> str:
    """The encoded ``queued`` event with :data:`POSITION` for the position, which only the script knows."""
    marker = -7_000_001  # no real position: replaced below by the placeholder
    return encode(queued(reason, marker)).replace(str(marker), POSITION)


def ack(kind: str) -> dict[str, Any]:
    return {"type": "ack", "event": kind}


def error(kind: str, reason: str) -> dict[str, Any]:
    return {"type": "error", "event": kind, "reason": reason}
