"""Lua scripts run by their SHA: the script's text crosses the wire only when Redis does not know it yet.

``EVAL`` sends the whole script on every call and Redis hashes it each time; a registered redis-py ``Script``
is bound to one client object and, inside a pipeline, costs a ``SCRIPT EXISTS`` round trip. Hot paths (a
claim per call, a relay check per control message) call :func:`run` instead: ``EVALSHA``, and on ``NOSCRIPT``
(nothing ran: a restarted Redis, or ``SCRIPT FLUSH``) one ``EVAL``, which also caches the script again.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import redis


@functools.cache
def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # Redis names scripts by SHA-1


def run(client: redis.Redis, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` with ``keys`` and ``args``; its reply."""
    try:
        return client.evalsha(sha(script), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(script, len(keys), *keys, *args)
