"""What every actor needs, created lazily once per worker process: settings, Redis, ESL connections.

Lazy, because Dramatiq imports the actor modules before it forks its worker processes, and neither Redis
connection pools nor greenswitch connections may cross a fork.
"""

from __future__ import annotations

import functools

import redis

from redswitch.config import Settings
from redswitch.esl import EslPool
from redswitch.redis_client import redis_from_settings
from redswitch.state import CallState


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis_from_settings(settings())


@functools.lru_cache(maxsize=1)
def esl_pool() -> EslPool:
    current = settings()
    return EslPool(current.esl_url, current.esl_port, current.esl_password, current.esl_timeout)


def call_state() -> CallState:
    return CallState(redis_client(), settings())


def reset() -> None:
    """Forget everything (tests change the environment between runs)."""
    for cached in (settings, redis_client, esl_pool):
        cached.cache_clear()
