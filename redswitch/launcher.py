"""Start the whole pipeline as child processes: for ``redswitch run``, ``redswitch demo`` and the tests.

Each part runs as it does in production (its own process, its own command line), so what works here works
in a deployment. Only processes started here are stopped, by their pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from types import TracebackType

from redswitch.config import Settings
from redswitch.redis_client import redis_from_settings
from redswitch.store import Keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def redswitch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "redswitch", *args]


def worker_command(processes: int = 1, threads: int = 8) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "redswitch.actors",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]


@dataclasses.dataclass
class Child:
    """A child process in a process group of its own: Dramatiq forks worker processes, and they go with it."""

    name: str
    proc: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal_group(signal.SIGKILL)  # anything it left behind

    def kill(self) -> None:
        """SIGKILL the process and everything it started (a crashed host, not a shutdown)."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


class Stack:
    """Bridge, listener and worker (and optionally the simulator) as child processes sharing one config."""

    def __init__(
        self,
        settings: Settings,
        simulate: bool = False,
        bridges: int = 1,
        listener: bool = True,
        env: Mapping[str, str] | None = None,
        log_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self.simulate = simulate
        self.bridges = bridges
        self.listener = listener
        self.env = {**os.environ, **settings.env(), **(env or {})}
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self) -> Stack:
        if self.simulate:
            self.spawn(
                "simulator",
                redswitch_command(
                    "simulate",
                    "--host",
                    self.settings.esl_url,
                    "--port",
                    str(self.settings.esl_port),
                    "--password",
                    self.settings.esl_password,
                ),
            )
            wait_for_port(self.settings.esl_url, self.settings.esl_port)
        if self.listener:
            self.spawn("listener", redswitch_command("listen"))
        self.spawn("worker", worker_command())
        for number in range(self.bridges):
            self.spawn(f"bridge{number}", redswitch_command("bridge"))
        return self

    def spawn(self, name: str, command: list[str]) -> Child:
        output = open(os.path.join(self.log_dir, f"{name}.log"), "ab") if self.log_dir else subprocess.DEVNULL
        proc = subprocess.Popen(command, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, proc)
        self.children.append(child)
        return child

    def alive(self) -> bool:
        return all(child.proc.poll() is None for child in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (for the demo when none is configured)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redswitch-demo-")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


SEED_JOB = {
    "type": "asp-call",
    "call_provider": "talk_call_provider",
    "callee_number": "1415697098",
    "caller_id_lega": "15105625882",
    "caller_id_legb": "14157697098",
    "caller_number": "15105625882",
    "dial_id": "talkiq_dial_id",
    "org_id": "talkiq_org_id",
    "user_id": "talkiq_user_id",
}


def run_demo(settings: Settings) -> int:
    """Push the original README's example job through simulator, bridge, worker and listener; print it all."""
    with private_redis() as url:
        demo = dataclasses.replace(settings, pubsub_redis_url=url, broker_url="", esl_port=free_port())
        with Stack(demo, simulate=True):
            return _demo_call(demo)


def _demo_call(settings: Settings) -> int:
    from redswitch.esl import EslClient
    from redswitch.protocol import commands

    client = redis_from_settings(settings)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    job = dict(SEED_JOB, dial_id=f"demo_{int(time.time())}")
    pubsub.subscribe(job["dial_id"])
    print(f"pushing to {settings.jobs_key}: {json.dumps(job)}")
    client.rpush(settings.jobs_key, json.dumps(job))
    answered: set[str] = set()
    hung_up: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and hung_up != {"0", "1"}:
        message = pubsub.get_message(timeout=0.2)
        if message is None:
            continue
        print(f"  {job['dial_id']} <- {message['data']}")
        event = json.loads(message["data"])
        if event["type"] == "answer-event":
            answered.add(event["side"])
        if event["type"] == "hangup-event":
            hung_up.add(event["side"])
        if answered == {"0", "1"} and not hung_up:
            keys = Keys(settings)
            print(
                f"active list {keys.active(job['dial_id'], job['org_id'], job['user_id'])}: "
                f"{client.lrange(keys.active(job['dial_id'], job['org_id'], job['user_id']), 0, -1)}"
            )
            uuid0 = client.hget(Keys.call(job["dial_id"]), "uuid0")
            print(f"hanging up side 0 ({uuid0!s}) through ESL")
            esl = EslClient(settings.esl_url, settings.esl_port, settings.esl_password)
            esl.api(commands.uuid_kill(str(uuid0)))
            esl.close()
            answered.add("done")
    history = Keys(settings).history(job["org_id"], job["user_id"])
    print(f"history {history}: {client.lrange(history, 0, -1)}")
    ok = hung_up == {"0", "1"}
    print("demo call completed" if ok else "demo call did not complete in 30 s")
    return 0 if ok else 1
