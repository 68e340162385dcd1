"""Redswitch: a call-control agent for FreeSWITCH driven through Redis.

Jobs arrive on a Redis list (legacy pushers) or as Dramatiq messages (Python services), actors turn them
into Event Socket commands, and a listener turns FreeSWITCH events back into JSON on Redis pub/sub.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
