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
from collections.abc import Mapping

import gevent
import redis

from redswitch.config import Settings
from redswitch.errors import EslError
from redswitch.esl import EslClient
from redswitch.messages import ID_PATTERN
from redswitch.originate import VAR_DIAL_ID, VAR_ORG_ID, VAR_SIDE, VAR_USER_ID
from redswitch.state import CallState, Keys

logger = logging.getLogger(__name__)

EVENTS = ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "BACKGROUND_JOB"]
SIDES = ("0", "1", "2")
BARGER_FIELDS = ("barger_uuid", "barger_mode", "barger_prev_mode", "barger_answered")


@dataclasses.dataclass(frozen=True)
class Action:
    """What one FreeSWITCH event means for one call."""

    kind: str  # "created" | "answered" | "hung_up" | "job_failed"
    dial_id: str
    org_id: str = ""
    user_id: str = ""
    side: str = ""
    cause: str = ""
    job_uuid: str = ""


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
    """A background originate that failed: the listener must check whether any leg ever existed."""
    if headers.get("Job-Command") != "originate" or not body.startswith("-ERR"):
        return None
    cause = body[len("-ERR") :].strip() or "NORMAL_UNSPECIFIED"
    return Action("job_failed", dial_id="", cause=cause, job_uuid=headers.get("Job-UUID", ""))


class Listener:
    """Applies translated events to Redis, over an ESL connection it keeps alive."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.state = CallState(client, settings)

    def apply(self, action: Action) -> None:
        if action.kind == "created":
            self._mark_seen(action.dial_id)
        elif action.kind == "answered":
            self._mark_seen(action.dial_id)
            if action.side == "2":
                self.state.update_call(action.dial_id, barger_answered="1")
            self.state.side_answered(action.dial_id, action.org_id, action.user_id, action.side)
        elif action.kind == "hung_up":
            self._mark_seen(action.dial_id)
            self.state.side_hung_up(action.dial_id, action.org_id, action.user_id, action.side, {"cause": action.cause})
            if action.side == "0":
                self.state.end_call(action.dial_id)
            elif action.side == "2":  # the barger left: the call goes on, and may be barged again
                self.state.clear_call_fields(action.dial_id, *BARGER_FIELDS)
        elif action.kind == "job_failed":
            self._job_failed(action)
        logger.debug("dial_id=%s %s side=%s cause=%s", action.dial_id, action.kind, action.side, action.cause)

    def on_event(self, headers: dict[str, str], body: str) -> None:
        action = translate(headers, body)
        if action is None:
            return
        try:
            self.apply(action)
        except redis.exceptions.RedisError:
            logger.exception("dial_id=%s could not record %s", action.dial_id, action.kind)

    def _mark_seen(self, dial_id: str) -> None:
        key = Keys.call(dial_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, "seen", "1")
        pipe.expire(key, 24 * 3600)
        pipe.execute()

    def _job_failed(self, action: Action) -> None:
        """FreeSWITCH refused an originate: report ``failure`` unless a leg existed (its hangup says it all)."""
        dial_id = self.client.get(Keys.job(action.job_uuid))
        if not dial_id:
            return
        record = self.state.call_record(str(dial_id))
        if record.get("seen") == "1":
            return
        self.state.fail(
            str(dial_id),
            record.get("org_id"),
            record.get("user_id"),
            action.cause,
            reason="FreeSWITCH did not attempt the call",
        )

    # -- connection ------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Stay subscribed until ``stop`` is set, reconnecting with backoff whenever the connection drops."""
        delay = 0.1
        while not stop.is_set():
            esl = EslClient(
                self.settings.esl_url, self.settings.esl_port, self.settings.esl_password, self.settings.esl_timeout
            )
            try:
                esl.subscribe(EVENTS, self.on_event)
                logger.info("listening to FreeSWITCH at %s:%s", self.settings.esl_url, self.settings.esl_port)
                delay = 0.1
                while esl.connected and not stop.is_set():
                    gevent.sleep(0.2)
            except EslError as exc:
                logger.warning("ESL connection failed: %s; retrying in %.1fs", exc, delay)
            finally:
                esl.close()
            if not stop.is_set():
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
