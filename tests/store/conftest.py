"""The store's tests run on both backends: every test here that asks for ``settings``, ``client`` or ``store`` runs
once against a single Redis (``AtomicStore``) and once against a Redis Cluster (``ClusterStore``).

The fixtures live in this directory's conftest, not in a global plugin, so a parametrized ``settings`` never
reaches a test elsewhere that merely forgot to define its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redswitch.config import Settings
from redswitch.store import CallStore, open_store
from redswitch.store.connection import redis_from_settings
from tests.cluster import RedisClusterServers
from tests.conftest import close_pubsubs_now
from tests.servers import RedisServer


@pytest.fixture(params=["atomic", "cluster"])
def settings(request: pytest.FixtureRequest, redis_server: RedisServer) -> Settings:
    if request.param == "atomic":
        redis_server.client().flushall()
        return Settings(pubsub_redis_url=redis_server.url)
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return Settings(pubsub_redis_url=cluster.url)


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    made = redis_from_settings(settings)
    yield made
    close_pubsubs_now()  # a cluster pub/sub holds a connection of the client's pools
    made.close()


@pytest.fixture
def store(client: redis.Redis, settings: Settings) -> CallStore:
    return open_store(client, settings)
