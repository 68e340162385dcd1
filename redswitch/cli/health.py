"""``redswitch check``: can this process reach Redis and FreeSWITCH with the configured settings?"""

from __future__ import annotations

import dataclasses

import redis

from redswitch.config import Settings
from redswitch.errors import EslAuthError, EslError
from redswitch.esl.client import EslClient
from redswitch.store.connection import redis_from_settings


def check(settings: Settings) -> list[str]:
    """Return one line per failed part (empty when all is well), saying which part failed and why."""
    problems = [check_redis(settings)]
    for node in settings.nodes():
        problems.append(
            check_esl(dataclasses.replace(settings, esl_url=node.host, esl_port=node.port, esl_password=node.password))
        )
    return [problem for problem in problems if problem]


def followers(settings: Settings) -> list[str]:
    """One line per node: the listener that follows it, the lease's age and how long before it expires unless
    renewed (empty when Redis cannot be asked)."""
    from redswitch.store import open_store

    names = [node.name for node in settings.nodes()]
    try:
        leases = open_store(redis_from_settings(settings), settings).node_leases(names)
    except redis.exceptions.RedisError:
        return []
    lines = []
    for lease in leases:
        if not lease.token:
            lines.append(f"listener: node {lease.node} followed by no listener")
            continue
        lines.append(
            f"listener: node {lease.node} followed by {lease.listener} "
            f"(lease age {lease.age_ms / 1000:.1f}s, expires in {lease.expires_ms / 1000:.1f}s unless renewed)"
        )
    return lines


def check_redis(settings: Settings) -> str:
    try:
        redis_from_settings(settings).ping()
    except redis.exceptions.AuthenticationError as exc:
        return f"redis: authentication failed at {settings.pubsub_redis_url}: {exc}"
    except redis.exceptions.RedisError as exc:
        return f"redis: cannot reach {settings.pubsub_redis_url}: {exc}"
    return ""


def check_esl(settings: Settings) -> str:
    client = EslClient(settings.esl_url, settings.esl_port, settings.esl_password, settings.esl_timeout)
    where = f"{settings.esl_url}:{settings.esl_port}"
    try:
        client.connect()
        status = client.api("status")
    except EslAuthError:
        return f"freeswitch: wrong ESL password at {where}"
    except EslError as exc:
        return f"freeswitch: {exc}"
    finally:
        client.close()
    if "is ready" not in status:
        return f"freeswitch: status does not say ready at {where}: {status.splitlines()[:2]}"
    return ""
