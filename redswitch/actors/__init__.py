"""Dramatiq actors: ``dramatiq redswitch.actors`` runs them all.

The broker is set up (from the environment) before any actor module is imported, so every actor binds to
it and not to a broker Dramatiq would pick on its own.
"""

from __future__ import annotations

from redswitch.broker import setup_broker

broker = setup_broker()

from redswitch.actors.calls import asp_call  # noqa: E402 - actors must be declared after the broker exists

__all__ = ["asp_call", "broker"]
