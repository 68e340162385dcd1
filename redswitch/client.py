"""The client API for Python services: enqueue Redswitch work directly, without the legacy list.

Messages go to the same actors the bridge feeds, through the configured Dramatiq broker, so they are durable
(Redis- or RabbitMQ-backed) and validated the same way. Importing this module sets up the broker from the
environment, as the worker does.

    from redswitch.client import send_asp_call
    send_asp_call({"type": "asp-call", "call_provider": "gw", "caller_number": "15105625882", ...})
    send_control("talkiq_dial_id", {"type": "barge", "phone_number": "15105625882", "caller_id": "7777777777"})
"""

from __future__ import annotations

import json
from typing import Any

from redswitch import auth
from redswitch.config import Settings
from redswitch.errors import PayloadError
from redswitch.messages import ID_PATTERN, job_from_dict, parse_control


def send_asp_call(job: dict[str, Any]) -> str:
    """Validate ``job`` (raises PayloadError with a reason) and enqueue it; return the Dramatiq message id."""
    call = job_from_dict(job)
    from redswitch.actors import asp_call

    return str(asp_call.send(call.to_dict()).message_id)


def send_control(dial_id: str, message: dict[str, Any]) -> str:
    """Validate a control message for call ``dial_id`` and enqueue it durably (no pub/sub); return its id.

    The ack or error is published on the call's channel, as for messages sent through pub/sub. When
    ``CONTROL_SECRET`` is set the message is signed (``ts`` now, ``sig``); add ``"by"`` to name the sender.
    """
    if not ID_PATTERN.fullmatch(dial_id):
        raise PayloadError(f"dial_id must be 1 to 64 letters, digits, _ or -: {dial_id[:40]!r}")
    control = parse_control(json.dumps(message))
    secret = Settings.from_env().control_secret
    payload = auth.sign(message, secret) if secret else control.to_dict()
    from redswitch.actors import CONTROL_ACTORS

    return str(CONTROL_ACTORS[control.type].send(dial_id, payload).message_id)
