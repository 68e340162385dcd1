"""What every actor needs, created lazily once per worker process: settings, Redis, ESL connections.

Lazy, because Dramatiq imports the actor modules before it forks its worker processes, and neither Redis
connection pools nor greenswitch connections may cross a fork.
"""

from __future__ import annotations

import functools

import redis

from redswitch.admission import Limits
from redswitch.config import Settings
from redswitch.esl.client import EslPool
from redswitch.placement import Nodes
from redswitch.store import CallStore, open_store
from redswitch.store.connection import redis_from_settings


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis_from_settings(settings())


def esl_pool(node: str = "") -> EslPool:
    """The connections to FreeSWITCH node ``node`` (default: the first node), one per worker thread."""
    return _pool(node or settings().nodes()[0].name)


@functools.cache
def _pool(name: str) -> EslPool:
    current = settings()
    target = current.node(name)
    return EslPool(target.host, target.port, target.password, current.esl_timeout)


@functools.lru_cache(maxsize=1)
def nodes() -> Nodes:
    return Nodes(store(), settings())


@functools.lru_cache(maxsize=1)
def store() -> CallStore:
    return open_store(redis_client(), settings())


@functools.lru_cache(maxsize=1)
def limits() -> Limits:
    """The limits, parsed once per process (each call is checked against them)."""
    return Limits(settings())


def reset() -> None:
    """Forget everything (tests change the environment between runs)."""
    for cached in (settings, redis_client, _pool, nodes, store, limits):
        cached.cache_clear()
