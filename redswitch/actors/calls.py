"""The ``asp_call`` actor: originate a click-to-call without holding a worker thread for the ring time.

``bgapi originate`` returns as soon as FreeSWITCH has the job; the outcome arrives as events, which the
listener process turns into ``answer-event``/``hangup-event``/``failure``. The actor's job is to hand the
call over exactly once, even when its message runs twice (a retry, or a redelivery after a worker was
killed), because dialling a person twice is the one thing it must never do. The call record moves through:

* ``dialling``: written with fresh leg uuids and a Job-UUID, atomically with ``call-start``, just before the
  first bgapi goes out — from here on FreeSWITCH may have the call;
* ``claimed``: the bgapi could not even be written (connection refused): FreeSWITCH surely lacks the call;
* ``sent``: FreeSWITCH acknowledged the bgapi;
* ``cancelled``: a hangup came while the call waited in ``claimed`` (admission): it is never dialled.

A later run of the same message dials again at once only from ``claimed``. From ``dialling`` it first looks for
evidence that FreeSWITCH got the call (the listener saw a channel or the job's result, or side 0 exists);
without any, it waits ``REDIAL_GUARD`` seconds after the attempt before dialling again. (A reused
``origination_uuid`` does not protect: FreeSWITCH logs "set UUID FAILED" and dials with a new uuid.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from redswitch import admission, metrics, originate
from redswitch.actors import context
from redswitch.broker.ack_writes import write_with_ack
from redswitch.config import EslNode
from redswitch.errors import EslCommandError, EslConnectionError, EslUncertainError, PayloadError
from redswitch.messages import ID_PATTERN, AspCall, job_from_dict
from redswitch.placement import Nodes
from redswitch.protocol import commands
from redswitch.store import events

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
    store = context.store()
    created, record = _claim(call)
    if admission.RETRY_KEY in job:  # the listener's re-send of an originate the switch throttled
        taken = admission.take_retry(store, call.dial_id, job)
        if taken is None:
            return
        record = taken
    elif not created and not _may_dial(call.dial_id, record):
        return
    if not admission.admit(store, context.limits(), call, record.get("node", ""), lambda ms: _send_again(job, ms)):
        return  # deferred by a limit: the message was sent again with a delay
    if not created and not admission.begin_dial(store, call.dial_id, record):
        return  # another copy of this message started the attempt
    _send(call, record)


def _send_again(job: dict[str, Any], delay_ms: int) -> None:
    """Defer the job: a fresh message (not a retry, so deferrals never use up the retries of real failures)."""
    asp_call.send_with_options(args=(job,), delay=delay_ms)


def _claim(call: AspCall) -> tuple[bool, dict[str, str]]:
    """Create the call record (and announce call-start) on the first run; return it either way."""
    fresh = {
        "org_id": call.org_id,
        "user_id": call.user_id,
        "call_provider": call.call_provider,
        "uuid0": str(uuid.uuid4()),
        "uuid1": str(uuid.uuid4()),
        "job_uuid": str(uuid.uuid4()),
        "node": context.nodes().in_order()[0].name,
        # The first run dials right away: recorded as dialling from the start, one round trip fewer.
        "state": "dialling",
        "dialling_since": f"{time.time():.3f}",
        "job": admission.job_field(call),  # the listener sends a throttled originate again
    }
    return context.store().claim(call.dial_id, call.org_id, call.user_id, fresh)


def _may_dial(dial_id: str, record: dict[str, str]) -> bool:
    """A second run of the message: dial only when FreeSWITCH surely never got the call.

    From ``dialling`` without any trace of the call, it waits REDIAL_GUARD seconds after the attempt; then it dials
    again only if the attempt never wrote its originate (a worker killed between the record and the ``bgapi``). An
    attempt whose ``bgapi`` was written but whose reply never came (``uncertain``) is never dialled again: a
    switch too busy to reply in ESL_TIMEOUT runs the originate all the same, only later, and the person would be
    rung twice. That call is left to the listener and the reconciler, which end it if FreeSWITCH never has it.
    """
    state = record.get("state")
    if state == "claimed":
        return True
    if state == "cancelled":
        logger.info("dial_id=%s cancelled by a hangup before it was dialled; not dialling", dial_id)
        return False
    if state == "dialling" and not _evidence_of_call(record):
        waited = time.time() - float(record.get("dialling_since", "0"))
        guard = context.settings().redial_guard
        if waited < guard:
            raise dramatiq.Retry(delay=int((guard - waited) * 1000) + 100)
        if record.get("uncertain") != "1":
            logger.warning("dial_id=%s no trace of the earlier attempt after %.1fs; dialling again", dial_id, waited)
            return True
        logger.warning(
            "dial_id=%s FreeSWITCH took the originate %.1fs ago without replying and shows no trace yet; "
            "not dialling again (the listener and the reconciler follow the call)",
            dial_id,
            waited,
        )
    else:
        logger.info("dial_id=%s already handed to FreeSWITCH; not dialling again", dial_id)
    context.store().sent(dial_id, record.get("node", "")).run(context.redis_client())
    return False


def _evidence_of_call(record: dict[str, str]) -> bool:
    """Did FreeSWITCH get this call? The listener saw a channel or the job's result, or side 0 is alive."""
    if record.get("seen") == "1" or record.get("job_result"):
        return True
    reply = context.esl_pool(record.get("node", "")).client().api(commands.uuid_exists(record["uuid0"]))
    return reply.strip() == "true"


def _send(call: AspCall, record: dict[str, str]) -> None:
    settings = context.settings()
    command = originate.click_to_call(settings, call, record["uuid0"], record["uuid1"])
    try:
        node = _hand_over(call.dial_id, record, command)
    except EslUncertainError as exc:
        # written, but not answered: FreeSWITCH may run it yet, so this attempt is never repeated (see _may_dial)
        context.store().update_call(call.dial_id, uncertain="1")
        logger.warning("dial_id=%s no reply to the originate (%s); it will not be sent again", call.dial_id, exc)
        raise
    except EslConnectionError as exc:
        _set_state(call.dial_id, "claimed")  # nothing was written: FreeSWITCH surely does not have it
        if _retries() >= MAX_RETRIES:
            _fail(call, record, events.failure("ESL_UNREACHABLE", reason=str(exc)))
            logger.error("dial_id=%s failed: FreeSWITCH unreachable after %d retries", call.dial_id, MAX_RETRIES)
            return
        logger.warning("dial_id=%s FreeSWITCH unreachable, will retry: %s", call.dial_id, exc)
        raise
    except EslCommandError as exc:
        _fail(call, record, events.failure(exc.reply))
        _set_state(call.dial_id, "sent")
        return
    write_with_ack(context.redis_client(), context.store().sent(call.dial_id, node))
    _count_originate()
    logger.info("dial_id=%s originate handed to FreeSWITCH %s (job %s)", call.dial_id, node, record["job_uuid"])


def _hand_over(dial_id: str, record: dict[str, str], command: str) -> str:
    """bgapi the originate on the record's node or, when a node refuses to connect, on the next; return the node.

    Moving on is safe only because a refused connection never carried the command; a command that went out
    unanswered (EslUncertainError) is not tried elsewhere.
    """
    nodes = context.nodes()
    preferred = [node for node in nodes.all if node.name == record.get("node")]
    failure: EslConnectionError | None = None
    for node in _then_the_rest(preferred, nodes):
        if node.name != record.get("node"):
            context.store().update_call(dial_id, node=node.name)
            record["node"] = node.name
        try:
            context.esl_pool(node.name).client().bgapi(command, record["job_uuid"])
            return node.name
        except EslUncertainError:
            raise
        except EslConnectionError as exc:
            logger.warning("dial_id=%s FreeSWITCH node %s refused: %s", dial_id, node.name, exc)
            nodes.mark_down(node)
            failure = exc
    assert failure is not None
    raise failure


def _then_the_rest(preferred: list[EslNode], nodes: Nodes) -> Iterator[EslNode]:
    """The record's node, then — only if it refused — the others in placement order (one look-up, if any)."""
    yield from preferred
    yield from (node for node in nodes.in_order() if node not in preferred)


def _count_originate() -> None:
    """Count the originate and its delay since the job was enqueued (Dramatiq stamps messages in ms)."""
    metrics.CALLS_ORIGINATED.inc()
    message = CurrentMessage.get_current_message()
    if message is not None:
        metrics.JOB_TO_ORIGINATE.observe(metrics.seconds_since(message.message_timestamp / 1000))


def _fail(call: AspCall, record: dict[str, str], event: dict[str, Any]) -> None:
    """Announce ``failure`` and end the call (it leaves the node that was to hold it)."""
    context.store().fail(call.dial_id, call.org_id, call.user_id, event, node=record.get("node", ""))


def _set_state(dial_id: str, state: str, **extra: str) -> None:
    context.store().update_call(dial_id, state=state, **extra)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _report_invalid(job: Any, exc: PayloadError) -> None:
    """A message enqueued directly (not through the bridge) can be invalid: tell its channel if we can."""
    dial_id = job.get("dial_id") if isinstance(job, dict) else None
    if isinstance(dial_id, str) and ID_PATTERN.fullmatch(dial_id):
        context.store().fail(dial_id, None, None, events.failure("INVALID_JOB", reason=exc.reason))
    logger.warning("dial_id=%s invalid asp-call message: %s", dial_id, exc.reason)
