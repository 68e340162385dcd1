"""Call-control actors: hangup, barge, whisper, mute, threeway, unthreeway, coach-callee, send-dtmf, hold, unhold,
record, stop-record, play, stop-play, transfer (keyed by ``dial_id``).

Each is answered on the call's channel with ``{"type": "ack", "event": <type>}`` once FreeSWITCH accepted
the command, or with ``{"type": "error", "event": <type>, "reason": ...}`` when it cannot apply (no such
active call, no barger, a second barge) — and then nothing changed.

Barging uses FreeSWITCH's ``eavesdrop`` on side 0's channel; the barger's leg is side ``"2"``. Its modes are
switched with eavesdrop's DTMF controls, queued on the barger's own channel with ``uuid_recv_dtmf``:
``2`` talk to the eavesdropped channel (side 0: whisper), ``1`` talk to its partner (side 1: coach-callee),
``3`` talk to both (three-way), ``0`` listen only.

When ``CONTROL_SECRET`` is set, a message of a verb that needs a signature is checked here (``redswitch/auth.py``),
where one execution takes it, before anything else: a refusal is answered ``{"type": "error", "reason":
"unauthorized"}``.
The barger's current and previous modes live in the call record, so ``unthreeway`` can go back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from redswitch import auth, metrics, originate
from redswitch.actors import context
from redswitch.errors import EslCommandError, EslConnectionError, EslUncertainError, PayloadError
from redswitch.messages import (
    CONTROL_ID,
    CONTROL_TAKER,
    CONTROL_UNTIL,
    CONTROL_WINDOW_MS,
    TRANSFER_MAX_RING,
    Control,
    parse_control,
)
from redswitch.protocol import commands, reported_cause
from redswitch.store import events

logger = logging.getLogger(__name__)

QUEUE = "redswitch-control"
#: eavesdrop DTMF control per barger mode (FreeSWITCH switch_ivr_async.c).
MODE_DIGITS = {"listen": "0", "coach": "1", "whisper": "2", "threeway": "3"}


#: The cause of side 0's hangup-event when a hangup cancels a call never dialled (FreeSWITCH's own name for it).
CANCELLED_CAUSE = "ORIGINATOR_CANCEL"
#: A hangup of a call whose originate is on its way waits this long for side 0 to exist, asking every few ms.
DIALLING_PATIENCE = 5.0
DIALLING_POLL_MS = 50
#: The hangup-event of side 0 when a hangup cancels a call admission held back (it was never dialled).
CANCELLED_REASON = "cancelled by a hangup before it was dialled"
#: Record states of a call that was not dialled yet (held back by admission, or a connection refused).
NOT_STARTED = ("claimed", "cancelled")


class CannotApply(Exception):
    """The command does not apply to the call as it is; the reason goes back to the sender, with ``fields`` (a
    failed transfer's ``cause``) in its ``error``."""

    def __init__(self, reason: str, **fields: str) -> None:
        super().__init__(reason)
        self.fields = fields


@dataclasses.dataclass(frozen=True)
class Done:
    """A command FreeSWITCH accepted: the call record it was run against, and the fields to record with the ack."""

    record: dict[str, str]
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Fields the ack carries besides its type and event (the file a recording goes to).
    ack: dict[str, str] = dataclasses.field(default_factory=dict)


#: A command: (dial_id, the message validated, the call record, the message as received) → Done, or None when it
#: was answered already or will be (the hangup of a call being dialled sends itself again).
Command = Callable[[str, Control, dict[str, str], dict[str, Any]], "Done | None"]


class _TakenElsewhere(Exception):
    """Another execution took this control message (several relays forwarded it): nothing to do."""


def _control_actor(
    name: str, fn: Command, time_limit: int = 30_000, max_retries: int = 3
) -> dramatiq.Actor[[str, dict[str, Any]], None]:
    """Wrap ``fn`` as actor ``name`` that takes the message, validates, runs, and always answers ack or error.

    A message the relays forwarded names its entry in the call's control log (``_control_id``): it is taken for
    this execution in the round trip that reads the call record, and dropped if another execution took it. The ack
    and the record's new fields go out in one transaction, with the record already read for the command.
    """

    def run(dial_id: str, message: dict[str, Any]) -> None:
        kind = str(message.get("type", name))
        try:
            record = _take(dial_id, message)
        except _TakenElsewhere:
            logger.info("dial_id=%s control_id=%s %s executed elsewhere; dropped", dial_id, message[CONTROL_ID], kind)
            return
        by = ""  # the sender, logged once validated (a raw value could forge log lines)
        try:
            control = parse_control(json.dumps(message))
            by = control.by
            _authorize(control, message)
            if record is None:
                raise CannotApply(f"no active call with dial_id {dial_id!r}")
            if name != "hangup" and record.get("state") in NOT_STARTED:
                raise CannotApply("not started")
            done = fn(dial_id, control, record, message)
        except auth.Unauthorized as exc:
            logger.warning("dial_id=%s by=%s %s unauthorized: %s", dial_id, by or "-", kind, exc)
            context.store().reply(dial_id, events.error(kind, auth.UNAUTHORIZED))
            metrics.CONTROL_COMMANDS.labels(name, "unauthorized").inc()
            return
        except (CannotApply, PayloadError, EslCommandError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else str(exc)
            logger.info("dial_id=%s by=%s %s refused: %s", dial_id, by or "-", kind, reason)
            extra = exc.fields if isinstance(exc, CannotApply) else {}
            context.store().reply(dial_id, {**events.error(kind, reason), **extra})
            metrics.CONTROL_COMMANDS.labels(name, "error").inc()
            return
        if done is None:
            return
        context.store().reply(dial_id, {**events.ack(kind), **done.ack}, done.record, **done.fields)
        metrics.CONTROL_COMMANDS.labels(name, "ack").inc()
        logger.info("dial_id=%s by=%s %s done", dial_id, by or "-", kind)

    decorate = dramatiq.actor(
        actor_name=name,
        queue_name=QUEUE,
        max_retries=max_retries,
        min_backoff=100,
        max_backoff=2000,
        time_limit=time_limit,
    )
    return decorate(run)


def _authorize(control: Control, message: dict[str, Any]) -> None:
    """Raise auth.Unauthorized unless the message may run: no secret, a verb that needs no signature, or signed,
    fresh and not used by another execution (a replay)."""
    settings = context.settings()
    if control.type not in settings.signed_verbs():
        return
    auth.check(control, settings.control_secret, settings.control_sig_window)
    if not context.store().use_signature(control.sig, _taker(message), 2 * settings.control_sig_window * 1000):
        raise auth.Unauthorized("replayed signature")


def _taker(message: dict[str, Any]) -> str:
    """Who executes: the Dramatiq message that first took the control message (a retry is the same message)."""
    taker = message.get(CONTROL_TAKER)
    if isinstance(taker, str) and taker:
        return taker
    current = CurrentMessage.get_current_message()
    return current.message_id if current is not None else str(uuid.uuid4())


def _take(dial_id: str, message: dict[str, Any]) -> dict[str, str] | None:
    """The call record if the call is active (else None), after taking the message for this execution."""
    control_id = message.get(CONTROL_ID)
    if not isinstance(control_id, str) or not control_id:
        return context.store().active_call_record(dial_id)  # sent directly (redswitch.client): delivered once
    record, mine = context.store().control_record(dial_id, control_id, _taker(message), CONTROL_WINDOW_MS)
    if not mine:
        raise _TakenElsewhere
    return record


def _api(record: dict[str, str], command: str) -> str:
    """Run ``command`` on the FreeSWITCH node that holds the call."""
    return context.esl_pool(record.get("node", "")).client().api(command)


def _hangup(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done | None:
    """Hang up side 0 (or side 1 if side 0 is gone). A call admission holds back is cancelled instead; a call whose
    originate is on its way is waited for (its side 0 does not exist yet)."""
    store = context.store()
    if record.get("state") == "claimed":
        hangup_event = events.hangup("0", CANCELLED_CAUSE, reason=CANCELLED_REASON)
        if store.cancel(dial_id, record, events.ack(control.type), hangup_event):
            logger.info("dial_id=%s cancelled before it was dialled", dial_id)
            metrics.CONTROL_COMMANDS.labels("hangup", "ack").inc()
            return None
        found = store.active_call_record(dial_id)  # it left 'claimed' meanwhile: dialled, or ended
        if found is None:
            raise CannotApply(f"no active call with dial_id {dial_id!r}")
        record = found
    for side in ("uuid0", "uuid1"):
        try:
            _api(record, commands.uuid_kill(record[side]))
            return Done(record)
        except EslCommandError:
            continue  # that side is already gone (or not there yet); the other may still be up
    if record.get("seen") != "1" and record.get("state") in ("claimed", "dialling", "sent"):
        until = message.get(CONTROL_UNTIL)
        deadline = float(until) if isinstance(until, int | float) else time.time() + DIALLING_PATIENCE
        if time.time() < deadline:  # side 0 is being dialled: ask again in a moment
            again = {**message, CONTROL_UNTIL: deadline, CONTROL_TAKER: _taker(message)}
            hangup.send_with_options(args=(dial_id, again), delay=DIALLING_POLL_MS)
            return None
    raise CannotApply("FreeSWITCH has no channel of this call any more")


def _barge(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
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


def _barger_record(record: dict[str, str]) -> dict[str, str]:
    """The call's record, if it has a barger who answered (mode changes need eavesdrop running)."""
    if not record.get("barger_uuid"):
        raise CannotApply("no barger on this call")
    if record.get("barger_answered") != "1":
        raise CannotApply("the barger has not answered yet")
    return record


def _set_mode(record: dict[str, str], mode: str) -> Done:
    _api(record, commands.uuid_recv_dtmf(record["barger_uuid"], MODE_DIGITS[mode]))
    return Done(record, {"barger_mode": mode, "barger_prev_mode": record.get("barger_mode", "listen")})


def _whisper(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    return _set_mode(_barger_record(record), "whisper")


def _mute(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    return _set_mode(_barger_record(record), "listen")


def _threeway(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    return _set_mode(_barger_record(record), "threeway")


def _coach_callee(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    return _set_mode(_barger_record(record), "coach")


def _side_uuid(record: dict[str, str], side: str) -> str:
    found = record.get(f"uuid{side}")
    if not found:
        raise CannotApply(f"side {side} has no channel")
    return found


def _send_dtmf(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    _api(record, commands.uuid_send_dtmf(_side_uuid(record, control.side), control.digits))
    return Done(record)


def _hold(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    if record.get(f"held{control.side}") == "1":
        raise CannotApply(f"side {control.side} is on hold already")
    _api(record, commands.uuid_hold(_side_uuid(record, control.side)))
    return Done(record, {f"held{control.side}": "1"})


def _unhold(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    if record.get(f"held{control.side}") != "1":
        raise CannotApply(f"side {control.side} is not on hold")
    _api(record, commands.uuid_hold(_side_uuid(record, control.side), hold=False))
    return Done(record, {f"held{control.side}": "0"})


def _record(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    """Record side 0's channel (both directions) to a file the server names: ``<RECORDINGS_DIR>/<dial_id>_<ms>.wav``;
    nothing of the message reaches the path."""
    directory = context.settings().recordings_dir
    if not directory:
        raise CannotApply("recording is off (RECORDINGS_DIR is not set)")
    if record.get("recording"):
        raise CannotApply("the call is being recorded already")
    name = f"{dial_id}_{time.time_ns() // 1_000_000}.wav"
    _api(record, commands.uuid_record(_side_uuid(record, "0"), f"{directory}/{name}"))
    return Done(record, {"recording": name}, {"file": name})


def _stop_record(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    name = record.get("recording", "")
    if not name:
        raise CannotApply("the call is not being recorded")
    directory = context.settings().recordings_dir
    _api(record, commands.uuid_record(_side_uuid(record, "0"), f"{directory}/{name}", start=False))
    return Done(record, {"recording": ""}, {"file": name})


def _sound_path(name: str) -> str:
    """``<SOUNDS_DIR>/<name>``, if that is a file right in the sounds directory as this worker sees it (a symbolic
    link leading out of it is refused)."""
    directory = context.settings().sounds_dir
    if not directory:
        raise CannotApply("playing is off (SOUNDS_DIR is not set)")
    real = os.path.realpath(os.path.join(directory, name))
    if os.path.dirname(real) != os.path.realpath(directory) or not os.path.isfile(real):
        raise CannotApply(f"no sound {name!r} in the sounds directory")
    return f"{directory}/{name}"


def _play(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    path = _sound_path(control.file)
    side, legs = ("0", "both") if control.side == "both" else (control.side, "aleg")
    _api(record, commands.uuid_broadcast(_side_uuid(record, side), path, legs))
    return Done(record, ack={"file": control.file})


def _stop_play(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    side = "0" if control.side == "both" else control.side
    _api(record, commands.uuid_break(_side_uuid(record, side), both=control.side == "both"))
    return Done(record)


#: Seconds beyond the ring time the worker waits for the originate's reply before it gives the leg up.
TRANSFER_MARGIN = 10
#: A transfer reservation older than this (ms) is a killed worker's: another transfer may take it over.
TRANSFER_STALE_MS = (TRANSFER_MAX_RING + 2 * TRANSFER_MARGIN) * 1000


def _transfer(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    """Send one side to another number: dial it through the call's gateway as a leg of that side, parked; once it
    answers, ``uuid_bridge`` the other side to it, which ends the replaced leg (``NORMAL_CLEARING``). If the new leg
    fails the call is left as it was and the transfer is answered ``error`` with the cause."""
    side, store = control.side, context.store()
    other = "1" if side == "0" else "0"
    listed = store.listed(dial_id, record["org_id"], record["user_id"])
    for needed in (side, other):
        if needed not in listed:
            raise CannotApply(f"side {needed} is not up (answered and connected)")
    old, partner = _side_uuid(record, side), _side_uuid(record, other)
    new = str(uuid.uuid4())
    if not store.claim_transfer(dial_id, new, time.time_ns() // 1_000_000, TRANSFER_STALE_MS):
        raise CannotApply("a transfer of this call is already under way")
    try:
        return _transfer_leg(dial_id, control, record, old, partner, new)
    finally:
        store.clear_call_fields(dial_id, "transfer")


def _transfer_leg(dial_id: str, control: Control, record: dict[str, str], old: str, partner: str, new: str) -> Done:
    settings, store = context.settings(), context.store()
    side, number = control.side, control.phone_number
    ring = min(settings.originate_timeout, TRANSFER_MAX_RING)
    ids = {
        originate.VAR_DIAL_ID: dial_id,
        originate.VAR_ORG_ID: record["org_id"],
        originate.VAR_USER_ID: record["user_id"],
    }
    provider = record.get("call_provider", "")
    leg = originate.Leg(side, number, control.caller_id or _original_caller_id(record, side), new, provider)
    dial = commands.dial_string(
        originate.endpoint(settings, provider, number), originate.transfer_variables(settings, ids, leg, ring)
    )
    client = context.esl_pool(record.get("node", "")).client()
    try:
        client.api(commands.originate(dial, commands.app("park")), timeout=ring + TRANSFER_MARGIN)
    except EslCommandError as exc:  # -ERR <cause>: the new leg was refused, or rang out; nothing changed
        cause = reported_cause(str(exc).removeprefix("-ERR").strip())
        raise CannotApply(f"the new leg to {number} failed: {cause}", cause=cause) from None
    except EslUncertainError:  # it may still ring or be parked: never leave it so, nor dial again (no retry)
        _quietly(record, commands.uuid_kill(new))
        raise CannotApply("FreeSWITCH did not answer the originate of the new leg in time; it was hung up") from None
    except EslConnectionError as exc:
        raise CannotApply(f"FreeSWITCH could not be reached: {exc}") from None
    # the new leg answered and is parked: the replaced leg is marked before the bridge that ends it
    try:
        client.api(commands.uuid_setvar(old, originate.VAR_REPLACED_BY, new))
        client.api(commands.uuid_bridge(partner, new))
    except (EslCommandError, EslUncertainError, EslConnectionError) as exc:
        if not (isinstance(exc, EslUncertainError) and _replaced(record, old)):
            _quietly(record, commands.uuid_setvar(old, originate.VAR_REPLACED_BY))
            _quietly(record, commands.uuid_kill(new))
            raise CannotApply(f"the new leg could not be bridged in: {exc}") from None
        logger.warning("dial_id=%s uuid_bridge went unanswered, but the replaced leg is gone: bridged", dial_id)
    store.transferred(dial_id, record, side, new, events.answer(side, transfer=True))
    # from now on the new leg's hangup is the side's own (announced by the listener, after the answer-event above)
    _quietly(record, commands.uuid_setvar(new, originate.VAR_TRANSFER, originate.TRANSFER_BRIDGED))
    return Done(record, ack={"side": side, "phone_number": number})


def _replaced(record: dict[str, str], old: str) -> bool:
    """After a ``uuid_bridge`` whose reply never came: did it run? Its replaced leg is gone within milliseconds when
    it did (the reply was awaited for ESL_TIMEOUT seconds). Unknown (no answer again) counts as not bridged."""
    try:
        return _api(record, commands.uuid_exists(old)).strip() == "false"
    except (EslCommandError, EslUncertainError, EslConnectionError):
        return False


def _original_caller_id(record: dict[str, str], side: str) -> str:
    """The caller id the side was dialled with (the job's ``caller_id_lega`` for side 0, ``caller_id_legb`` for 1)."""
    try:
        job = json.loads(record.get("job", "{}"))
    except ValueError:
        job = {}
    found = job.get("caller_id_lega" if side == "0" else "caller_id_legb") if isinstance(job, dict) else None
    if not isinstance(found, str) or not found:
        raise CannotApply("the call record does not say which caller id the side showed: give caller_id")
    return found


def _quietly(record: dict[str, str], command: str) -> None:
    """Best effort, on a connection of its own if this thread's failed (clean-up after a failed transfer)."""
    try:
        _api(record, command)
    except (EslCommandError, EslUncertainError, EslConnectionError) as exc:
        logger.info("clean-up %r failed: %s", command, exc)


def _unthreeway(dial_id: str, control: Control, record: dict[str, str], message: dict[str, Any]) -> Done:
    record = _barger_record(record)
    if record.get("barger_mode") != "threeway":
        raise CannotApply("the barger is not in threeway")
    return _set_mode(record, record.get("barger_prev_mode", "listen"))


hangup = _control_actor("hangup", _hangup)
barge = _control_actor("barge", _barge)
whisper = _control_actor("whisper", _whisper)
mute = _control_actor("mute", _mute)
threeway = _control_actor("threeway", _threeway)
unthreeway = _control_actor("unthreeway", _unthreeway)

coach_callee = _control_actor("coach-callee", _coach_callee)
send_dtmf = _control_actor("send-dtmf", _send_dtmf)
hold = _control_actor("hold", _hold)
unhold = _control_actor("unhold", _unhold)
start_record = _control_actor("record", _record)
stop_record = _control_actor("stop-record", _stop_record)
play = _control_actor("play", _play)
stop_play = _control_actor("stop-play", _stop_play)
#: The worker's thread waits while the new leg rings (``TRANSFER_MAX_RING``): its own time limit, and no retry (a
#: retry could ring the new number twice; every failure is answered ``error``).
transfer = _control_actor(
    "transfer", _transfer, time_limit=(TRANSFER_MAX_RING + 3 * TRANSFER_MARGIN) * 1000, max_retries=0
)

ACTORS = {
    actor.actor_name: actor
    for actor in (
        hangup,
        barge,
        whisper,
        mute,
        threeway,
        unthreeway,
        coach_callee,
        send_dtmf,
        hold,
        unhold,
        start_record,
        stop_record,
        play,
        stop_play,
        transfer,
    )
}
