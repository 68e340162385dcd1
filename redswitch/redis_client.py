"""Redis clients built from the settings, with the timeouts and retries every process needs."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from redswitch.config import Settings


def redis_from_settings(settings: Settings, url: str | None = None, decode: bool = True) -> redis.Redis:
    """A client for ``url`` (default ``PUBSUB_REDIS_URL``) that survives a Redis restart by reconnecting.

    ``decode=False`` keeps values as bytes: the bridge must park payloads that are not UTF-8 unchanged.
    """
    return redis.Redis.from_url(
        url or settings.pubsub_redis_url,
        decode_responses=decode,
        socket_timeout=settings.pubsub_redis_timeout,
        socket_connect_timeout=settings.pubsub_redis_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
