"""The redswitch CLI as a user runs it: run (with its children's output), push, watch (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import RedisServer, free_port


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "redswitch", *args]


class Run:
    """``redswitch run`` as a user starts it, its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            cli("run", *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first line matching ``pattern`` (a regex), waiting for it up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"no line matches {pattern!r}; output:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def children(self) -> dict[str, int]:
        """Each child's name and pid, from run's own ``system | <name> started (pid=N)`` lines."""
        found = (re.search(r"\| (\S+) started \(pid=(\d+)\)$", line) for line in list(self.lines))
        return {match[1]: int(match[2]) for match in found if match}

    def ready(self, timeout: float = 60.0) -> None:
        """Every process said it is working: the listener follows FreeSWITCH, the worker and the bridge take jobs."""
        self.wait_for_line(r"^\d\d:\d\d:\d\d listener +\| .*listening to FreeSWITCH", timeout)
        self.wait_for_line(r"^\d\d:\d\d:\d\d worker +\| .*Worker process is ready for action", timeout)
        self.wait_for_line(r"^\d\d:\d\d:\d\d bridge0 +\| .*taking jobs from", timeout)
        self.wait_for_line(r"^\d\d:\d\d:\d\d scheduler +\| .*reconciling every", timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # only if a test failed half-way; the children follow it
        self.proc.wait(30)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def run_env(redis_server: RedisServer) -> dict[str, str]:
    return {**os.environ, "PUBSUB_REDIS_URL": redis_server.url, "ESL_PORT": str(free_port()), "ORIGINATE_TIMEOUT": "2"}


@pytest.fixture
def started() -> Iterator[list[Run]]:
    runs: list[Run] = []
    yield runs
    for run in runs:
        run.stop()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def test_run_simulate_then_push_and_watch_a_call_to_its_end(
    run_env: dict[str, str], redis_server: RedisServer, started: list[Run]
) -> None:
    run = Run(run_env, "--simulate")
    started.append(run)
    run.ready()
    assert set(run.children()) == {"simulator", "listener", "worker", "bridge0", "scheduler"}  # every process
    # Given someone watching a call, when its job (a busy callee) is pushed the legacy way
    # (from the call's first event: the watcher need not be ready before the push)
    watcher = subprocess.Popen(
        cli("watch", "cli_call", "--from-start", "--until-hangup", "--timeout", "20"),
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pushed = subprocess.run(
        cli("push", "asp-call", "--caller", "15105625882", "--callee", "14155550486", "--dial-id", "cli_call"),
        env=run_env,
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
    # And the worker's line about the call was shown, prefixed with its name
    run.wait_for_line(r"^\d\d:\d\d:\d\d worker +\| .*dial_id=cli_call originate handed to FreeSWITCH")
    # When the user presses Ctrl-C, every process stops cleanly and promptly, and run exits 0
    pids = descendants(run.proc.pid)
    began = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(30) == 0
    took = time.monotonic() - began
    assert not [pid for pid in pids if running(pid)]
    assert took < 10, f"stopping took {took:.1f}s"  # about a second on an idle machine
    print(f"redswitch run stopped in {took:.2f}s")
    run.wait_for_line(r"system +\| stopping")
    run.wait_for_line(r"system +\| worker exited with code 0")


def test_run_prints_a_failing_childs_error_line_and_stops_the_others(
    run_env: dict[str, str], started: list[Run]
) -> None:
    # Given a metrics port someone else holds: the listener, the first process to serve metrics, cannot start
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Run({**run_env, "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"})
        started.append(run)
        # Then its error is shown, prefixed with its time and name, and run says it exited
        run.wait_for_line(r"^\d\d:\d\d:\d\d listener +\| .*Address already in use")
        run.wait_for_line(r"^\d\d:\d\d:\d\d system +\| listener exited with code 1$")
        # And run stops the others and exits 1, leaving no process behind
        pids = set(run.children().values())
        assert run.proc.wait(60) == 1
    assert len(pids) == 4 and not [pid for pid in pids if running(pid)]
    assert set(run.children()) == {"listener", "worker", "bridge0", "scheduler"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_run_killed_with_sigkill_leaves_no_process_behind(run_env: dict[str, str], started: list[Run]) -> None:
    # Given redswitch run with every process working (the worker has forked its worker process too)
    run = Run(run_env, "--simulate")
    started.append(run)
    run.ready()
    pids = descendants(run.proc.pid)
    assert set(run.children().values()) < pids  # the children, and the worker's own process below it
    try:
        # When it is killed outright, with no chance to stop its children
        run.proc.kill()
        run.proc.wait(10)
        # Then every process it started, and theirs, is gone within a few seconds (each got the parent-death signal)
        assert wait_until(lambda: not [pid for pid in pids if running(pid)], 10), [p for p in pids if running(p)]
    finally:
        for pid in pids:  # what this test started and left running, if it failed
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_bad_setting_stops_the_cli_with_a_message_naming_it() -> None:
    result = subprocess.run(
        cli("check"), env={**os.environ, "ESL_PORT": "eighty"}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "ESL_PORT" in result.stderr
