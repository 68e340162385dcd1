"""Signed control messages: who may change a live call when ``CONTROL_SECRET`` is set.

A signed message carries ``ts`` (Unix seconds, an integer) and ``sig``: the HMAC-SHA256, keyed with the secret, of
the message's canonical JSON, in lower-case hex. The canonical JSON is the message *as validated*
(:meth:`~redswitch.messages.Control.signed_fields`: its type, the fields that type reads, ``by``, ``ts`` and
``nonce``; fields
Redswitch ignores are not covered), with keys sorted, no white space (``","`` and ``":"``) and non-ASCII escaped:
``json.dumps(fields, sort_keys=True, separators=(",", ":"))``.

The worker checks a message in its control actor, where one execution takes it (however many relays forwarded it):
unsigned, badly signed, or with a ``ts`` further than ``CONTROL_SIG_WINDOW`` seconds from now, it is refused; a
signature already used within the window is refused too (a replay), remembered in Redis for twice the window.
Two identical messages signed in the same second would carry the same signature, so :func:`sign` adds a random
``nonce`` (1 to 64 letters, digits, ``_`` or ``-``) unless the message has one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from redswitch.messages import Control, parse_control

#: The ``reason`` of the ``error`` answering every refused message (the details go to the worker's log only).
UNAUTHORIZED = "unauthorized"


class Unauthorized(Exception):
    """The message may not be executed; ``str()`` says why, for the log."""


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature(secret: str, fields: dict[str, Any]) -> str:
    return hmac.new(secret.encode(), canonical(fields), hashlib.sha256).hexdigest()


def sign(message: dict[str, Any], secret: str, now: float | None = None) -> dict[str, Any]:
    """``message`` validated, stamped with ``ts`` (now, unless it has one) and signed with ``secret``.

    Raises PayloadError when the message is not a valid control message (it could not be signed as validated).
    """
    stamped = {k: v for k, v in message.items() if k != "sig"}
    stamped.setdefault("ts", int(time.time() if now is None else now))
    stamped.setdefault("nonce", secrets.token_hex(8))
    fields = parse_control(json.dumps(stamped)).signed_fields()
    return {**fields, "sig": signature(secret, fields)}


def outgoing(message: dict[str, Any], secret: str) -> dict[str, Any]:
    """A control message as a sender sends it: validated (PayloadError with the reason), and signed when ``secret``
    (``CONTROL_SECRET``) is set. The Python client, ``redswitch send`` and the dashboard send through here."""
    return sign(message, secret) if secret else parse_control(json.dumps(message)).to_dict()


def check(control: Control, secret: str, window: int, now: float | None = None) -> None:
    """Raise Unauthorized unless ``control`` is signed with ``secret`` and its ``ts`` is within ``window`` seconds."""
    if not control.sig or control.ts is None:
        raise Unauthorized("unsigned")
    if not hmac.compare_digest(control.sig, signature(secret, control.signed_fields())):
        raise Unauthorized("bad signature")
    skew = (time.time() if now is None else now) - control.ts
    if abs(skew) > window:
        raise Unauthorized(f"stale: signed {skew:.0f}s ago, more than the {window}s window")
