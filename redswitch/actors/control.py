"""Call-control actors: hangup, barge, whisper, mute, threeway, unthreeway (keyed by ``dial_id``).

Each is answered on the call's channel with ``{"type": "ack", "event": <type>}`` once FreeSWITCH accepted
the command, or with ``{"type": "error", "event": <type>, "reason": ...}`` when it cannot apply (no such
active call, no barger, a second barge) — and then nothing changed.

Barging uses FreeSWITCH's ``eavesdrop`` on side 0's channel; the barger's leg is side ``"2"``. Its modes are
switched with eavesdrop's DTMF controls, queued on the barger's own channel with ``uuid_recv_dtmf``:
``2`` talk to the eavesdropped channel (side 0: whisper), ``3`` talk to both (three-way), ``0`` listen only.
The barger's current and previous modes live in the call record, so ``unthreeway`` can go back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable

import dramatiq

from redswitch import metrics, originate
from redswitch.actors import context
from redswitch.errors import EslCommandError, PayloadError
from redswitch.messages import Control, parse_control
from redswitch.protocol import commands
from redswitch.store import events

logger = logging.getLogger(__name__)

QUEUE = "redswitch-control"
#: eavesdrop DTMF control per barger mode (FreeSWITCH switch_ivr_async.c).
MODE_DIGITS = {"listen": "0", "whisper": "2", "threeway": "3"}


class CannotApply(Exception):
    """The command does not apply to the call as it is; the reason goes back to the sender."""


@dataclasses.dataclass(frozen=True)
class Done:
    """A command FreeSWITCH accepted: the call record it was run against, and the fields to record with the ack."""

    record: dict[str, str]
    fields: dict[str, str] = dataclasses.field(default_factory=dict)


def _control_actor(name: str, fn: Callable[[str, Control], Done]) -> dramatiq.Actor[[str, dict[str, str]], None]:
    """Wrap ``fn(dial_id, control)`` as actor ``name`` that validates, runs, and always answers ack or error.

    The ack and the record's new fields go out in one transaction, with the record already read for the command.
    """

    def run(dial_id: str, message: dict[str, str]) -> None:
        kind = str(message.get("type", name))
        try:
            control = parse_control(json.dumps(message))
            done = fn(dial_id, control)
        except (CannotApply, PayloadError, EslCommandError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else str(exc)
            logger.info("dial_id=%s %s refused: %s", dial_id, kind, reason)
            context.store().reply(dial_id, events.error(kind, reason))
            metrics.CONTROL_COMMANDS.labels(name, "error").inc()
            return
        context.store().reply(dial_id, events.ack(kind), done.record, **done.fields)
        metrics.CONTROL_COMMANDS.labels(name, "ack").inc()
        logger.info("dial_id=%s %s done", dial_id, kind)

    decorate = dramatiq.actor(
        actor_name=name, queue_name=QUEUE, max_retries=3, min_backoff=100, max_backoff=2000, time_limit=30_000
    )
    return decorate(run)


def _active_record(dial_id: str) -> dict[str, str]:
    record = context.store().active_call_record(dial_id)
    if record is None:
        raise CannotApply(f"no active call with dial_id {dial_id!r}")
    return record


def _api(record: dict[str, str], command: str) -> str:
    """Run ``command`` on the FreeSWITCH node that holds the call."""
    return context.esl_pool(record.get("node", "")).client().api(command)


def _hangup(dial_id: str, control: Control) -> Done:
    record = _active_record(dial_id)
    for side in ("uuid0", "uuid1"):
        try:
            _api(record, commands.uuid_kill(record[side]))
            return Done(record)
        except EslCommandError:
            continue  # that side is already gone; the other may still be up
    raise CannotApply("FreeSWITCH has no channel of this call any more")


def _barge(dial_id: str, control: Control) -> Done:
    record = _active_record(dial_id)
    if record.get("barger_uuid"):
        raise CannotApply("a barge is already up on this call")
    settings = context.settings()
    barger_uuid = str(uuid.uuid4())
    if not context.store().claim_barger(dial_id, barger_uuid):
        raise CannotApply("a barge is already up on this call")
    ids = {
        originate.VAR_DIAL_ID: dial_id,
        originate.VAR_ORG_ID: record["org_id"],
        originate.VAR_USER_ID: record["user_id"],
    }
    if control.is_sip_address:
        endpoint = originate.sip_endpoint(settings, control.phone_number)
    else:
        endpoint = originate.endpoint(settings, record.get("call_provider", ""), control.phone_number)
    leg = originate.Leg("2", control.phone_number, control.caller_id, barger_uuid)
    variables = originate.leg_variables(settings, ids, leg)
    command = commands.originate(commands.dial_string(endpoint, variables), commands.app("eavesdrop", record["uuid0"]))
    try:
        context.esl_pool(record.get("node", "")).client().bgapi(command, str(uuid.uuid4()))
    except Exception:
        context.store().clear_call_fields(dial_id, "barger_uuid")
        raise
    return Done(record, {"barger_mode": "listen", "barger_prev_mode": "listen"})


def _barger_record(dial_id: str) -> dict[str, str]:
    """The call's record, if it has a barger who answered (mode changes need eavesdrop running)."""
    record = _active_record(dial_id)
    if not record.get("barger_uuid"):
        raise CannotApply("no barger on this call")
    if record.get("barger_answered") != "1":
        raise CannotApply("the barger has not answered yet")
    return record


def _set_mode(dial_id: str, mode: str, record: dict[str, str] | None = None) -> Done:
    record = record or _barger_record(dial_id)
    _api(record, commands.uuid_recv_dtmf(record["barger_uuid"], MODE_DIGITS[mode]))
    return Done(record, {"barger_mode": mode, "barger_prev_mode": record.get("barger_mode", "listen")})


def _whisper(dial_id: str, control: Control) -> Done:
    return _set_mode(dial_id, "whisper")


def _mute(dial_id: str, control: Control) -> Done:
    return _set_mode(dial_id, "listen")


def _threeway(dial_id: str, control: Control) -> Done:
    return _set_mode(dial_id, "threeway")


def _unthreeway(dial_id: str, control: Control) -> Done:
    record = _barger_record(dial_id)
    if record.get("barger_mode") != "threeway":
        raise CannotApply("the barger is not in threeway")
    return _set_mode(dial_id, record.get("barger_prev_mode", "listen"), record)


hangup = _control_actor("hangup", _hangup)
barge = _control_actor("barge", _barge)
whisper = _control_actor("whisper", _whisper)
mute = _control_actor("mute", _mute)
threeway = _control_actor("threeway", _threeway)
unthreeway = _control_actor("unthreeway", _unthreeway)

ACTORS = {actor.actor_name: actor for actor in (hangup, barge, whisper, mute, threeway, unthreeway)}
