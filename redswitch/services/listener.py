"""The event listener: FreeSWITCH channel events in, the Redswitch protocol's events and state out.

Per FreeSWITCH node it follows, a listener holds one ESL connection, subscribes to the few events it needs, and
maps each one to its call through the channel variables the actors set on every leg (``redswitch_dial_id``,
``redswitch_org_id``, ``redswitch_user_id``, ``redswitch_side``); events of channels that are not ours are
ignored. The mapping (:func:`translate`) is pure; :class:`Listener` applies it to Redis and keeps the connection
up. Any number of listeners may run: each node is followed by one of them at a time, under a fenced lease
(:mod:`redswitch.services.ownership`), and a listener that starts following a node (or reconnects to it) first
recovers from the switch's channels the answers and hangups that happened while nobody followed it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

import redis

from redswitch import metrics
from redswitch.admission import Resend, is_retryable, retry_throttled
from redswitch.config import EslNode, Settings
from redswitch.errors import EslError, LeaseLost
from redswitch.esl.stream import EventStream
from redswitch.messages import ID_PATTERN
from redswitch.originate import (
    TRANSFER_PENDING,
    VAR_DIAL_ID,
    VAR_ORG_ID,
    VAR_REPLACED_BY,
    VAR_SIDE,
    VAR_TRANSFER,
    VAR_USER_ID,
)
from redswitch.protocol import callstates, parse_event_plain, reported_cause
from redswitch.protocol.pick import event_name, header_picker
from redswitch.services.absences import Absences
from redswitch.services.ownership import assign
from redswitch.store import Batch, ChannelChange, Fence, leg_uuids, open_store
from redswitch.store import events as protocol_events

logger = logging.getLogger(__name__)

EVENTS = [
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "BACKGROUND_JOB",
    "RECORD_START",
    "RECORD_STOP",
]
SIDES = ("0", "1", "2")
#: A SIP final response code, as FreeSWITCH records it in sip_term_status / sip_invite_failure_status.
SIP_CODE_PATTERN = re.compile(r"[1-6][0-9]{2}")
#: The protocol event each kind of action publishes (for the events-published metric).
_EVENT_TYPES = {
    "answered": "answer-event",
    "hung_up": "hangup-event",
    "record_start": "record-event",
    "record_stop": "record-event",
    "early_media": "early-media-event",
}
#: A recording's file name as the record-event carries it (the base name of ``Record-File-Path``).
RECORD_FILE_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,127}")
#: ``Record-Completion-Cause`` (switch_ivr_async.c: ``success-maxtime``, ``no-input-timeout``, ...).
RECORD_CAUSE_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_RECORD_KINDS = {"RECORD_START": "record_start", "RECORD_STOP": "record_stop"}
#: Socket reads translated but not yet applied, per node: past this the reader waits (and so does the switch's
#: socket), as while Redis is away.
BACKLOG = 64
#: Most actions applied in one round trip when reads pile up behind a slow one.
MAX_BATCH = 1000
#: The ``reason`` of the events a listener reconstructs from the switch's channels after a gap.
RECOVERED_ANSWER = "recovered: FreeSWITCH shows this channel answered; no listener followed its node then"
RECOVERED_HANGUP = "recovered: FreeSWITCH no longer has this channel; no listener followed its node then"
RECOVERED_CAUSE = "NORMAL_UNSPECIFIED"
#: ``show channels`` reads FreeSWITCH's core database, which its SQL thread fills behind the live channels (about
#: 150 ms on an idle switch, more under load; measured on FreeSWITCH 1.11): a channel answered just before a
#: listing may show as not answered, or not at all. So a connection that recovers lists the channels again this
#: many seconds after it connected, and a leg counts as gone only when listings at least ``GONE_AFTER`` seconds
#: apart both lack it.
RECHECKS = (1.0, 3.0)
GONE_AFTER = 1.0


@dataclasses.dataclass(frozen=True)
class Action:
    """What one FreeSWITCH event means for one call."""

    kind: str  # "created" | "early_media" | "answered" | "hung_up" | "job_done" | "record_start" | "record_stop"
    dial_id: str
    org_id: str = ""
    user_id: str = ""
    side: str = ""
    cause: str = ""
    job_uuid: str = ""
    result: str = ""
    sip_code: str = ""  # the SIP final response FreeSWITCH recorded for a refused leg ("" when none)
    retryable: bool | None = None  # for a side that never answered: is its cause worth another attempt?
    file: str = ""  # a recording's file name (record_start, record_stop)


#: The actions of each socket read, with when it was read, from the reading thread to the applying one; or
#: (on a new connection) the switch's channels to recover from, as ``show channels as json`` rows.
Batches = queue.Queue[tuple[list[Action], float, "list[dict[str, str]] | None"]]


@dataclasses.dataclass
class Pending:
    """A batch on its way to Redis and how far it got, so that a retry after a lost reply publishes no event twice
    (the store skips a batch number it already applied) and handles no job result twice. ``node``: the
    FreeSWITCH node the events came from."""

    actions: list[Action]
    batch: Batch
    node: str = ""
    events_done: bool = False
    jobs_done: int = 0
    fence: Fence | None = None


def translate(headers: Mapping[str, str], body: str = "") -> Action | None:
    """Map an event to an Action, or None when it is not about a call of ours (pure, no I/O)."""
    name = headers.get("Event-Name", "")
    if name == "BACKGROUND_JOB":
        return _job_action(headers, body)
    ids = [headers.get(f"variable_{var}", "") for var in (VAR_DIAL_ID, VAR_ORG_ID, VAR_USER_ID)]
    side = headers.get(f"variable_{VAR_SIDE}", "")
    if not all(ID_PATTERN.fullmatch(value) for value in ids) or side not in SIDES:
        return None
    dial_id, org_id, user_id = ids
    if name in _RECORD_KINDS:
        return _record_action(headers, _RECORD_KINDS[name], dial_id, org_id, user_id, side)
    if headers.get(f"variable_{VAR_TRANSFER}") == TRANSFER_PENDING or headers.get(f"variable_{VAR_REPLACED_BY}"):
        return None  # a transfer's new leg not bridged in yet, or the leg it replaced: the transfer announces them
    if name == "CHANNEL_CREATE":
        return Action("created", dial_id, org_id, user_id, side)
    if name == "CHANNEL_ANSWER":
        return Action("answered", dial_id, org_id, user_id, side)
    if name == "CHANNEL_PROGRESS_MEDIA":
        return Action("early_media", dial_id, org_id, user_id, side)
    if name == "CHANNEL_HANGUP":
        return _hangup_action(headers, dial_id, org_id, user_id, side)
    return None


def _hangup_action(headers: Mapping[str, str], dial_id: str, org_id: str, user_id: str, side: str) -> Action:
    """A side hung up: its cause, and for a side that never answered, the SIP code and whether to try again."""
    cause = reported_cause(headers.get("Hangup-Cause", ""))
    sip = headers.get("variable_sip_invite_failure_status") or headers.get("variable_sip_term_status", "")
    sip = sip if SIP_CODE_PATTERN.fullmatch(sip) else ""
    answered = headers.get("Caller-Channel-Answered-Time", "0") not in ("", "0")
    retryable = None if answered else is_retryable(cause)
    return Action("hung_up", dial_id, org_id, user_id, side, cause=cause, sip_code=sip, retryable=retryable)


def _record_action(
    headers: Mapping[str, str], kind: str, dial_id: str, org_id: str, user_id: str, side: str
) -> Action | None:
    """A recording of one of our channels started or stopped: its file's name (a name we cannot vouch for is not
    published) and, on a stop, FreeSWITCH's completion cause if it gave one."""
    name = headers.get("Record-File-Path", "").rpartition("/")[2]
    if not RECORD_FILE_PATTERN.fullmatch(name):
        return None
    cause = headers.get("Record-Completion-Cause", "") if kind == "record_stop" else ""
    cause = cause if RECORD_CAUSE_PATTERN.fullmatch(cause) else ""
    return Action(kind, dial_id, org_id, user_id, side, cause=cause, file=name)


def _job_action(headers: Mapping[str, str], body: str) -> Action | None:
    """The result of a background originate: evidence for the actor, and a failure to report if no leg existed."""
    if headers.get("Job-Command") != "originate":
        return None
    result = body.strip()
    cause = (result[len("-ERR") :].strip() or "NORMAL_UNSPECIFIED") if result.startswith("-ERR") else ""
    return Action("job_done", dial_id="", cause=cause, job_uuid=headers.get("Job-UUID", ""), result=result[:200])


_IDS = [f"variable_{var}" for var in (VAR_DIAL_ID, VAR_ORG_ID, VAR_USER_ID, VAR_SIDE, VAR_TRANSFER, VAR_REPLACED_BY)]
#: What each event we act on needs, picked without decoding the rest of the event.
_PICKERS = {
    "CHANNEL_CREATE": header_picker(_IDS),
    "CHANNEL_ANSWER": header_picker(_IDS),
    "CHANNEL_HANGUP": header_picker(
        [
            *_IDS,
            "Hangup-Cause",
            "Caller-Channel-Answered-Time",
            "variable_sip_term_status",
            "variable_sip_invite_failure_status",
        ]
    ),
    "CHANNEL_PROGRESS_MEDIA": header_picker(_IDS),
    "RECORD_START": header_picker([*_IDS, "Record-File-Path"]),
    "RECORD_STOP": header_picker([*_IDS, "Record-File-Path", "Record-Completion-Cause"]),
}


def action_of(payload: bytes) -> Action | None:
    """The Action of one plain event payload, decoding only the headers it needs (bodies for jobs only)."""
    name = event_name(payload)
    if name == "BACKGROUND_JOB":
        event = parse_event_plain(payload)
        return translate(dict(event.headers), event.body)
    picker = _PICKERS.get(name)
    if picker is None:
        return None
    headers = picker(payload)
    if f"variable_{VAR_DIAL_ID}" not in headers:
        return None  # not a channel of ours
    headers["Event-Name"] = name
    return translate(headers)


_CHANGE_KINDS = {
    "created": "seen",
    "answered": "answered",
    "hung_up": "hung_up",
    "record_start": "record_start",
    "record_stop": "record_stop",
    "early_media": "early_media",
}


def change_of(action: Action, node: str) -> ChannelChange | None:
    """The store's change for a channel action (None for job results, handled apart), its event encoded."""
    kind = _CHANGE_KINDS.get(action.kind)
    if kind is None:
        return None
    event = ""
    if kind == "answered":
        event = _answer_event(action.side)
    elif kind == "hung_up":
        event = _hangup_event(action.side, action.cause, action.sip_code, action.retryable)
    elif kind == "early_media":
        event = protocol_events.encode(protocol_events.early_media(action.side))
    elif kind in ("record_start", "record_stop"):
        state = "start" if kind == "record_start" else "stop"
        event = protocol_events.encode(protocol_events.record(state, action.file, action.side, action.cause))
    return ChannelChange(kind, action.dial_id, action.org_id, action.user_id, action.side, node, event)


@functools.cache
def _answer_event(side: str) -> str:
    return protocol_events.encode(protocol_events.answer(side))


@functools.lru_cache(maxsize=4096)
def _hangup_event(side: str, cause: str, sip_code: str, retryable: bool | None) -> str:
    """Events repeat (a few sides, causes and SIP codes): each is encoded once."""
    return protocol_events.encode(protocol_events.hangup(side, cause, sip_code=sip_code, retryable=retryable))


class Listener:
    """Applies translated events to Redis, over an ESL event connection it keeps alive.

    Per node, one thread reads and translates events and another applies them, in order, so that reading the
    next events overlaps the Redis round trip of the last ones. Everything read while a round trip was out goes
    in the next one; each event is one atomic step of a script in which every state change precedes the PUBLISH
    that announces it.
    """

    def __init__(self, settings: Settings, client: redis.Redis, resend: Resend) -> None:
        """``resend(job, delay_ms)`` sends a throttled originate's job to the ``asp_call`` actor again."""
        self.settings = settings
        self.client = client
        self.store = open_store(client, settings)
        self.resend = resend
        #: Per node, the legs the listings lacked and since when (see ``GONE_AFTER``).
        self._absent: dict[str, Absences] = {}

    def apply(self, pending: Pending) -> None:
        """Apply the channel actions in order in one store call, then the job results, each step once."""
        if not pending.events_done:
            changes = [change_of(action, pending.node) for action in pending.actions]
            self.store.apply([change for change in changes if change is not None], pending.batch, pending.fence)
            pending.events_done = True
        jobs = [action for action in pending.actions if action.kind == "job_done"]
        while pending.jobs_done < len(jobs):
            self._job_done(jobs[pending.jobs_done], pending.node)
            pending.jobs_done += 1

    def record(self, pending: Pending) -> None:
        """Apply a batch and count what was published (a failed batch is raised for a retry)."""
        try:
            self.apply(pending)
        except redis.exceptions.RedisError:
            dial_ids = sorted({a.dial_id for a in pending.actions if a.dial_id})[:10]
            logger.exception("could not record %d events (dial_ids %s)", len(pending.actions), dial_ids)
            raise
        for action in pending.actions:
            if action.kind in _EVENT_TYPES:
                metrics.EVENTS_PUBLISHED.labels(_EVENT_TYPES[action.kind]).inc()

    def _job_done(self, action: Action, node: str) -> None:
        """Record an originate's result; if FreeSWITCH refused it and no leg existed, report ``failure``."""
        call = self.store.job_result(action.job_uuid, action.result)
        if call is None:
            return  # not one of ours
        if not action.cause or call.seen:
            return
        dial_id = call.dial_id
        if retry_throttled(self.store, self.settings, dial_id, action.job_uuid, action.cause, self.resend):
            return  # side 0 never existed and the cause is transient: the originate goes out again
        logger.info("dial_id=%s FreeSWITCH refused the originate: %s", dial_id, action.cause)
        event = protocol_events.failure(
            action.cause, reason="FreeSWITCH did not attempt the call", retryable=is_retryable(action.cause)
        )
        self.store.fail(dial_id, call.org_id or None, call.user_id or None, event, node=node)

    # -- recovery ------------------------------------------------------------------------------------------

    def recover(self, node: str, rows: Sequence[Mapping[str, Any]], fence: Fence, read_at: float | None = None) -> int:
        """Announce what happened on ``node`` while nobody followed it, from its channels (``rows`` of ``show
        channels as json``, read after subscribing): a side FreeSWITCH shows answered that the active list lacks,
        and a listed side (or side 0 of a call a leg of which was seen) whose channel is gone. The store announces
        each only if Redis does not hold it yet, so what the previous owner published is not published again.
        Calls in order of their dial_ids; per call answers first, then hangups, side 0 last. How many announced.

        The listing lags the switch (``RECHECKS``): a leg it lacks is gone only once listings ``GONE_AFTER`` apart
        lacked it (``read_at``: when this one was read, monotonic)."""
        channels = {str(row.get("uuid", "")): str(row.get("callstate", "")) for row in rows}
        now = time.monotonic() if read_at is None else read_at
        absent = self._absent.setdefault(node, Absences())
        changes: list[ChannelChange] = []
        for dial_id in sorted(self.store.node_calls(node)):
            record = self.store.call_record(dial_id)
            if record.get("state") != "sent" or not ("org_id" in record and "user_id" in record):
                continue  # still being dialled (its node may not have the channel yet), or gone
            missing = [leg for leg in leg_uuids(record).values() if leg not in channels]
            gone = {leg for leg in missing if absent.missing_for(leg, now) >= GONE_AFTER}
            changes += _recovered_changes(dial_id, record, channels, node, gone)
        absent.end_look()
        if not changes:
            return 0
        done = self.store.recover(changes, fence)
        if done:
            logger.warning(
                "recovered %d events on node %s from its channels (dial_ids %s)",
                done,
                node,
                sorted({change.dial_id for change in changes})[:10],
                extra={"node": node},
            )
            metrics.EVENTS_RECOVERED.inc(done)
        return done

    # -- following nodes: leases ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, listener_id: str | None = None) -> None:
        """Follow the nodes this listener is assigned (a thread each), under their leases, until ``stop`` is set;
        then apply what was read, give the leases up and leave. A failure that is not Redis's nor a lost lease in
        a follower (a bug) stops the listener with it."""
        Coordinator(self, listener_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}").run(stop)

    # -- connection ------------------------------------------------------------------------------------------

    def connect(self, node: EslNode) -> EventStream:
        stream = EventStream(node.host, node.port, node.password, self.settings.esl_timeout)
        stream.connect()
        stream.subscribe(EVENTS)
        return stream

    def follow(self, node: EslNode, stop: threading.Event, fence: Fence | None = None) -> None:
        """Stay subscribed to ``node`` until ``stop`` is set, reconnecting with backoff whenever it drops.

        A Redis outage does not lose events: the batch being applied is retried until Redis is back. What was read
        before ``stop`` is still applied (unless Redis is away then), across reconnections too. With ``fence`` (the
        node's lease), every connection starts with a recovery from the switch's channels, and every write carries
        the lease's token: :class:`~redswitch.errors.LeaseLost` ends the following when another listener took it.
        """
        batches: Batches = queue.Queue(maxsize=BACKLOG)
        reading = threading.Event()
        reading.set()
        failed: list[BaseException] = []  # what ended the applier early: the reader stops too, and it is raised here
        applier = threading.Thread(
            target=self._apply_all,
            args=(batches, reading, stop, node.name, failed, fence),
            name=f"apply-{node.name}",
            daemon=True,
        )
        applier.start()
        try:
            self._read_all(node, stop, batches, applier.is_alive, fence is not None)
        finally:
            reading.clear()
            applier.join()
        if failed:
            raise failed[0]

    def _read_all(
        self, node: EslNode, stop: threading.Event, batches: Batches, applying: Callable[[], bool], recover: bool
    ) -> None:
        """Connect, read, reconnect: until ``stop``, or until the applier is gone (nothing would take the events)."""
        delay = 0.1
        connected_before = False
        while not stop.is_set() and applying():
            try:
                stream = self.connect(node)
            except EslError as exc:
                logger.warning("ESL connection to %s failed: %s; retrying in %.1fs", node.name, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            logger.info("listening to FreeSWITCH %s at %s:%s", node.name, node.host, node.port)
            delay = 0.1
            if connected_before:
                metrics.ESL_RECONNECTS.inc()
            connected_before = True
            try:
                rechecks: list[float] = []
                if recover:  # what happened while nobody followed: listed after the subscription, applied in place
                    stream.send_api("show channels as json")
                    rechecks = [time.monotonic() + delay for delay in RECHECKS]
                self._pump(stream, stop, batches, applying, node, rechecks)
            except EslError as exc:
                logger.warning("ESL connection to %s lost: %s; reconnecting", node.name, exc)
            finally:
                stream.close()

    def _channels(self, body: str, node: EslNode, read_at: float) -> Any:
        """The recovery item for the applier: the switch's channels (``show channels as json``), or None."""
        try:
            rows = json.loads(body).get("rows", []) if body.lstrip().startswith("{") else None
        except ValueError:
            rows = None
        if rows is None:
            logger.warning("node %s did not list its channels (%r): nothing recovered", node.name, body[:80])
            return None
        return ([], read_at, list(rows))

    def _hand_over(self, batches: Batches, item: Any, applying: Callable[[], bool]) -> None:
        while applying():
            try:
                batches.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _pump(
        self,
        stream: EventStream,
        stop: threading.Event,
        batches: Batches,
        applying: Callable[[], bool],
        node: EslNode | None = None,
        rechecks: list[float] | None = None,
    ) -> None:
        """Read and translate; hand each read's actions to the applier, waiting while its backlog is full; list
        the channels again at each of the ``rechecks`` times (monotonic) for the recovery.

        A read is handed over even when ``stop`` came meanwhile: its events are off the socket, and the applier
        applies what it is given before it ends (it ends early only when Redis is away at the stop, or on a bug).
        """
        rechecks = rechecks or []
        while not stop.is_set() and applying():
            while rechecks and time.monotonic() >= rechecks[0]:
                del rechecks[0]
                stream.send_api("show channels as json")
            payloads = stream.read_payloads(timeout=0.5)
            read_at = time.monotonic()
            actions = [action for action in map(action_of, payloads) if action is not None]
            if actions:
                self._hand_over(batches, (actions, read_at, None), applying)
            while stream.answers and node is not None:  # the channels list: recovered after the events before it
                recovery = self._channels(stream.answers.popleft(), node, read_at)
                if recovery is not None:
                    self._hand_over(batches, recovery, applying)

    def _apply_all(
        self,
        batches: Batches,
        reading: threading.Event,
        stop: threading.Event,
        node: str,
        failed: list[BaseException],
        fence: Fence | None = None,
    ) -> None:
        try:
            self._apply_batches(batches, reading, stop, node, fence)
        except BaseException as exc:  # a bug, not Redis: the process must not go on reading into a dead queue
            failed.append(exc)

    def _apply_batches(
        self, batches: Batches, reading: threading.Event, stop: threading.Event, node: str, fence: Fence | None = None
    ) -> None:
        """Apply batches in order until the reader is done and nothing is left (or ``stop`` finds Redis away)."""
        listener = f"{socket.gethostname()}-{os.getpid()}-{node}-{uuid.uuid4().hex[:8]}"
        numbers = itertools.count(1)
        carried: tuple[list[Action], float, list[dict[str, str]] | None] | None = None
        while reading.is_set() or not batches.empty() or carried is not None:
            if carried is not None:
                item, carried = carried, None
            else:
                try:
                    item = batches.get(timeout=0.2)
                except queue.Empty:
                    continue
            actions, read_at, rows = item
            if rows is not None:
                if fence is not None and not self._recover_until_done(node, rows, fence, stop, read_at):
                    return
                continue
            actions = list(actions)
            while len(actions) < MAX_BATCH:  # everything read while the last round trip was out goes in this one
                try:
                    more = batches.get_nowait()
                except queue.Empty:
                    break
                if more[2] is not None:  # a recovery goes after what was read before it, alone
                    carried = more
                    break
                actions += more[0]
            if not self._apply_until_done(Pending(actions, Batch(listener, next(numbers)), node, fence=fence), stop):
                return
            metrics.EVENT_TO_PUBLISH.observe(time.monotonic() - read_at)

    def _recover_until_done(
        self, node: str, rows: list[dict[str, str]], fence: Fence, stop: threading.Event, read_at: float
    ) -> bool:
        while True:
            try:
                self.recover(node, rows, fence, read_at)
                return True
            except redis.exceptions.RedisError:
                logger.exception("could not recover node %s from its channels", node)
                if stop.wait(0.5):
                    return False

    def _apply_until_done(self, pending: Pending, stop: threading.Event) -> bool:
        """Retry ``pending`` until Redis takes all of it; False when ``stop`` came first."""
        while True:
            try:
                self.record(pending)
                return True
            except redis.exceptions.RedisError:
                if stop.wait(0.5):
                    return False


def _recovered_changes(
    dial_id: str, record: Mapping[str, str], channels: Mapping[str, str], node: str, gone_legs: Set[str]
) -> list[ChannelChange]:
    """The answers and hangups a call may be owed, judged from its node's channels (the store checks each against
    what Redis holds); ``gone_legs``: the legs that listings long enough apart lacked. A side 0 whose channel is
    gone counts only when a leg of the call was seen or the originate succeeded: before that, its channel may
    simply not exist yet (the reconciler judges such calls later)."""
    org_id, user_id = record["org_id"], record["user_id"]
    legs = leg_uuids(record)
    answered = [side for side, leg in legs.items() if channels.get(leg, "") in callstates.ANSWERED]
    gone = [side for side, leg in legs.items() if leg in gone_legs]
    existed = record.get("seen") == "1" or record.get("job_result", "").startswith("+OK")
    if "0" in gone and not existed:
        gone.remove("0")
    changes = [
        ChannelChange("answered", dial_id, org_id, user_id, side, node, _recovered_answer(side)) for side in answered
    ]
    gone.sort(key=lambda side: (side == "0", side))
    for side in gone:
        changes.append(ChannelChange("hung_up", dial_id, org_id, user_id, side, node, _recovered_hangup(side)))
    return changes


@functools.cache
def _recovered_answer(side: str) -> str:
    return protocol_events.encode(protocol_events.answer(side, reason=RECOVERED_ANSWER))


@functools.cache
def _recovered_hangup(side: str) -> str:
    return protocol_events.encode(protocol_events.hangup(side, RECOVERED_CAUSE, reason=RECOVERED_HANGUP))


@dataclasses.dataclass
class Follower:
    """One node this listener follows: its lease's fence and the thread reading and applying its events."""

    fence: Fence
    stop: threading.Event
    thread: threading.Thread
    failed: list[BaseException]
    renewed_at: float


class Coordinator:
    """Membership, the nodes' leases and the followers of one listener process (see
    :mod:`redswitch.services.ownership`). Every third of ``LISTENER_LEASE`` it says it is alive, computes the
    assignment from the live listeners, renews the leases of the nodes it keeps, hands over those assigned to
    another listener (stops following, applies what it read, then releases the lease) and takes the free leases
    of its own nodes (which starts following them, with a recovery)."""

    def __init__(self, listener: Listener, listener_id: str) -> None:
        self.listener = listener
        self.store = listener.store
        self.id = listener_id
        self.nodes = {node.name: node for node in listener.settings.nodes()}
        self.ttl_ms = int(listener.settings.listener_lease * 1000)
        self.interval = listener.settings.listener_lease / 3
        self.followers: dict[str, Follower] = {}
        self.live: list[str] = []
        self.handing: list[threading.Thread] = []

    def run(self, stop: threading.Event) -> None:
        logger.info("listener %s: %d nodes, lease %.1fs", self.id, len(self.nodes), self.interval * 3)
        try:
            while not stop.is_set():
                waiting = self._tick()
                stop.wait(min(self.interval, 0.2) if waiting else self.interval)
        finally:
            self._leave()
        for follower in self.followers.values():
            if follower.failed:
                raise follower.failed[0]

    def _tick(self) -> bool:
        """One round; True when a node assigned here could not be taken yet (look again soon)."""
        try:
            live = self.store.listeners_alive(self.id, self.ttl_ms)
            if live != self.live:
                logger.info("listener %s: live listeners %s", self.id, live, extra={"listener": self.id})
                self.live = live
            wanted = assign(list(self.nodes), live)
            self._check_followers()
            self._renew(wanted)
            return self._take(wanted)
        except redis.exceptions.RedisError as exc:
            logger.warning("listener %s: Redis unavailable (%s); its followers go on under their fences", self.id, exc)
            return False
        finally:
            self._export()

    def _check_followers(self) -> None:
        """Followers that ended (lease lost, or a bug: raised when the listener stops) are let go."""
        for name, follower in list(self.followers.items()):
            if follower.thread.is_alive():
                continue
            del self.followers[name]
            if follower.failed and not isinstance(follower.failed[0], LeaseLost):
                raise follower.failed[0]  # a bug: the listener stops with it (its other nodes are let go)
            logger.warning(
                "listener %s lost the lease on node %s; no longer following it", self.id, name, extra=self._ids(name)
            )
            self.store.release_node(name, follower.fence.token)

    def _renew(self, wanted: Mapping[str, str]) -> None:
        """Renew the leases kept; hand over (all at once) the nodes now assigned to another listener."""
        leaving = []
        for name, follower in list(self.followers.items()):
            if wanted.get(name) != self.id:
                leaving.append((name, follower))
                follower.stop.set()
                continue
            if self.store.hold_node(name, self.id, self.ttl_ms, follower.fence.token):
                follower.renewed_at = time.monotonic()
            else:
                logger.warning("listener %s lost the lease on node %s; stopping", self.id, name, extra=self._ids(name))
                follower.stop.set()
        for name, follower in leaving:  # each finishes in a thread of its own: renewals must not wait for it
            del self.followers[name]
            handing = threading.Thread(
                target=self._hand_over, args=(name, follower, wanted.get(name, "")), name=f"hand-{name}", daemon=True
            )
            self.handing.append(handing)
            handing.start()
        self.handing = [thread for thread in self.handing if thread.is_alive()]

    def _hand_over(self, name: str, follower: Follower, to: str) -> None:
        """Once the follower applied what it read, give the lease up: the node's new owner takes it at once."""
        follower.thread.join()
        try:
            self.store.release_node(name, follower.fence.token)
        except redis.exceptions.RedisError:
            pass  # it expires on its own
        logger.info("listener %s handed node %s over to %s", self.id, name, to, extra=self._ids(name))

    def _take(self, wanted: Mapping[str, str]) -> bool:
        waiting = False
        for name, owner in wanted.items():
            if owner != self.id or name in self.followers:
                continue
            token = self.store.hold_node(name, self.id, self.ttl_ms)
            if not token:
                waiting = True
                continue
            self._start(name, Fence(name, token))
        return waiting

    def _start(self, name: str, fence: Fence) -> None:
        stop, failed = threading.Event(), []

        def target() -> None:
            try:
                self.listener.follow(self.nodes[name], stop, fence)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=target, name=f"listen-{name}", daemon=True)
        self.followers[name] = Follower(fence, stop, thread, failed, time.monotonic())
        logger.info("listener %s follows node %s (lease %s)", self.id, name, fence.token, extra=self._ids(name))
        metrics.LISTENER_TAKES.inc()
        thread.start()

    def _ids(self, node: str) -> dict[str, str]:
        return {"listener": self.id, "node": node}

    def _leave(self) -> None:
        """Stop every follower (each applies what it read), then give up the leases and the membership."""
        for follower in self.followers.values():
            follower.stop.set()
        for thread in [*(follower.thread for follower in self.followers.values()), *self.handing]:
            thread.join()
        try:
            for name, follower in self.followers.items():
                self.store.release_node(name, follower.fence.token)
            self.store.listeners_alive(self.id, self.ttl_ms, leaving=True)
        except redis.exceptions.RedisError:
            pass  # they expire on their own
        for name in self.nodes:
            metrics.LISTENER_FOLLOWS.labels(name).set(0)

    def _export(self) -> None:
        now = time.monotonic()
        for name in self.nodes:
            follower = self.followers.get(name)
            metrics.LISTENER_FOLLOWS.labels(name).set(1 if follower else 0)
            metrics.LISTENER_LEASE_AGE.labels(name).set(now - follower.renewed_at if follower else -1)
