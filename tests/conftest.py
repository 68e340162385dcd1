from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings

from tests import esl_raw
from tests.cluster import RedisClusterServers
from tests.servers import RedisServer

# The simulator's fixtures live in their own module so that the simulator can evolve without touching this file;
# tests.switch picks the switch of the end-to-end tests (the simulator, or a real FreeSWITCH) and skips sim_only ones.
pytest_plugins = ["tests.fixtures_sim", "tests.switch"]

# A shared 2-core machine is noisy: judge properties by what they find, never by how fast examples are drawn.
settings.register_profile("redswitch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("redswitch")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole test session; tests get a flushed database via ``redis_client``."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One real Redis Cluster (three masters on loopback) for the whole session; tests flush it first."""
    servers = RedisClusterServers().start()
    yield servers
    servers.stop()


@pytest.fixture(autouse=True)
def close_raw_clients() -> Iterator[None]:
    """Raw ESL clients a test opened and left open are closed when it ends (warnings are errors here)."""
    yield
    for client in list(esl_raw.OPEN):
        client.close()


#: Every redis-py pub/sub connection a test opened (cluster ones included), closed when the test ends: a pub/sub
#: object sits in a reference cycle, so one left open would be found only by the last garbage collection.
_PUBSUBS: weakref.WeakSet[Any] = weakref.WeakSet()
_pubsub_init = redis.client.PubSub.__init__


def _tracked_pubsub_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _pubsub_init(self, *args, **kwargs)
    _PUBSUBS.add(self)


redis.client.PubSub.__init__ = _tracked_pubsub_init  # type: ignore[method-assign]


def close_pubsubs_now() -> None:
    """Close every pub/sub connection still open (call it before closing the client they came from)."""
    for pubsub in list(_PUBSUBS):
        with contextlib.suppress(Exception):
            pubsub.close()


@pytest.fixture(autouse=True)
def close_pubsubs() -> Iterator[None]:
    yield
    close_pubsubs_now()
