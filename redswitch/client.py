"""The client API for Python services: enqueue Redswitch work directly, without the legacy list.

Messages go to the same actors the bridge feeds, through the configured Dramatiq broker, so they are durable
(Redis- or RabbitMQ-backed) and validated the same way. Importing this module sets up the broker from the
environment, as the worker does.

    from redswitch.client import send_asp_call
    send_asp_call({"type": "asp-call", "call_provider": "gw", "caller_number": "15105625882", ...})
    send_control("talkiq_dial_id", {"type": "barge", "phone_number": "15105625882", "caller_id": "7777777777"})

And read the event log (docs/protocol.md, "Event streams"): a call's events from any position, with no gap and no
duplicate, or every call's events as one member of a consumer group (each event handled at least once).

    for logged in call_events("talkiq_dial_id"):          # from the call's first event, then live
        save(logged.event); last = logged.id               # resume later with call_events(dial_id, after=last)
    for logged in firehose_events(group="cdr-export"):    # acknowledged when the loop asks for the next one
        export(logged.dial_id, logged.event)
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import redis

from redswitch import auth
from redswitch.config import Settings
from redswitch.messages import check_dial_id, job_from_dict
from redswitch.store.eventlog import LATEST, START, GroupReader, LoggedEvent, follow


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
    check_dial_id(dial_id)
    payload = auth.outgoing(message, Settings.from_env().control_secret)
    from redswitch.actors import CONTROL_ACTORS

    return str(CONTROL_ACTORS[payload["type"]].send(dial_id, payload).message_id)


def _redis() -> redis.Redis:
    from redswitch.config import Settings
    from redswitch.store.connection import redis_from_settings

    return redis_from_settings(Settings.from_env())


def call_events(
    dial_id: str,
    after: str = START,
    *,
    live: bool = True,
    timeout: float | None = None,
    client: redis.Redis | None = None,
) -> Iterator[LoggedEvent]:
    """The events of call ``dial_id`` after the stream id ``after`` (default: from its first event; ``"$"``: only
    those to come), in order, then (``live``) each as it comes, for ``timeout`` seconds (None: forever).

    Each :class:`~redswitch.store.eventlog.LoggedEvent` has ``id`` (pass it as ``after`` to resume right after
    it), ``dial_id``, ``text`` (the JSON published on the channel) and ``event`` (decoded). ``client``: a Redis
    client of your own (default: one built from the environment, as every Redswitch process does).
    """
    check_dial_id(dial_id)
    from redswitch.store.keys import Keys

    made = client or _redis()
    deadline = None if timeout is None else time.monotonic() + timeout
    yield from follow(made, Keys.events(dial_id), after, dial_id=dial_id, deadline=deadline, live=live)


def firehose_events(
    group: str | None = None,
    consumer: str | None = None,
    *,
    after: str = LATEST,
    claim_idle: float = 30.0,
    timeout: float | None = None,
    client: redis.Redis | None = None,
) -> Iterator[LoggedEvent]:
    """Every call's events, in the order Redis applied them.

    Without ``group``: from after the stream id ``after`` (default: only those to come; ``"0-0"``: everything the
    firehose still holds). With ``group`` (created at ``after`` if new): as the member ``consumer`` (default: host
    name and pid) of that consumer group: each event goes to one member and is acknowledged when the loop asks for
    the next one; a member's events left unacknowledged for ``claim_idle`` seconds (it died) go to another member.
    Every event is handled at least once. Either way for ``timeout`` seconds (None: forever).
    """
    from redswitch.store.keys import Keys

    made = client or _redis()
    deadline = None if timeout is None else time.monotonic() + timeout
    if group is None:
        yield from follow(made, Keys.firehose(), after, deadline=deadline)
        return
    member = consumer or f"{socket.gethostname()}-{os.getpid()}"
    reader = GroupReader(made, Keys.firehose(), group, member, create_at=after, claim_idle=claim_idle)
    yield from reader.events(deadline)
