"""The simulator in a process of its own, for the benchmarks: FreeSWITCH never shares Redswitch's interpreter.

In the bench process, the simulator's event loop would share a GIL with the code that paces the pushes and
takes the timestamps, and every event it encoded would delay both. Here it runs apart, and stamps each command
as it arrives with ``time.perf_counter()`` (the system-wide monotonic clock on Linux, comparable across
processes). The bench asks it over a pipe: how many originates of a prefix arrived, when each arrived, and when
a command arrived after a given point.
"""

from __future__ import annotations

import os
import pickle
import secrets
import subprocess
import sys
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from redswitch.simulator import Scenario, Simulator


class TimedSimulator(Simulator):
    """Records when each command arrived (perf_counter), for latency measured at the switch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, str]] = []
        self.calls_by_prefix: dict[str, int] = {}

    def record_command(self, line: str) -> None:
        self.arrivals.append((time.perf_counter(), line))
        if "&bridge(" in line:  # count cheaply, so waiting for N originates costs the switch no CPU
            prefix = line.split("redswitch_dial_id=", 1)[1].split(",", 1)[0].rsplit("_", 1)[0]
            self.calls_by_prefix[prefix] = self.calls_by_prefix.get(prefix, 0) + 1
        super().record_command(line)

    def originate_times(self, marker: str) -> dict[str, float]:
        """When the originate of each dial_id containing ``marker`` arrived."""
        found = {}
        for at, line in list(self.arrivals):
            if "&bridge(" in line and marker in line:
                found[line.split("redswitch_dial_id=")[1].split(",")[0]] = at
        return found

    def first_after(self, index: int, needle: str) -> float | None:
        """When the first command containing ``needle`` arrived, among those after the first ``index``."""
        return next((at for at, line in self.arrivals[index:] if needle in line), None)


def _serve(conn: Connection, scenario: Scenario) -> None:
    """Run the simulator and answer the bench's questions until it says stop."""
    sim = TimedSimulator(host="127.0.0.1", port=0, password="ClueCon", scenario=scenario).start()
    conn.send(sim.port)
    answers = {
        "count": lambda prefix: sim.calls_by_prefix.get(prefix, 0),
        "originate_times": sim.originate_times,
        "arrived": lambda _: len(sim.arrivals),
        "first_after": lambda args: sim.first_after(*args),
        "commands": lambda _: sim.commands(),
    }
    while True:
        request, argument = conn.recv()
        if request == "stop":
            sim.stop()
            conn.send(None)
            return
        conn.send(answers[request](argument))


def main(argv: list[str]) -> None:
    """The child's entry point: connect back to the bench, then serve."""
    host, port, authkey, scenario = argv
    conn = Client((host, int(port)), authkey=bytes.fromhex(authkey))
    _serve(conn, pickle.loads(bytes.fromhex(scenario)))  # our own parent sent these bytes


class RemoteSimulator:
    """A :class:`TimedSimulator` in a child process, with the part of the Simulator API the pipeline uses."""

    password = "ClueCon"

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario.default()
        self.port = 0
        self._conn: Connection | None = None
        self._process: Any = None

    def start(self) -> RemoteSimulator:
        """Start the child (a fresh interpreter, whatever the parent's ``__main__``) and wait for its port."""
        authkey = secrets.token_bytes(16)
        with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
            host, port = listener.address
            code = "import sys; from bench.remote_sim import main; main(sys.argv[1:])"
            args = [host, str(port), authkey.hex(), pickle.dumps(self.scenario).hex()]
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            self._process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=root)
            self._conn = listener.accept()
        self.port = self._ask_raw()
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._ask("stop")
            self._process.wait(10)
        self._process = None

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def _ask_raw(self) -> Any:
        assert self._conn is not None
        if not self._conn.poll(30):
            raise TimeoutError("the simulator process did not answer")
        return self._conn.recv()

    def _ask(self, request: str, argument: Any = None) -> Any:
        assert self._conn is not None
        self._conn.send((request, argument))
        return self._ask_raw()

    def count(self, prefix: str) -> int:
        return int(self._ask("count", prefix))

    def originate_times(self, marker: str) -> dict[str, float]:
        return dict(self._ask("originate_times", marker))

    def arrived(self) -> int:
        return int(self._ask("arrived"))

    def first_after(self, index: int, needle: str) -> float | None:
        at = self._ask("first_after", (index, needle))
        return None if at is None else float(at)

    def commands(self) -> list[str]:
        return list(self._ask("commands"))
