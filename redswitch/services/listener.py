"""The event listener: FreeSWITCH channel events in, the Redswitch protocol's events and state out.

One process holds one ESL connection, subscribes to the few events it needs, and maps each one to its call
through the channel variables the actors set on every leg (``redswitch_dial_id``, ``redswitch_org_id``,
``redswitch_user_id``, ``redswitch_side``); events of channels that are not ours are ignored. The mapping
(:func:`translate`) is pure; :class:`Listener` applies it to Redis and keeps the connection up.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import redis

from redswitch import metrics
from redswitch.admission import Resend, is_retryable, retry_throttled
from redswitch.config import EslNode, Settings
from redswitch.errors import EslError
from redswitch.esl.stream import EventStream
from redswitch.messages import ID_PATTERN
from redswitch.originate import VAR_DIAL_ID, VAR_ORG_ID, VAR_SIDE, VAR_USER_ID
from redswitch.protocol import parse_event_plain
from redswitch.protocol.pick import event_name, header_picker
from redswitch.store import Batch, ChannelChange, open_store
from redswitch.store import events as protocol_events

logger = logging.getLogger(__name__)

EVENTS = ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "BACKGROUND_JOB"]
SIDES = ("0", "1", "2")
#: FreeSWITCH cause names; anything else is reported as NORMAL_UNSPECIFIED.
CAUSE_PATTERN = re.compile(r"[A-Z0-9_]{1,64}")
#: A SIP final response code, as FreeSWITCH records it in sip_term_status / sip_invite_failure_status.
SIP_CODE_PATTERN = re.compile(r"[1-6][0-9]{2}")
#: The protocol event each kind of action publishes (for the events-published metric).
_EVENT_TYPES = {"answered": "answer-event", "hung_up": "hangup-event"}
#: Socket reads translated but not yet applied, per node: past this the reader waits (and so does the switch's
#: socket), as while Redis is away.
BACKLOG = 64
#: Most actions applied in one round trip when reads pile up behind a slow one.
MAX_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Action:
    """What one FreeSWITCH event means for one call."""

    kind: str  # "created" | "answered" | "hung_up" | "job_done"
    dial_id: str
    org_id: str = ""
    user_id: str = ""
    side: str = ""
    cause: str = ""
    job_uuid: str = ""
    result: str = ""
    sip_code: str = ""  # the SIP final response FreeSWITCH recorded for a refused leg ("" when none)
    retryable: bool | None = None  # for a side that never answered: is its cause worth another attempt?


#: The actions of each socket read, with when it was read, from the reading thread to the applying one.
Batches = queue.Queue[tuple[list[Action], float]]


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
    if name == "CHANNEL_CREATE":
        return Action("created", dial_id, org_id, user_id, side)
    if name == "CHANNEL_ANSWER":
        return Action("answered", dial_id, org_id, user_id, side)
    if name == "CHANNEL_HANGUP":
        return _hangup_action(headers, dial_id, org_id, user_id, side)
    return None


def _hangup_action(headers: Mapping[str, str], dial_id: str, org_id: str, user_id: str, side: str) -> Action:
    """A side hung up: its cause, and for a side that never answered, the SIP code and whether to try again."""
    cause = headers.get("Hangup-Cause", "")
    cause = cause if CAUSE_PATTERN.fullmatch(cause) else "NORMAL_UNSPECIFIED"
    sip = headers.get("variable_sip_invite_failure_status") or headers.get("variable_sip_term_status", "")
    sip = sip if SIP_CODE_PATTERN.fullmatch(sip) else ""
    answered = headers.get("Caller-Channel-Answered-Time", "0") not in ("", "0")
    retryable = None if answered else is_retryable(cause)
    return Action("hung_up", dial_id, org_id, user_id, side, cause=cause, sip_code=sip, retryable=retryable)


def _job_action(headers: Mapping[str, str], body: str) -> Action | None:
    """The result of a background originate: evidence for the actor, and a failure to report if no leg existed."""
    if headers.get("Job-Command") != "originate":
        return None
    result = body.strip()
    cause = (result[len("-ERR") :].strip() or "NORMAL_UNSPECIFIED") if result.startswith("-ERR") else ""
    return Action("job_done", dial_id="", cause=cause, job_uuid=headers.get("Job-UUID", ""), result=result[:200])


_IDS = [f"variable_{var}" for var in (VAR_DIAL_ID, VAR_ORG_ID, VAR_USER_ID, VAR_SIDE)]
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


_CHANGE_KINDS = {"created": "seen", "answered": "answered", "hung_up": "hung_up"}


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

    def apply(self, pending: Pending) -> None:
        """Apply the channel actions in order in one store call, then the job results, each step once."""
        if not pending.events_done:
            changes = [change_of(action, pending.node) for action in pending.actions]
            self.store.apply([change for change in changes if change is not None], pending.batch)
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

    # -- connection ------------------------------------------------------------------------------------------

    def connect(self, node: EslNode) -> EventStream:
        stream = EventStream(node.host, node.port, node.password, self.settings.esl_timeout)
        stream.connect()
        stream.subscribe(EVENTS)
        return stream

    def run(self, stop: threading.Event) -> None:
        """Follow every FreeSWITCH node (one connection, one thread each) until ``stop`` is set."""
        nodes = self.settings.nodes()
        if len(nodes) == 1:
            self.follow(nodes[0], stop)
            return
        threads = [
            threading.Thread(target=self.follow, args=(node, stop), name=f"listen-{node.name}", daemon=True)
            for node in nodes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def follow(self, node: EslNode, stop: threading.Event) -> None:
        """Stay subscribed to ``node`` until ``stop`` is set, reconnecting with backoff whenever it drops.

        A Redis outage does not lose events: the batch being applied is retried until Redis is back. What was read
        before ``stop`` is still applied (unless Redis is away then), across reconnections too.
        """
        batches: Batches = queue.Queue(maxsize=BACKLOG)
        reading = threading.Event()
        reading.set()
        failed: list[BaseException] = []  # what ended the applier early: the reader stops too, and it is raised here
        applier = threading.Thread(
            target=self._apply_all,
            args=(batches, reading, stop, node.name, failed),
            name=f"apply-{node.name}",
            daemon=True,
        )
        applier.start()
        try:
            self._read_all(node, stop, batches, applier.is_alive)
        finally:
            reading.clear()
            applier.join()
        if failed:
            raise failed[0]

    def _read_all(self, node: EslNode, stop: threading.Event, batches: Batches, applying: Callable[[], bool]) -> None:
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
                self._pump(stream, stop, batches, applying)
            except EslError as exc:
                logger.warning("ESL connection to %s lost: %s; reconnecting", node.name, exc)
            finally:
                stream.close()

    def _pump(self, stream: EventStream, stop: threading.Event, batches: Batches, applying: Callable[[], bool]) -> None:
        """Read and translate; hand each read's actions to the applier, waiting while its backlog is full.

        A read is handed over even when ``stop`` came meanwhile: its events are off the socket, and the applier
        applies what it is given before it ends (it ends early only when Redis is away at the stop, or on a bug).
        """
        while not stop.is_set() and applying():
            payloads = stream.read_payloads(timeout=0.5)
            read_at = time.monotonic()
            actions = [action for action in map(action_of, payloads) if action is not None]
            while actions and applying():
                try:
                    batches.put((actions, read_at), timeout=0.5)
                    actions = []
                except queue.Full:
                    continue

    def _apply_all(
        self, batches: Batches, reading: threading.Event, stop: threading.Event, node: str, failed: list[BaseException]
    ) -> None:
        try:
            self._apply_batches(batches, reading, stop, node)
        except BaseException as exc:  # a bug, not Redis: the process must not go on reading into a dead queue
            failed.append(exc)

    def _apply_batches(self, batches: Batches, reading: threading.Event, stop: threading.Event, node: str) -> None:
        """Apply batches in order until the reader is done and nothing is left (or ``stop`` finds Redis away)."""
        listener = f"{socket.gethostname()}-{os.getpid()}-{node}-{uuid.uuid4().hex[:8]}"
        numbers = itertools.count(1)
        while reading.is_set() or not batches.empty():
            try:
                actions, read_at = batches.get(timeout=0.2)
            except queue.Empty:
                continue
            actions = list(actions)
            while len(actions) < MAX_BATCH:  # everything read while the last round trip was out goes in this one
                try:
                    more, _ = batches.get_nowait()
                except queue.Empty:
                    break
                actions += more
            if not self._apply_until_done(Pending(actions, Batch(listener, next(numbers)), node), stop):
                return
            metrics.EVENT_TO_PUBLISH.observe(time.monotonic() - read_at)

    def _apply_until_done(self, pending: Pending, stop: threading.Event) -> bool:
        """Retry ``pending`` until Redis takes all of it; False when ``stop`` came first."""
        while True:
            try:
                self.record(pending)
                return True
            except redis.exceptions.RedisError:
                if stop.wait(0.5):
                    return False
