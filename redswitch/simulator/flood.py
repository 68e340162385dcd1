"""SIMULATOR-ONLY: a fast stream of synthetic channel events (``api sim_flood``), for benchmarks downstream.

Each synthetic channel yields a CHANNEL_ANSWER then a CHANNEL_HANGUP (NORMAL_CLEARING) carrying the
``redswitch_*`` variables the listener maps. The channel part of both events is built once by the real channel
model and serialised once, with placeholders; each event then costs a couple of ``bytes.replace`` calls and the
standard header block. Events go through the bus, so subscriptions, filters and formats apply as usual.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid as uuidlib
from dataclasses import dataclass

from redswitch.protocol.codec import serialize_headers_plain
from redswitch.simulator.bus import EventBus, Pairs
from redswitch.simulator.calls import CALLERS, CallEngine
from redswitch.simulator.channels import channel_headers
from redswitch.simulator.dialstring import Leg, parse_endpoint

__all__ = ["FLOOD_ENDPOINT", "FloodSpec", "flood"]

#: Every synthetic channel dials this (an answered carrier number).
FLOOD_ENDPOINT = "sofia/gateway/flood/15105550100"
_UUID = "zzfloodUUIDzz"  # placeholders: url-safe, so they survive serialisation unchanged
_DIAL = "zzfloodDIALzz"
#: Events per batch: one socket write per subscriber per batch.
BATCH = 512
#: Pause the flood while a subscriber has more than this many bytes waiting in its transport.
MAX_BACKLOG = 8 * 1024 * 1024


@dataclass(frozen=True)
class FloodSpec:
    """What to emit: ``count`` events; ``dial_id`` None gives each synthetic channel its own (``flood-<n>``)."""

    count: int
    dial_id: str | None = None
    org_id: str = "flood-org"
    user_id: str = "flood-user"
    side: str = "0"


@dataclass(frozen=True)
class _Template:
    name: str
    caller: tuple[str, str, int]
    pairs: Pairs
    plain: bytes


def _templates(engine: CallEngine, spec: FloodSpec) -> tuple[_Template, _Template]:
    """CHANNEL_ANSWER and CHANNEL_HANGUP of one answered leg, with placeholders for the uuid and the dial id."""
    variables = {"origination_uuid": _UUID, "redswitch_dial_id": spec.dial_id or _DIAL}
    variables.update(redswitch_org_id=spec.org_id, redswitch_user_id=spec.user_id, redswitch_side=spec.side)
    ch = engine.new_channel(Leg({}, parse_endpoint(FLOOD_ENDPOINT)), variables)
    now = time.time()
    ch.times.update(progress=now, answered=now)
    ch.callstate, ch.state = "RINGING", "CS_CONSUME_MEDIA"
    answer = channel_headers(ch, None)
    ch.callstate, ch.state, ch.cause = "ACTIVE", "CS_EXECUTE", "NORMAL_CLEARING"
    ch.times["hangup"] = now
    hangup = channel_headers(ch, None)
    return _template("CHANNEL_ANSWER", answer), _template("CHANNEL_HANGUP", hangup)


def _template(name: str, rows: Pairs) -> _Template:
    return _Template(name, CALLERS[name], rows, serialize_headers_plain(rows))


def _rows(template: Pairs, uid: str, dial: str) -> Pairs:
    return [(k, v.replace(_UUID, uid).replace(_DIAL, dial)) for k, v in template]


def _emit(bus: EventBus, template: _Template, uid: str, dial: str) -> None:
    plain = template.plain.replace(b"zzfloodUUIDzz", uid.encode()).replace(b"zzfloodDIALzz", dial.encode())
    rows = functools.partial(_rows, template.pairs, uid, dial)
    bus.fire_prebuilt(template.name, template.caller, rows, plain, uid)


async def flood(engine: CallEngine, spec: FloodSpec) -> int:
    """Emit ``spec.count`` events as fast as the subscribers take them; returns the number emitted."""
    answer, hangup = _templates(engine, spec)
    prefix = str(uuidlib.uuid4())[:24]
    for start in range(0, spec.count, BATCH):
        for i in range(start, min(spec.count, start + BATCH)):
            n = i // 2
            _emit(engine.bus, hangup if i % 2 else answer, f"{prefix}{n:012x}", spec.dial_id or f"flood-{n}")
        await _drain(engine.bus)
    return spec.count


async def _drain(bus: EventBus) -> None:
    """Let the batch be written, then wait while any subscriber is far behind (bounded memory for any count)."""
    await asyncio.sleep(0)
    while any(sub.backlog() > MAX_BACKLOG for sub in tuple(bus.subscribers)):
        await asyncio.sleep(0.002)
