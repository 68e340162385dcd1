"""The periodic HEARTBEAT event (``switch_core.c`` ``send_heartbeat``), interval from the scenario."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redswitch.simulator.api import VERSION

__all__ = ["heartbeat_headers", "heartbeat_loop"]


def heartbeat_headers(sim: Any) -> list[tuple[str, str]]:
    up = time.time() - sim.started
    secs = int(up)
    mins, sec = divmod(secs, 60)
    hours, minute = divmod(mins, 60)
    days, hour = divmod(hours, 24)
    years, day = divmod(days, 365)
    ms = int((up - secs) * 1000)
    uptime = (
        f"{years} years, {day} days, {hour} hours, {minute} minutes, {sec} seconds, {ms} milliseconds, 0 microseconds"
    )
    eng = sim.engine
    return [
        ("Event-Info", "System Ready"),
        ("Up-Time", uptime),
        ("FreeSWITCH-Version", VERSION),
        ("Uptime-msec", str(int(up * 1000))),
        ("Session-Count", str(len(eng.channels))),
        ("Max-Sessions", str(eng.scenario.max_sessions or 1000)),
        ("Session-Per-Sec", str(eng.scenario.sessions_per_second or 30)),
        ("Session-Per-Sec-Last", "0"),
        ("Session-Per-Sec-Max", "0"),
        ("Session-Per-Sec-FiveMin", "0"),
        ("Session-Since-Startup", str(eng.sessions_since_startup)),
        ("Session-Peak-Max", str(eng.peak)),
        ("Session-Peak-FiveMin", str(eng.peak)),
        ("Idle-CPU", "99.600000"),
    ]


async def heartbeat_loop(sim: Any) -> None:
    interval = sim.scenario.heartbeat_interval
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        sim.bus.fire("HEARTBEAT", ("switch_core.c", "send_heartbeat", 80), heartbeat_headers(sim))
