"""The redswitch CLI as a user runs it: run --simulate, push, watch (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.servers import RedisServer, free_port, wait_for_port


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "redswitch", *args]


def test_run_simulate_then_push_and_watch_a_call_to_its_end(redis_server: RedisServer) -> None:
    env = {**os.environ, "PUBSUB_REDIS_URL": redis_server.url, "ESL_PORT": str(free_port()), "ORIGINATE_TIMEOUT": "2"}
    stack = subprocess.Popen(
        cli("run", "--simulate"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port("127.0.0.1", int(env["ESL_PORT"]), timeout=20)
        time.sleep(2.0)  # bridge, listener and worker connect
        # Given someone watching a call, when its job (a busy callee) is pushed the legacy way
        watcher = subprocess.Popen(
            cli("watch", "cli_call", "--until-hangup", "--timeout", "20"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # subscribed
        pushed = subprocess.run(
            cli("push", "asp-call", "--caller", "15105625882", "--callee", "14155550486", "--dial-id", "cli_call"),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert pushed.returncode == 0 and pushed.stdout.strip() == "cli_call"
        out, err = watcher.communicate(timeout=40)
        # Then watch printed the call's events and stopped at side 0's hangup
        assert watcher.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert events[0] == {"type": "call-start", "dial_id": "cli_call"}
        assert {"type": "answer-event", "side": "0"} in events
        assert events[-1]["type"] == "hangup-event" and events[-1]["side"] == "0"
        assert events[-1]["cause"] == "USER_BUSY"
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(30)


def test_a_bad_setting_stops_the_cli_with_a_message_naming_it() -> None:
    result = subprocess.run(
        cli("check"), env={**os.environ, "ESL_PORT": "eighty"}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "ESL_PORT" in result.stderr
