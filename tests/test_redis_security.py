"""Redis with a password, an ACL user and TLS: every process takes it from the URL and works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.pipeline import Pipeline, has
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def secure_redis() -> Iterator[RedisServer]:
    server = RedisServer(tls=True, password="default-secret", users={"redswitch": "s3cret"}).start()
    yield server
    server.stop()


def test_the_whole_pipeline_runs_over_tls_as_an_acl_user(secure_redis: RedisServer) -> None:
    url = secure_redis.url_for("redswitch", "s3cret")
    assert url.startswith("rediss://redswitch:s3cret@")
    pipeline = Pipeline(url).start()
    try:
        pubsub = pipeline.call("secure1")
        pipeline.publish("secure1", {"type": "hangup"})
        events = pipeline.events_until(pubsub, lambda ev: has("hangup-event", "0")(ev) and has("ack")(ev))
        assert {"type": "ack", "event": "hangup"} in events
    finally:
        pipeline.stop()


def test_check_names_redis_when_the_password_is_wrong(secure_redis: RedisServer) -> None:
    env = {"PUBSUB_REDIS_URL": secure_redis.url_for("redswitch", "wrong"), "ESL_PORT": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "redswitch", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "redis:" in result.stderr and "authentication" in result.stderr.lower()
