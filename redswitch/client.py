"""The client API for Python services: enqueue Redswitch work directly, without the legacy list.

Messages go to the same actors the bridge feeds, through the configured Dramatiq broker, so they are durable
(Redis- or RabbitMQ-backed) and validated the same way. Importing this module sets up the broker from the
environment, as the worker does.

    from redswitch.client import send_asp_call
    send_asp_call({"type": "asp-call", "call_provider": "gw", "caller_number": "15105625882", ...})
"""

from __future__ import annotations

from typing import Any

from redswitch.messages import job_from_dict


def send_asp_call(job: dict[str, Any]) -> str:
    """Validate ``job`` (raises PayloadError with a reason) and enqueue it; return the Dramatiq message id."""
    call = job_from_dict(job)
    from redswitch.actors import asp_call

    return str(asp_call.send(call.to_dict()).message_id)
