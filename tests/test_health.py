"""``redswitch check`` as a subprocess against a real redis-server and the simulator, healthy and broken."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from redswitch.cli.launcher import redswitch_command
from redswitch.simulator import Simulator
from tests.servers import RedisServer, free_port

Check = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def check(redis_server: RedisServer, simulator: Simulator) -> Check:
    """Run ``redswitch check`` with a working configuration, changed by keyword arguments (env var names)."""

    def run(**overrides: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PUBSUB_REDIS_URL": redis_server.url,
            "PUBSUB_REDIS_TIMEOUT": "1",
            "ESL_PORT": str(simulator.port),
            "ESL_PASSWORD": "ClueCon",
            "ESL_TIMEOUT": "1",
            **overrides,
        }
        return subprocess.run(redswitch_command("check"), env=env, capture_output=True, text=True, timeout=60)

    return run


def test_check_exits_0_when_redis_and_freeswitch_answer(check: Check) -> None:
    result = check()
    assert result.returncode == 0, result.stderr
    assert "ok: Redis and FreeSWITCH answer" in result.stdout


def test_check_names_redis_when_redis_is_down(check: Check) -> None:
    result = check(PUBSUB_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "redis: cannot reach redis://127.0.0.1:" in result.stderr
    assert "freeswitch" not in result.stderr  # the switch itself is fine


def test_check_names_freeswitch_when_esl_is_refused(check: Check) -> None:
    port = free_port()
    result = check(ESL_PORT=str(port))
    assert result.returncode == 1
    assert f"freeswitch: cannot connect to FreeSWITCH at 127.0.0.1:{port}" in result.stderr
    assert "redis" not in result.stderr


def test_check_says_wrong_password_when_freeswitch_rejects_it(check: Check) -> None:
    result = check(ESL_PASSWORD="not-the-password")
    assert result.returncode == 1
    assert "freeswitch: wrong ESL password at 127.0.0.1:" in result.stderr


def test_check_gives_up_within_esl_timeout_when_freeswitch_is_slow(check: Check, simulator: Simulator) -> None:
    # Given a switch that takes 5 s to answer anything, and ESL_TIMEOUT=1
    simulator.set_reply_delay(5)
    started = time.monotonic()
    result = check()
    # Then the check fails on FreeSWITCH, saying it timed out, well before the switch would have answered
    assert result.returncode == 1
    assert result.stderr.startswith("freeswitch: ")
    assert "within 1.0s" in result.stderr or "timed out after 1.0s" in result.stderr
    assert time.monotonic() - started < 5


def test_check_refuses_a_bad_setting_with_exit_2(check: Check) -> None:
    result = check(ESL_PORT="eighty")
    assert result.returncode == 2
    assert "ESL_PORT" in result.stderr
