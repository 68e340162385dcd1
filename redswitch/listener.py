"""The event listener: FreeSWITCH channel events in, the Redswitch protocol's events and state out.

One process holds one ESL connection, subscribes to the few events it needs, and maps each one to its call
through the channel variables the actors set on every leg (``redswitch_dial_id``, ``redswitch_org_id``,
``redswitch_user_id``, ``redswitch_side``); events of channels that are not ours are ignored. The mapping
(:func:`translate`) is pure; :class:`Listener` applies it to Redis and keeps the connection up.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from redswitch import metrics
from redswitch.config import Settings
from redswitch.errors import EslError
from redswitch.esl_stream import EventStream
from redswitch.messages import ID_PATTERN
from redswitch.originate import VAR_DIAL_ID, VAR_ORG_ID, VAR_SIDE, VAR_USER_ID
from redswitch.protocol import Event
from redswitch.state import CallState, Keys

logger = logging.getLogger(__name__)

EVENTS = ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "BACKGROUND_JOB"]
SIDES = ("0", "1", "2")
BARGER_FIELDS = ("barger_uuid", "barger_mode", "barger_prev_mode", "barger_answered")
#: The protocol event each kind of action publishes (for the events-published metric).
_EVENT_TYPES = {"answered": "answer-event", "hung_up": "hangup-event"}


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
        cause = headers.get("Hangup-Cause", "NORMAL_UNSPECIFIED")
        return Action("hung_up", dial_id, org_id, user_id, side, cause=cause)
    return None


def _job_action(headers: Mapping[str, str], body: str) -> Action | None:
    """The result of a background originate: evidence for the actor, and a failure to report if no leg existed."""
    if headers.get("Job-Command") != "originate":
        return None
    result = body.strip()
    cause = (result[len("-ERR") :].strip() or "NORMAL_UNSPECIFIED") if result.startswith("-ERR") else ""
    return Action("job_done", dial_id="", cause=cause, job_uuid=headers.get("Job-UUID", ""), result=result[:200])


class Listener:
    """Applies translated events to Redis, over an ESL event connection it keeps alive.

    Events are applied in batches (everything one socket read brought): one MULTI/EXEC per batch keeps
    Redis round trips off the per-event path, and inside it every state change still precedes the PUBLISH
    that announces it.
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.state = CallState(client, settings)

    def apply(self, actions: list[Action]) -> None:
        """Apply actions in order: channel events in one transaction, then the (rare) failed-job checks."""
        pipe = self.client.pipeline(transaction=True)
        jobs = []
        for action in actions:
            if action.kind == "job_done":
                jobs.append(action)
            else:
                self._stage(pipe, action)
        if len(pipe):
            pipe.execute()
        for action in jobs:
            self._job_done(action)

    def on_events(self, events: list[Event]) -> None:
        actions = [a for a in (translate(dict(e.headers), e.body) for e in events) if a is not None]
        if not actions:
            return
        try:
            self.apply(actions)
        except redis.exceptions.RedisError:
            logger.exception(
                "could not record %d events (dial_ids %s)", len(actions), sorted({a.dial_id for a in actions})[:10]
            )
            raise
        for action in actions:
            if action.kind in _EVENT_TYPES:
                metrics.EVENTS_PUBLISHED.labels(_EVENT_TYPES[action.kind]).inc()

    def _stage(self, pipe: Any, action: Action) -> None:
        dial_id, org_id, user_id, side = action.dial_id, action.org_id, action.user_id, action.side
        if action.kind == "created":
            self.state.mark_seen(dial_id, pipe)
        elif action.kind == "answered":
            if side == "2":
                self.state.update_call(dial_id, pipe, barger_answered="1")
            self.state.side_answered(dial_id, org_id, user_id, side, pipe)
        elif action.kind == "hung_up":
            self.state.mark_seen(dial_id, pipe)
            self.state.side_hung_up(dial_id, org_id, user_id, side, {"cause": action.cause}, pipe)
            if side == "0":
                self.state.end_call(dial_id, pipe)
            elif side == "2":  # the barger left: the call goes on, and may be barged again
                self.state.clear_call_fields(dial_id, *BARGER_FIELDS, pipe=pipe)
        logger.debug("dial_id=%s %s side=%s cause=%s", dial_id, action.kind, side, action.cause)

    def _job_done(self, action: Action) -> None:
        """Record an originate's result; if FreeSWITCH refused it and no leg existed, report ``failure``."""
        dial_id = self.client.get(Keys.job(action.job_uuid))
        if not dial_id:
            return  # not one of ours
        self.state.update_call(str(dial_id), job_result=action.result)
        record = self.state.call_record(str(dial_id))
        if not action.cause or record.get("seen") == "1":
            return
        logger.info("dial_id=%s FreeSWITCH refused the originate: %s", dial_id, action.cause)
        self.state.fail(
            str(dial_id),
            record.get("org_id"),
            record.get("user_id"),
            action.cause,
            reason="FreeSWITCH did not attempt the call",
        )

    # -- connection ------------------------------------------------------------------------------------------

    def connect(self) -> EventStream:
        settings = self.settings
        stream = EventStream(settings.esl_url, settings.esl_port, settings.esl_password, settings.esl_timeout)
        stream.connect()
        stream.subscribe(EVENTS)
        return stream

    def run(self, stop: threading.Event) -> None:
        """Stay subscribed until ``stop`` is set, reconnecting with backoff whenever the connection drops.

        A Redis outage does not lose events: the batch being applied is retried until Redis is back.
        """
        delay = 0.1
        connected_before = False
        while not stop.is_set():
            try:
                stream = self.connect()
            except EslError as exc:
                logger.warning("ESL connection failed: %s; retrying in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            logger.info("listening to FreeSWITCH at %s:%s", self.settings.esl_url, self.settings.esl_port)
            delay = 0.1
            if connected_before:
                metrics.ESL_RECONNECTS.inc()
            connected_before = True
            try:
                self._pump(stream, stop)
            except EslError as exc:
                logger.warning("ESL connection lost: %s; reconnecting", exc)
            finally:
                stream.close()

    def _pump(self, stream: EventStream, stop: threading.Event) -> None:
        while not stop.is_set():
            events = stream.read(timeout=0.5)
            read_at = time.monotonic()
            while events and not stop.is_set():
                try:
                    self.on_events(events)
                    metrics.EVENT_TO_PUBLISH.observe(time.monotonic() - read_at)
                    events = []
                except redis.exceptions.RedisError:
                    stop.wait(0.5)
