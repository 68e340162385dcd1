"""The ``asp_call`` actor: originate a click-to-call without holding a worker thread for the ring time.

``bgapi originate`` returns as soon as FreeSWITCH has the job; the outcome arrives as events, which the
listener process turns into ``answer-event``/``hangup-event``/``failure``. The actor's only job is to hand
the call over exactly once, even when its message is delivered twice (a worker killed mid-job):

1. ``claim``: write the call record (fresh leg uuids, Job-UUID, state ``sending``) and announce
   ``call-start`` in one transaction — only the first delivery wins;
2. ``bgapi`` the originate with those uuids;
3. mark the record ``sent``.

A redelivered message finds the record: ``sent`` means done; ``sending`` means a worker died around the
bgapi, so it asks FreeSWITCH whether side 0 exists and whether the listener saw any of the call's events,
and only re-sends (with the same uuids) when neither is true.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from redswitch import originate
from redswitch.actors import context
from redswitch.errors import EslCommandError, EslConnectionError, PayloadError
from redswitch.messages import ID_PATTERN, AspCall, job_from_dict
from redswitch.protocol import commands
from redswitch.state import Keys

logger = logging.getLogger(__name__)

MAX_RETRIES = 8


@dramatiq.actor(
    queue_name="redswitch-calls",
    max_retries=MAX_RETRIES,
    min_backoff=250,
    max_backoff=30_000,
    throws=(PayloadError,),
    time_limit=120_000,
)
def asp_call(job: dict[str, Any]) -> None:
    """Originate the click-to-call described by ``job`` (an ``asp-call`` object, see docs/protocol.md)."""
    try:
        call = job_from_dict(job)
    except PayloadError as exc:
        _report_invalid(job, exc)
        raise
    created, record = _claim(call)
    if not created and (record.get("state") == "sent" or _already_attempted(record)):
        logger.info("dial_id=%s already handed to FreeSWITCH; not dialling again", call.dial_id)
        _mark_sent(call.dial_id)
        return
    _send(call, record)


def _claim(call: AspCall) -> tuple[bool, dict[str, str]]:
    """Create the call record (and announce call-start) on the first delivery; return it either way."""
    fresh = {
        "org_id": call.org_id,
        "user_id": call.user_id,
        "call_provider": call.call_provider,
        "uuid0": str(uuid.uuid4()),
        "uuid1": str(uuid.uuid4()),
        "job_uuid": str(uuid.uuid4()),
        "state": "sending",
    }
    return context.call_state().claim_call(call.dial_id, call.org_id, call.user_id, fresh)


def _already_attempted(record: dict[str, str]) -> bool:
    """After a crash: did FreeSWITCH already get this call? (the listener saw an event, or side 0 is alive)"""
    if record.get("seen") == "1":
        return True
    reply = context.esl_pool().client().api(commands.uuid_exists(record["uuid0"]))
    return reply.strip() == "true"


def _send(call: AspCall, record: dict[str, str]) -> None:
    settings = context.settings()
    command = originate.click_to_call(settings, call, record["uuid0"], record["uuid1"])
    try:
        context.esl_pool().client().bgapi(command, record["job_uuid"])
    except EslConnectionError as exc:
        if _retries() >= MAX_RETRIES:
            context.call_state().fail(call.dial_id, call.org_id, call.user_id, "ESL_UNREACHABLE", reason=str(exc))
            logger.error("dial_id=%s failed: FreeSWITCH unreachable after %d retries", call.dial_id, MAX_RETRIES)
            return
        logger.warning("dial_id=%s FreeSWITCH unreachable, will retry: %s", call.dial_id, exc)
        raise
    except EslCommandError as exc:
        context.call_state().fail(call.dial_id, call.org_id, call.user_id, exc.reply)
        return
    _mark_sent(call.dial_id)
    logger.info("dial_id=%s originate handed to FreeSWITCH (job %s)", call.dial_id, record["job_uuid"])


def _mark_sent(dial_id: str) -> None:
    context.redis_client().hset(Keys.call(dial_id), "state", "sent")


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _report_invalid(job: Any, exc: PayloadError) -> None:
    """A message enqueued directly (not through the bridge) can be invalid: tell its channel if we can."""
    dial_id = job.get("dial_id") if isinstance(job, dict) else None
    if isinstance(dial_id, str) and ID_PATTERN.fullmatch(dial_id):
        context.call_state().fail(dial_id, None, None, "INVALID_JOB", reason=exc.reason)
    logger.warning("invalid asp-call message: %s", exc.reason)
