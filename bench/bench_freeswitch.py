"""The real-switch benchmark (``./scripts/bench --freeswitch HOST:PORT``): push → answered on a real FreeSWITCH.

Each step offers click-to-calls at a fixed rate for a few seconds, two ways, one after the other, in alternating
order over three rounds:

* **bare**: this process builds the very ``originate`` Redswitch would (``redswitch.originate.click_to_call``)
  and sends it with ``bgapi`` on an ESL connection of its own, paced, one after the other;
* **redswitch**: this process ``RPUSH``es the legacy job onto a private redis-server, where a real bridge,
  worker and listener (the ``redswitch run`` processes, started as ``redswitch.launcher.Stack`` does) take it.

In both, an observer (an ESL event connection of this process) stamps every channel's ``CHANNEL_CREATE``,
``CHANNEL_ANSWER`` and ``CHANNEL_HANGUP_COMPLETE`` (its arrival here and the switch's own
``Event-Date-Timestamp``) and hangs side 0 up with ``uuid_kill`` ``HOLD`` seconds after it answered, so the
switch carries the same calls for the same time whoever placed them. For Redswitch, a subscriber also stamps
``call-start`` and ``answer-event`` as a client of Redswitch sees them on the dial_id channel.

CPU per call: user + system time (``/proc/<pid>/stat``) of the switch, of Redswitch's bridge, worker (with the
process Dramatiq forks) and listener, and of its Redis, from the first push until every channel has hung up,
divided by the calls placed. Only this benchmark's own channels are hung up (others may be testing on the same
switch: the calls of others it started meanwhile are counted and reported); still, never point this at a switch
that carries real calls: the load alone would hurt them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import heapq
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import redis

from bench.bench_redswitch import children_of, cpu_seconds, pct
from redswitch.cli.launcher import Stack
from redswitch.config import Settings
from redswitch.messages import job_from_dict
from redswitch.originate import click_to_call
from redswitch.protocol import Mode, Parser, encode_command
from redswitch.protocol.frames import Frame
from redswitch.protocol.pick import header_picker
from tests.payloads import job
from tests.servers import RedisServer

HOLD = 2.0  # seconds side 0 stays up after it answered
FS_PID_FILES = ("/usr/local/freeswitch/var/run/freeswitch/freeswitch.pid", "/usr/local/freeswitch/run/freeswitch.pid")


# -- a small synchronous ESL client -----------------------------------------------------------------------------


class Esl:
    """An ESL connection: ``api``/``bgapi`` with their replies, or (``events``) a stream of plain events."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = Parser(Mode.FRAMES)
        self.pending: list[Frame] = []
        self.until("auth/request")
        reply = self.command(f"auth {password}")
        if not reply.startswith("+OK"):
            raise RuntimeError(f"ESL auth refused: {reply}")

    def frame(self) -> Frame:
        while not self.pending:
            data = self.sock.recv(262144)
            if not data:
                raise EOFError("the switch closed the connection")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    def until(self, content_type: str) -> Frame:
        while True:
            frame = self.frame()
            if frame.content_type == content_type:
                return frame

    def command(self, line: str, headers: tuple[tuple[str, str], ...] = ()) -> str:
        self.sock.sendall(encode_command(line, headers))
        return self.until("command/reply").reply_text or ""

    def api(self, line: str) -> str:
        self.sock.sendall(encode_command("api " + line))
        return self.until("api/response").body

    def close(self) -> None:
        self.sock.close()


# -- the observer: answers as the switch reports them, and the hang-ups ----------------------------------------


@dataclasses.dataclass
class Stamp:
    arrived: float  # time.time() when the event reached this process
    switch: float  # the switch's Event-Date-Timestamp, in seconds (FreeSWITCH's clock moves in 20 ms ticks)
    channel: str


PICK = header_picker(
    ["Event-Name", "Unique-ID", "Event-Date-Timestamp", "variable_redswitch_dial_id", "variable_redswitch_side"]
)


class Observer:
    """Stamps the channel events of every redswitch call; hangs side 0 up ``HOLD`` s after it answered."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self.esl = Esl(host, port, password)
        self.esl.command("event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
        self.killer = Esl(host, port, password)
        self.stamps: dict[str, dict[str, Stamp]] = defaultdict(dict)  # dial_id -> {"CHANNEL_ANSWER/0": ...}
        self.lock = threading.Lock()
        self.kills: list[tuple[float, str]] = []
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._kill)]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        while not self.stopping:
            try:
                frame = self.esl.frame()
            except (OSError, EOFError):
                return
            if frame.content_type != "text/event-plain":
                continue
            now = time.time()
            headers = PICK(frame.raw_body)
            dial_id = headers.get("variable_redswitch_dial_id")
            if not dial_id:
                continue
            name, side = headers["Event-Name"], headers.get("variable_redswitch_side", "")
            stamp = Stamp(now, int(headers.get("Event-Date-Timestamp", "0")) / 1e6, headers.get("Unique-ID", ""))
            with self.lock:
                self.stamps[dial_id].setdefault(f"{name}/{side}", stamp)
                if name == "CHANNEL_ANSWER" and side == "0":
                    heapq.heappush(self.kills, (now + HOLD, headers["Unique-ID"]))
                    self.wake.notify()

    def _kill(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and (not self.kills or self.kills[0][0] > time.time()):
                    self.wake.wait(max(0.001, self.kills[0][0] - time.time()) if self.kills else None)
                if self.stopping:
                    return
                _, channel = heapq.heappop(self.kills)
            self.killer.command(f"bgapi uuid_kill {channel}")

    def ended(self, dial_ids: list[str]) -> bool:
        with self.lock:
            return all(
                "CHANNEL_HANGUP_COMPLETE/0" in self.stamps[d] and "CHANNEL_HANGUP_COMPLETE/1" in self.stamps[d]
                for d in dial_ids
            )

    def kill_leftovers(self, dial_ids: list[str]) -> None:
        """Hang up any channel of ours still up (only ours: others may test on the same switch)."""
        with self.lock:
            uuids = [
                s.channel
                for d in dial_ids
                for key, s in self.stamps.get(d, {}).items()
                if key.startswith("CHANNEL_CREATE/") and f"CHANNEL_HANGUP_COMPLETE/{key[-1]}" not in self.stamps[d]
            ]
        for channel in uuids:
            self.killer.command(f"bgapi uuid_kill {channel}")

    def close(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify()
        self.esl.close()
        self.killer.close()


class Subscriber:
    """Stamps what a client of Redswitch sees on the dial_id channels of one run (``call-start``, answers)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(prefix + "*")
        self.pubsub.get_message(timeout=1)
        self.stamps: dict[str, dict[str, float]] = defaultdict(dict)
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping:
            message = self.pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage":
                continue
            now = time.time()
            event = json.loads(message["data"])
            key = event["type"] + (f"/{event['side']}" if "side" in event else "")
            self.stamps[message["channel"].decode()].setdefault(key, now)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.pubsub.close()


class Tracer:
    """``MONITOR`` on Redswitch's Redis: when Redis ran each command of a call along the path (a diagnostic: it
    costs Redis and this process some CPU, so runs with it are not the table's)."""

    #: (hop, what marks it in a MONITOR line): the first line of a dial_id holding the marker wins
    HOPS = (
        ("push (RPUSH)", "RPUSH talkiq-asp.calls"),
        ("bridge: dedup SET NX", "SET redswitch:dialled:"),
        ("bridge: enqueued", "hset dramatiq:redswitch-calls.msgs"),
        ("worker: claim (call-start)", 'PUBLISH {id} {"type": "call-start"'),
        ("worker: sent (after bgapi reply)", "HSET redswitch:call:{id} state sent"),
        ("listener: first event (CREATE)", "HSET redswitch:call:{id} seen 1"),
        ("listener: answer-event 0", 'PUBLISH {id} {"type": "answer-event", "side": "0"}'),
        ("listener: answer-event 1", 'PUBLISH {id} {"type": "answer-event", "side": "1"}'),
    )

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[tuple[float, str]] = []
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()  # type: ignore[no-untyped-call]
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for command in self.monitor.listen():
                if self.prefix in command["command"] or "dramatiq:redswitch-calls.msgs" in command["command"]:
                    self.lines.append((float(command["time"]), command["command"]))
        except (redis.ConnectionError, OSError, ValueError):
            return

    def close(self) -> dict[str, dict[str, float]]:
        """{dial_id: {hop: when}}."""
        time.sleep(0.2)
        try:
            self.monitor.connection.disconnect()
        except (redis.ConnectionError, OSError):
            pass
        hops: dict[str, dict[str, float]] = defaultdict(dict)
        for when, line in self.lines:
            start = line.find(self.prefix)
            if start < 0:
                continue
            end = start + len(self.prefix)
            while end < len(line) and line[end].isdigit():
                end += 1
            dial_id = line[start:end]
            for hop, marker in self.HOPS:
                if hop not in hops[dial_id] and marker.replace("{id}", dial_id) in line:
                    hops[dial_id][hop] = when
        return hops


# -- the runs --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    kind: str
    rate: int
    pushed: dict[str, float]
    observer: dict[str, dict[str, Stamp]]
    client: dict[str, dict[str, float]]
    cpu: dict[str, float]
    waited: dict[str, float]  # seconds runnable but not running, per role
    load: tuple[float, float, float]
    foreign: int  # calls of others (dial_ids not ours) the switch started during the run
    others: float  # CPU of every other process on the machine during the run, in cores (other people's tests)
    seconds: float
    switch_cps: int = 0
    handed: dict[str, float] = dataclasses.field(default_factory=dict)  # dial_id -> bgapi replied (worker log, ms)
    nice: int = 0
    slice_us: int = 0
    hops: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # --trace: Redis MONITOR times

    def latencies(self, key: str, source: str = "observer", switch_clock: bool = False) -> list[float]:
        out = []
        for dial_id, pushed in self.pushed.items():
            if source == "observer":
                stamp = self.observer.get(dial_id, {}).get(key)
                if stamp is not None:
                    out.append(((stamp.switch if switch_clock else stamp.arrived) - pushed) * 1000)
            elif source == "handed":
                if dial_id in self.handed:
                    out.append((self.handed[dial_id] - pushed) * 1000)
            else:
                at = self.client.get(dial_id, {}).get(key)
                if at is not None:
                    out.append((at - pushed) * 1000)
        return out

    def answered0(self) -> list[float]:
        """What the placer learns: the answer-event for Redswitch, the CHANNEL_ANSWER on its own socket for bare."""
        if self.kind == "bare":
            return self.latencies("CHANNEL_ANSWER/0")
        return self.latencies("answer-event/0", "client")

    def answered1(self) -> list[float]:
        if self.kind == "bare":
            return self.latencies("CHANNEL_ANSWER/1")
        return self.latencies("answer-event/1", "client")

    def per_call_ms(self, role: str) -> float:
        return 1000 * self.cpu[role] / max(1, len(self.pushed))


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; ``/proc/stat``)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU (``/proc/<pid>/task/*/schedstat``)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def set_slice(tid: int, microseconds: int) -> None:
    """An experiment: ask EEVDF (Linux 6.12+) for a shorter time slice for thread ``tid`` (``sched_setattr``
    with SCHED_OTHER and ``sched_runtime``): a task with a shorter slice gets an earlier deadline, so it runs
    sooner when it wakes, without a larger share of the CPU."""
    import ctypes
    import struct

    attr = struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, microseconds * 1000, 0, 0, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(314, tid, ctypes.c_char_p(attr), 0) != 0:  # 314: sched_setattr on x86_64
        raise OSError(ctypes.get_errno(), f"sched_setattr({tid}) failed")


def fs_pid() -> int:
    for path in FS_PID_FILES:
        if os.path.exists(path):
            return int(open(path).read().strip())
    raise RuntimeError("no FreeSWITCH pid file found (looked in " + ", ".join(FS_PID_FILES) + ")")


def payload(dial_id: str) -> dict[str, Any]:
    return job(dial_id=dial_id, user_id=dial_id)


def pace(rate: int, seconds: float, prefix: str, send: Any) -> dict[str, float]:
    """Send ``rate`` calls a second: call n at a random moment of its own 1/rate slot, the same moments every run;
    return when each was due (the bare loop waits for each ``bgapi`` reply, and falls behind when the switch is slow).

    FreeSWITCH works in 20 ms ticks (its timestamps, its ``sleep``, the answer of the test carrier): strictly
    periodic pushes would meet every tick at the same phase, and a few ms more before the originate would cost
    all calls, or none, a tick.
    """
    pushed: dict[str, float] = {}
    jitter = random.Random(rate)
    start, wall = time.perf_counter(), time.time()
    for n in range(int(rate * seconds)):
        offset = (n + jitter.random()) / rate
        time.sleep(max(0.0, start + offset - time.perf_counter()))
        dial_id = f"{prefix}{n}"
        pushed[dial_id] = wall + offset  # when the call was due: a sender that falls behind pays for it
        send(dial_id)
    return pushed


class Bench:
    def __init__(self, host: str, port: int, password: str, seconds: float) -> None:
        self.host, self.port, self.password, self.seconds = host, port, password, seconds
        self.fs_pid = fs_pid()
        self.redis = RedisServer().start()
        self.settings = Settings(
            pubsub_redis_url=self.redis.url,
            esl_url=host,
            esl_port=port,
            esl_password=password,
            originate_timeout=10,
            switch_cps=0,
        )

    def close(self) -> None:
        self.redis.stop()

    def _measure(
        self, kind: str, rate: int, prefix: str, send: Any, roles: dict[str, list[int]], subscriber: Subscriber | None
    ) -> Run:
        observer = Observer(self.host, self.port, self.password)
        try:
            load = os.getloadavg()
            before = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
            waited = {role: sum(map(run_delay, pids)) for role, pids in roles.items()}
            busy, started = machine_busy(), time.monotonic()
            pushed = pace(rate, self.seconds, prefix, send)
            deadline = time.monotonic() + 60
            while not observer.ended(list(pushed)) and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu = {role: sum(map(cpu_seconds, pids)) - before[role] for role, pids in roles.items()}
            waited = {role: sum(map(run_delay, pids)) - waited[role] for role, pids in roles.items()}
            elapsed = time.monotonic() - started
            others = (machine_busy() - busy - sum(cpu.values())) / elapsed
            time.sleep(0.3)  # the last events reach the subscriber
            with observer.lock:
                stamps = {d: dict(s) for d, s in observer.stamps.items()}
            client = {d: dict(s) for d, s in subscriber.stamps.items()} if subscriber else {}
            foreign = sum(1 for d in stamps if d not in pushed and not d.startswith("warm"))
            return Run(kind, rate, pushed, stamps, client, cpu, waited, load, foreign, others, elapsed)
        finally:
            observer.kill_leftovers(list(pushed) if "pushed" in locals() else [])
            observer.close()

    def bare(self, rate: int) -> Run:
        esl = Esl(self.host, self.port, self.password)
        prefix = f"bare{rate}_{time.monotonic_ns()}_"

        handed: dict[str, float] = {}

        def send(dial_id: str) -> None:
            call = job_from_dict(payload(dial_id))
            command = click_to_call(self.settings, call, str(uuid.uuid4()), str(uuid.uuid4()))
            esl.command(f"bgapi {command}", (("Job-UUID", str(uuid.uuid4())),))
            handed[dial_id] = time.time()

        try:
            roles = {"switch": [self.fs_pid], "bench": [os.getpid()]}
            run = self._measure("bare", rate, prefix, send, roles, None)
            run.handed = handed
            return run
        finally:
            esl.close()

    def redswitch(
        self,
        rate: int,
        switch_cps: int = 0,
        nice: int = 0,
        trace: bool = False,
        profile: str = "",
        slice_us: int = 0,
    ) -> Run:
        redis.Redis.from_url(self.redis.url).flushall()
        settings = dataclasses.replace(self.settings, switch_cps=switch_cps)
        log_dir = tempfile.mkdtemp(prefix="redswitch-fsbench-")
        stack = Stack(settings, log_dir=log_dir).start()
        client = redis.Redis.from_url(self.redis.url)
        try:
            self._warm(client, settings, log_dir)
            prefix = f"rs{rate}_{time.monotonic_ns()}_"
            subscriber = Subscriber(self.redis.url, prefix)
            roles = {child.name: [child.proc.pid, *children_of(child.proc.pid)] for child in stack.children}
            assert self.redis.proc is not None
            roles.update({"redis": [self.redis.proc.pid], "switch": [self.fs_pid], "bench": [os.getpid()]})
            if nice or slice_us:  # experiments: Redswitch's processes (and its Redis) ahead of the switch for a CPU
                for role, pids in roles.items():
                    if role not in ("switch", "bench"):
                        for pid in pids:
                            for task in os.listdir(f"/proc/{pid}/task"):
                                if nice:
                                    os.setpriority(os.PRIO_PROCESS, int(task), nice)
                                if slice_us:
                                    set_slice(int(task), slice_us)

            def send(dial_id: str) -> None:
                client.rpush(settings.jobs_key, json.dumps(payload(dial_id)))

            tracer = Tracer(self.redis.url, prefix) if trace else None
            spies = [
                subprocess.Popen(
                    [
                        os.path.join(os.path.dirname(sys.executable), "py-spy"),
                        "record",
                        "--nonblocking",
                        "-r",
                        "200",
                        "-f",
                        "raw",
                        "-o",
                        os.path.join(profile, f"{role}.txt"),
                        "-d",
                        str(int(self.seconds) + 2),
                        "-p",
                        str(pids[-1]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for role, pids in roles.items()
                if profile and role not in ("switch", "bench", "redis")
            ]
            try:
                run = self._measure("redswitch", rate, prefix, send, roles, subscriber)
                if tracer is not None:
                    run.hops = tracer.close()
                for spy in spies:
                    spy.wait(30)
                run.switch_cps, run.nice, run.slice_us = switch_cps, nice, slice_us
                run.handed = handed_times(os.path.join(log_dir, "worker.log"))
                return run
            finally:
                subscriber.close()
        finally:
            stack.stop()

    def _warm(self, client: redis.Redis, settings: Settings, log_dir: str) -> None:
        """Three calls through the started processes (answered on both sides), then a clean switch."""
        prefix = f"warm{time.monotonic_ns()}_"
        subscriber = Subscriber(self.redis.url, prefix)
        observer = Observer(self.host, self.port, self.password)
        try:
            dial_ids = [f"{prefix}{n}" for n in range(3)]
            for dial_id in dial_ids:
                client.rpush(settings.jobs_key, json.dumps(payload(dial_id)))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if all("answer-event/1" in subscriber.stamps[d] for d in dial_ids) and observer.ended(dial_ids):
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError(f"Redswitch did not complete its warm-up calls; logs in {log_dir}")
        finally:
            observer.close()
            subscriber.close()
        time.sleep(0.5)


def handed_times(path: str) -> dict[str, float]:
    """dial_id -> when the worker logged ``originate handed to FreeSWITCH`` (after the bgapi's reply; ms)."""
    found = {}
    with open(path, errors="replace") as log:
        for line in log:
            if "originate handed" in line and line.startswith("[") and "dial_id=" in line:
                stamp = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found[line.split("dial_id=", 1)[1].split(" ", 1)[0]] = stamp
    return found


# -- reporting -------------------------------------------------------------------------------------------------


def fmt(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {pct(values, 0.5):.1f} / p99 {pct(values, 0.99):.1f} / max {max(values):.1f} ms"


def describe(run: Run) -> None:
    n = len(run.pushed)
    a0, a1 = run.answered0(), run.answered1()
    load = "/".join(f"{x:.2f}" for x in run.load)
    paced = f" (SWITCH_CPS={run.switch_cps})" if run.switch_cps else ""
    paced += f" (nice {run.nice})" if run.nice else ""
    paced += f" (slice {run.slice_us} µs)" if run.slice_us else ""
    print(f"  {run.kind:9s} {run.rate} calls/s{paced}, n={n}, load {load}", flush=True)
    print(f"    push -> side 0 answered: {fmt(a0)} ({n - len(a0)} unanswered)")
    print(f"    push -> side 1 answered: {fmt(a1)} ({n - len(a1)} unanswered)")
    if run.kind == "redswitch":
        print(f"    push -> call-start (subscriber):          {fmt(run.latencies('call-start', 'client'))}")
    print(
        f"    push -> bgapi replied ({'worker log' if run.kind == 'redswitch' else 'loop'}):  "
        f"{fmt(run.latencies('', 'handed'))}"
    )
    print(f"    push -> CHANNEL_CREATE 0 (observer):      {fmt(run.latencies('CHANNEL_CREATE/0'))}")
    print(f"    push -> CHANNEL_ANSWER 0 (observer):      {fmt(run.latencies('CHANNEL_ANSWER/0'))}")
    print(f"    push -> CHANNEL_ANSWER 1 (observer):      {fmt(run.latencies('CHANNEL_ANSWER/1'))}")
    created = sorted(s["CHANNEL_CREATE/0"].arrived for d, s in run.observer.items() if "CHANNEL_CREATE/0" in s)
    if len(created) > 1:
        print(
            f"    side 0 channels created at {(len(created) - 1) / (created[-1] - created[0]):.1f} calls/s on average"
        )
    cpu = ", ".join(f"{role} {run.per_call_ms(role):.2f}" for role in run.cpu)
    print(f"    CPU ms per call: {cpu}")
    waited = ", ".join(f"{role} {1000 * run.waited[role] / max(1, n):.2f}" for role in run.waited)
    print(f"    ms per call runnable but waiting for a CPU: {waited}")
    print(
        f"    calls of others the switch started meanwhile: {run.foreign}; CPU of every other process on the machine: "
        f"{100 * run.others:.0f} % of a core (over {run.seconds:.1f} s)",
        flush=True,
    )
    if run.hops:
        print("    along the path (Redis MONITOR clock), each hop from the one before, p50 / p99 ms:")
        names = [hop for hop, _ in Tracer.HOPS]
        for before, after in zip(names, names[1:], strict=False):
            gaps = [(h[after] - h[before]) * 1000 for h in run.hops.values() if before in h and after in h]
            if gaps:
                p50, p99 = pct(gaps, 0.5), pct(gaps, 0.99)
                print(f"      {before:34s} -> {after:34s} {p50:6.1f} / {p99:6.1f}  n={len(gaps)}")


def ours_cpu(run: Run) -> float:
    return sum(run.per_call_ms(role) for role in run.cpu if role not in ("switch", "redis", "bench"))


def summary(rate: int, bare: list[Run], ours: list[Run]) -> list[str]:
    def med_range(values: list[float], digits: int = 0) -> str:
        return f"{pct(values, 0.5):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"

    def stat(runs: list[Run], q: float, which: str) -> list[float]:
        return [pct(run.answered0() if which == "0" else run.answered1(), q) for run in runs]

    loads = ", ".join(f"{run.load[0]:.2f}" for run in [*bare, *ours])
    others = ", ".join(f"{100 * run.others:.0f} %" for run in [*bare, *ours])
    lines = [
        f"| bare `bgapi` loop, {rate} calls/s | {med_range(stat(bare, 0.5, '0'))} ms | "
        f"{med_range(stat(bare, 0.99, '0'))} ms | {med_range(stat(bare, 0.5, '1'))} ms | "
        f"{med_range(stat(bare, 0.99, '1'))} ms | switch: {med_range([r.per_call_ms('switch') for r in bare], 1)} ms |",
        f"| Redswitch (`redswitch run`), {rate} calls/s | {med_range(stat(ours, 0.5, '0'))} ms | "
        f"{med_range(stat(ours, 0.99, '0'))} ms | {med_range(stat(ours, 0.5, '1'))} ms | "
        f"{med_range(stat(ours, 0.99, '1'))} ms | "
        f"bridge+worker+listener: {med_range([ours_cpu(r) for r in ours], 1)} ms "
        f"({med_range([ours_cpu(r) / r.per_call_ms('switch') for r in ours], 2)} of the switch's "
        f"{med_range([r.per_call_ms('switch') for r in ours], 1)}); Redis "
        f"{med_range([r.per_call_ms('redis') for r in ours], 2)} ms |",
        f"(1-min load average at the start of each run: {loads}; CPU of other processes during each: {others})",
    ]
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench --freeswitch", description=__doc__.split("\n")[0])
    parser.add_argument("--freeswitch", required=True, metavar="HOST:PORT")
    parser.add_argument("--password", default=os.environ.get("ESL_PASSWORD", "ClueCon"))
    parser.add_argument("--rates", default="10,30")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overload", type=int, default=50, help="the overload step's rate (0: no such step)")
    parser.add_argument("--paced-cps", type=int, default=60, help="SWITCH_CPS of the overload step's paced run")
    parser.add_argument("--kinds", default="bare,redswitch", help="which of bare,redswitch to run in each round")
    parser.add_argument("--nice", type=int, default=0, help="experiment: renice Redswitch's processes to this")
    parser.add_argument("--slice-us", type=int, default=0, help="experiment: EEVDF slice of Redswitch's threads")
    parser.add_argument("--trace", action="store_true", help="diagnostic: Redis MONITOR along each call's path")
    parser.add_argument("--profile", default="", help="diagnostic: py-spy raw profiles of our processes into DIR")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    host, _, port = args.freeswitch.rpartition(":")
    if args.quick:
        args.seconds, args.rounds, args.overload = 3.0, 1, 0
    bench = Bench(host or "127.0.0.1", int(port), args.password, args.seconds)
    started = time.monotonic()
    table: list[str] = []
    try:
        for rate in [int(r) for r in args.rates.split(",") if r]:
            bare: list[Run] = []
            ours: list[Run] = []
            for round_ in range(args.rounds):
                order = ("bare", "redswitch") if round_ % 2 == 0 else ("redswitch", "bare")
                for kind in [k for k in order if k in args.kinds.split(",")]:
                    if kind == "bare":
                        run = bench.bare(rate)
                    else:
                        run = bench.redswitch(
                            rate, nice=args.nice, trace=args.trace, profile=args.profile, slice_us=args.slice_us
                        )
                    describe(run)
                    (bare if kind == "bare" else ours).append(run)
            if bare and ours:
                table += summary(rate, bare, ours)
        if args.overload:
            steps = [] if args.kinds == "redswitch" else [bench.bare(args.overload)]
            steps.append(bench.redswitch(args.overload, trace=args.trace))
            if args.paced_cps:
                steps.append(bench.redswitch(args.overload, args.paced_cps))
            for run in steps:
                describe(run)
            for run in steps:
                a0 = run.answered0()
                name = "bare `bgapi` loop" if run.kind == "bare" else "Redswitch"
                name += f", SWITCH_CPS={run.switch_cps}" if run.switch_cps else ""
                table.append(
                    f"| {name}, {run.rate} calls/s | {pct(a0, 0.5):.0f} ms | {pct(a0, 0.99):.0f} ms | "
                    f"{pct(run.answered1(), 0.5):.0f} ms | {pct(run.answered1(), 0.99):.0f} ms | "
                    f"switch {run.per_call_ms('switch'):.1f} ms; load {run.load[0]:.2f}, others "
                    f"{100 * run.others:.0f} % |"
                )
        print(f"\nfinished in {time.monotonic() - started:.0f} s")
        print(
            "\n| | push → side 0 answered, p50 | p99 | push → side 1 answered, p50 | p99 | CPU per call |\n"
            "|---|---|---|---|---|---|"
        )
        print("\n".join(table))
    finally:
        bench.close()
