"""Start the whole pipeline as child processes: for ``redswitch run``, ``redswitch demo`` and the tests.

Each part runs as it does in production (its own process, its own command line), so what works here works
in a deployment. Only processes started here are stopped, by their pid (and their own process group). On Linux
every child also gets a parent-death signal: a launcher killed with SIGKILL takes its children with it.

``redswitch run`` (:func:`run_foreground`) shows every child's output, each line prefixed with the time and the
child's name as foreman and honcho do (``12:00:00 listener  | ...``), and stops them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import IO

from redswitch.config import Settings
from redswitch.store import Keys
from redswitch.store.connection import redis_from_settings


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


#: How long (ms) an idle worker thread or consumer waits before looking again (Dramatiq reads it from the
#: environment; its default is 1000). It is also how long they take to notice a stop: with 250 the worker's
#: threads stop within a quarter of a second (Dramatiq's own once-a-second loops, in its worker process and its
#: master, still add up to about two seconds in all). A message wakes its consumer at once either way
#: (redswitch.broker.waking). A value in the launcher's own environment wins.
WORKER_TIMEOUT_MS = 250


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


#: prctl(2) option: the signal the kernel sends a process when the thread that started it exits.
PR_SET_PDEATHSIG = 1
#: The parent-death signal: SIGTERM, so that each child stops as cleanly as on a normal shutdown (the Dramatiq
#: master stops its worker processes, which it would orphan if it were killed outright).
DEATH_SIGNAL = signal.SIGTERM


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get :data:`DEATH_SIGNAL` when this process dies (Linux; else None).

    Runs between fork and exec, so it only calls prctl (loaded beforehand) and getppid: if this process died
    before prctl took effect, the child is already an orphan and kills itself rather than run on unnoticed.
    The kernel sends the signal when the *thread* that started the child ends, so children are started from a
    thread that lives as long as they do (the main thread, here and in the tests).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@dataclasses.dataclass
class Child:
    """A child process in a process group of its own: Dramatiq forks worker processes, and they go with it."""

    name: str
    proc: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        self.terminate()
        self.finish(time.monotonic() + timeout)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM): it finishes what it is doing and exits."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def finish(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the process to exit, kill it if it has not, and then anything
        it left behind in its process group."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal_group(signal.SIGKILL)

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
        scheduler: bool = False,
        pipe_output: bool = False,
    ) -> None:
        """``log_dir``: each child's output goes to ``<name>.log`` there; ``pipe_output``: to a pipe in
        ``child.proc.stdout`` (for :func:`run_foreground`); neither: discarded."""
        self.settings = settings
        self.simulate = simulate
        self.bridges = bridges
        self.listener = listener
        self.scheduler = scheduler
        # Children write through pipes line by line, as they would to a terminal.
        defaults = {"dramatiq_worker_timeout": str(WORKER_TIMEOUT_MS)}
        self.env = {**defaults, **os.environ, **settings.env(), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_dir = log_dir
        self.pipe_output = pipe_output
        self.children: list[Child] = []
        self._preexec = die_with_parent()

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
        # With METRICS_PORT set, each process serving metrics gets its own port: METRICS_PORT, the next, ...
        ports = itertools.count(self.settings.metrics_port)

        def metrics() -> dict[str, str]:
            return {"METRICS_PORT": str(next(ports))} if self.settings.metrics_port else {}

        if self.listener:
            self.spawn("listener", redswitch_command("listen"), metrics())
        self.spawn("worker", worker_command())
        for number in range(self.bridges):
            self.spawn(f"bridge{number}", redswitch_command("bridge"), metrics())
        if self.scheduler:
            self.spawn("scheduler", redswitch_command("schedule"), metrics())
        return self

    def spawn(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> Child:
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.pipe_output:
            output = subprocess.PIPE
        elif self.log_dir:
            output = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        proc = subprocess.Popen(
            command,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, and not by the terminal's Ctrl-C
            preexec_fn=self._preexec,
        )
        if not isinstance(output, int):
            output.close()
        child = Child(name, proc)
        self.children.append(child)
        return child

    def alive(self) -> bool:
        return all(child.proc.poll() is None for child in self.children)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child at once, then wait for them all (one shared deadline), then kill what is left.

        The simulator goes last, so that the listener does not see its FreeSWITCH vanish while stopping.
        """
        for wave in self.stopping_order():
            for child in wave:
                child.terminate()
            deadline = time.monotonic() + timeout
            for child in wave:
                child.finish(deadline)
        self.children.clear()

    def stopping_order(self) -> list[list[Child]]:
        """Redswitch's own processes first (all at once), then the simulator."""
        last = [child for child in self.children if child.name == "simulator"]
        return [[child for child in self.children if child not in last], last]

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class LinePrinter:
    """Writes children's output as honcho does: ``HH:MM:SS name | line``, names padded to one width."""

    def __init__(self, names: list[str], out: IO[str]) -> None:
        self.width = max(len(name) for name in [*names, "system"])
        self.out = out
        self._partial: dict[str, bytes] = {}

    def feed(self, name: str, data: bytes) -> None:
        """Print every complete line of ``data`` (the rest waits for the next chunk, or for :meth:`flush`)."""
        *lines, rest = (self._partial.pop(name, b"") + data).split(b"\n")
        for line in lines:
            self.line(name, line.rstrip(b"\r").decode(errors="replace"))
        if rest:
            self._partial[name] = rest

    def flush(self, name: str) -> None:
        rest = self._partial.pop(name, b"")
        if rest:
            self.line(name, rest.decode(errors="replace"))

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | {text}\n")
        self.out.flush()


def run_foreground(
    stack: Stack, stop_requests: Callable[[], int], out: IO[str] | None = None, grace: float = 10.0
) -> int:
    """Show the output of ``stack``'s children (started with ``pipe_output``) until a stop is requested or one of
    them exits; then stop them all, still showing what they print. 0 after a stop request, 1 when a child exited.

    ``stop_requests()`` counts the requests (Ctrl-C, SIGTERM): a second one while stopping kills what still runs.
    """
    with Foreground(stack, stop_requests, out or sys.stdout) as foreground:
        code = foreground.watch()
        foreground.stop_all(grace)
    return code


class Foreground:
    """The output pump of :func:`run_foreground`: one selector over every child's pipe, in this one thread."""

    def __init__(self, stack: Stack, stop_requests: Callable[[], int], out: IO[str]) -> None:
        self.stack = stack
        self.stop_requests = stop_requests
        self.printer = LinePrinter([child.name for child in stack.children], out)
        self.selector = selectors.DefaultSelector()
        self.reported: set[str] = set()
        for child in stack.children:
            if child.proc.stdout is not None:
                self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
            self.printer.line("system", f"{child.name} started (pid={child.proc.pid})")

    def __enter__(self) -> Foreground:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stack.stop()  # a no-op after stop_all; else (an error here) the children still go
        self.selector.close()

    def pump(self, timeout: float) -> None:
        """Print what the children wrote, waiting at most ``timeout`` seconds for something."""
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            data = os.read(key.fd, 65536)
            if data:
                self.printer.feed(child.name, data)
            else:  # the child closed its output: it exited (or is about to)
                self.selector.unregister(key.fileobj)
                self.printer.flush(child.name)

    def watch(self) -> int:
        """Until a stop request (0) or a child's exit (1)."""
        while True:
            self.pump(0.1)
            if self.stop_requests():
                self.printer.line("system", "stopping (SIGTERM to every process)")
                return 0
            exited = [child for child in self.stack.children if child.proc.poll() is not None]
            if exited:
                for child in exited:
                    self.exited(child)
                self.printer.line("system", "a process exited: stopping the others")
                return 1

    def stop_all(self, grace: float) -> None:
        """SIGTERM every child (the simulator last), showing their output; kill them after ``grace`` seconds, or at
        once on a second stop request."""
        for wave in self.stack.stopping_order():
            for child in wave:
                child.terminate()
            deadline = time.monotonic() + grace
            while any(child.proc.poll() is None for child in wave) and time.monotonic() < deadline:
                self.pump(0.05)
                if self.stop_requests() > 1:
                    self.printer.line("system", "killing every process")
                    deadline = time.monotonic()
            for child in wave:
                child.finish(deadline)
                self.exited(child)
        drained = time.monotonic() + 1.0
        while self.selector.get_map() and time.monotonic() < drained:  # what they printed last
            self.pump(0.1)
        self.stack.children.clear()

    def exited(self, child: Child) -> None:
        if child.name not in self.reported:
            self.reported.add(child.name)
            self.printer.line("system", f"{child.name} exited with code {child.proc.returncode}")


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
    from redswitch.esl.client import EslClient
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
