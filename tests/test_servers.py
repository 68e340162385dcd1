from __future__ import annotations

import pytest
import redis

from tests.servers import RedisServer


def test_own_redis_server_can_be_killed_and_restarted_on_the_same_port(own_redis_server: RedisServer) -> None:
    # Given a running server holding a key
    client = own_redis_server.client()
    client.set("k", "v")
    port = own_redis_server.port
    # When it is killed, it refuses connections
    own_redis_server.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    # Then a restart serves again on the same port, empty (no persistence)
    own_redis_server.start()
    assert own_redis_server.port == port
    assert client.ping() is True
    assert client.get("k") is None
