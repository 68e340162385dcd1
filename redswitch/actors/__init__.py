"""Dramatiq actors: ``dramatiq redswitch.actors`` runs them all.

The broker is set up (from the environment) before any actor module is imported, so every actor binds to
it and not to a broker Dramatiq would pick on its own.
"""

from __future__ import annotations

from redswitch.broker import setup_broker

broker = setup_broker()

from redswitch.actors.calls import asp_call  # noqa: E402 - actors must be declared after the broker exists
from redswitch.actors.control import (  # noqa: E402
    ACTORS as CONTROL_ACTORS,
)
from redswitch.actors.control import (  # noqa: E402
    barge,
    coach_callee,
    hangup,
    hold,
    mute,
    play,
    send_dtmf,
    start_record,
    stop_play,
    stop_record,
    threeway,
    transfer,
    unhold,
    unthreeway,
    whisper,
)

__all__ = [
    "CONTROL_ACTORS",
    "asp_call",
    "barge",
    "broker",
    "coach_callee",
    "hangup",
    "hold",
    "mute",
    "play",
    "start_record",
    "send_dtmf",
    "stop_play",
    "stop_record",
    "threeway",
    "transfer",
    "unhold",
    "unthreeway",
    "whisper",
]
