"""Redis clients built from the settings, with the timeouts and retries every process needs.

``PUBSUB_REDIS_URL`` may name a single Redis or any node of a Redis Cluster. Which one is decided once, when a
process builds its first client: ``INFO cluster`` on the URL's node says ``cluster_enabled:1`` on a cluster, and
then the client is redis-py's cluster client (MOVED redirections, a connection per node). Everything that writes
call state goes through :func:`redswitch.store.open_store`, which asks :func:`is_cluster_client` once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from redswitch.config import Settings

logger = logging.getLogger(__name__)

#: Answers of :func:`is_cluster` per URL: a process decides once and keeps to it.
_KNOWN: dict[str, bool] = {}


def redis_from_settings(settings: Settings, url: str | None = None, decode: bool = True) -> redis.Redis:
    """A client for ``url`` (default ``PUBSUB_REDIS_URL``) that survives a Redis restart by reconnecting.

    ``decode=False`` keeps values as bytes: the bridge must park payloads that are not UTF-8 unchanged. On a
    cluster the client is a :class:`~redis.cluster.RedisCluster`; it offers the same commands (typed as
    ``redis.Redis`` so that callers need not care), but no multi-slot scripts or transactions.
    """
    target = url or settings.pubsub_redis_url
    if is_cluster(target, settings.pubsub_redis_timeout):
        return cast(redis.Redis, _cluster_client(settings, target, decode))
    errors = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    return redis.Redis.from_url(target, **_options(settings, decode), retry_on_error=errors)


def _cluster_client(settings: Settings, url: str, decode: bool) -> RedisCluster:
    """The cluster client: same timeouts; retries on a connection error, which also refresh the slot map."""
    return RedisCluster.from_url(url, **_options(settings, decode))


def _options(settings: Settings, decode: bool) -> dict[str, Any]:
    """What every client gets, single or cluster: the timeouts, a health check, retries with backoff."""
    return {
        "decode_responses": decode,
        "socket_timeout": settings.pubsub_redis_timeout,
        "socket_connect_timeout": settings.pubsub_redis_timeout,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
    }


def reply_text(value: object) -> str:
    """A Redis reply item as text, whether the client decodes replies or hands over bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_map(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    """A hash or a stream entry's fields as text (None, a missing key: empty)."""
    return {reply_text(k): reply_text(v) for k, v in (raw or {}).items()}


def is_cluster(url: str, timeout: float = 10.0) -> bool:
    """Whether ``url``'s node belongs to a Redis Cluster (``INFO cluster`` → ``cluster_enabled:1``).

    Asked once per URL and process. A node that cannot be reached counts as a single Redis, as before cluster
    support (a cluster client cannot even be built without a reachable node), and is asked again next time.
    """
    if url in _KNOWN:
        return _KNOWN[url]
    probe = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        answer = str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.exceptions.RedisError as exc:
        logger.warning("could not tell whether %s is a Redis Cluster (%s); using it as a single Redis", url, exc)
        return False
    finally:
        probe.close()
    _KNOWN[url] = answer
    return answer


def is_cluster_client(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (the switch between the atomic and the ordered code paths)."""
    return isinstance(client, RedisCluster)
