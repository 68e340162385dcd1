"""Lua scripts run by their SHA: the script's text crosses the wire only when Redis does not know it yet.

``EVAL`` sends the whole script on every call and Redis hashes it each time; a registered redis-py ``Script``
is bound to one client object and, inside a pipeline, costs a ``SCRIPT EXISTS`` round trip. Hot paths (a
claim per call, a relay check per control message) call :func:`run` instead: ``EVALSHA``, and on ``NOSCRIPT``
(nothing ran: a restarted Redis, or ``SCRIPT FLUSH``) one ``EVAL``, which also caches the script again.
In a pipeline, :func:`stage` queues the ``EVALSHA`` and :func:`checked` raises the replies' errors except
``NOSCRIPT`` (:func:`missing`), which the caller answers by running that command again.
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


def stage(pipe: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue ``script`` on ``pipe`` by its SHA (check the reply with :func:`missing`)."""
    pipe.evalsha(sha(script), len(keys), *keys, *args)


def missing(reply: Any) -> bool:
    """Did Redis refuse the script for not knowing it? Then it did not run, and may be run again."""
    return isinstance(reply, redis.exceptions.NoScriptError)


def checked(replies: list[Any]) -> list[Any]:
    """Pipeline replies (``execute(raise_on_error=False)``) after raising the first error that is not ``NOSCRIPT``."""
    for reply in replies:
        if isinstance(reply, Exception) and not missing(reply):
            raise reply
    return replies
