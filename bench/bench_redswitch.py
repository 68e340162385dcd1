"""Redswitch benchmarks: every number next to a baseline measured in the same run (run: ./scripts/bench).

1. intake throughput: legacy jobs/s from RPUSH to ``originate`` at the simulator (1 bridge, 1 worker process)
   vs a no-op Dramatiq actor on the same broker, and vs a bare loop doing the same Redis and ESL work;
2. intake latency p50/p99/max from push to originate at 50 and 200 calls/s offered;
3. event throughput: ESL events/s the listener turns into published events + state (with the event log and
   without it), vs a bare loop; the Redis bytes the event log adds per call;
4. control latency p50/p99 from a publish on the dial_id channel to the ESL command, and to the ack;
5. memory: Redis bytes per active call and per history event; RSS of each process at 1,000 live calls.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.feeder import Feeder, call_events
from bench.remote_sim import RemoteSimulator
from redswitch.broker import send_all
from redswitch.simulator import Outcome, Scenario
from tests.payloads import job
from tests.pipeline import Pipeline, has
from tests.servers import RedisServer
from tests.soak import memory, rss_kib

ROWS: list[tuple[str, str, str]] = []


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"  {name:52s} {value:>22s}  {note}", flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fresh_redis(redis_url: str) -> None:
    """Start a step from an empty Redis. The throughput steps leave thousands of calls that never ended (the bare
    loop's 3,000 among them); a pipeline started on them follows and reconciles them all while it is measured."""
    redis.Redis.from_url(redis_url).flushall()


def wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(interval)


def pipeline_with(redis_url: str, **kwargs: Any) -> Pipeline:
    """A pipeline whose simulator runs in a process of its own (see bench/remote_sim.py)."""
    pipeline = Pipeline(redis_url, kwargs.pop("scenario", None), **kwargs)
    pipeline.switch_factory = lambda scenario: RemoteSimulator(scenario).start()  # type: ignore[assignment,return-value]
    return pipeline


def remote(pipeline: Pipeline) -> RemoteSimulator:
    return pipeline.switch  # type: ignore[return-value]


def wait_originates(sim: RemoteSimulator, prefix: str, count: int, timeout: float = 60) -> None:
    """Wait for ``count`` originates of dial_ids ``<prefix><n>`` (prefix ends with ``_``)."""
    wait(lambda: sim.count(prefix.rstrip("_")) >= count, timeout, interval=0.02)


# -- 1. intake throughput ------------------------------------------------------------------------------------


def intake_throughput(redis_url: str, count: int, rounds: int) -> None:
    """Ours, the no-op actor and the bare loop, one after the other, ``rounds`` times: this machine's speed drifts
    by a fifth within a minute, so each ratio is taken within a round, and the medians are reported."""
    print("intake throughput", flush=True)
    ours, noop, bare = [], [], []
    for _ in range(rounds):
        ours.append(our_intake(redis_url, count))
        noop.append(noop_throughput(redis_url, count))
        bare.append(bare_intake(redis_url, count))
    row("intake: legacy push -> originate (bridge+worker)", f"{median(ours):,.0f} jobs/s", spread(ours, "jobs/s"))
    row("  baseline: no-op Dramatiq actor, same broker", f"{median(noop):,.0f} msgs/s", ratio("no-op", ours, noop))
    row("  baseline: bare loop, same Redis+ESL work", f"{median(bare):,.0f} jobs/s", ratio("bare", ours, bare))


def median(values: list[float]) -> float:
    return pct(values, 0.5)


def ratio(baseline: str, ours: list[float], base: list[float]) -> str:
    """The note of a baseline row: the median of ours/baseline taken round by round, and its range."""
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return f"ours/{baseline} = {median(ratios):.2f} {spread(ratios)}".rstrip()


def spread(values: list[float], unit: str = "") -> str:
    """The range over the rounds, for the note column."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    text = f"{low:,.0f}–{high:,.0f}" if high >= 10 else f"{low:.2f}–{high:.2f}"
    return f"({text}{' ' + unit if unit else ''} over {len(values)} rounds)"


def our_intake(redis_url: str, count: int) -> float:
    quiet = Scenario.default().with_changes(default_outcome=Outcome(ring=0.01, hangup_after=0.2))
    fresh_redis(redis_url)
    pipeline = pipeline_with(redis_url, scenario=quiet, listener=False).start()
    try:
        warm = f"warm{time.monotonic_ns()}_"
        push(pipeline, warm, 50)
        sim = remote(pipeline)
        wait_originates(sim, warm, 50)
        prefix = f"thr{time.monotonic_ns()}_"
        start = time.perf_counter()
        push(pipeline, prefix, count)
        wait_originates(sim, prefix, count, 120)
        return count / (max(sim.originate_times(prefix).values()) - start)
    finally:
        pipeline.stop()


def push(pipeline: Pipeline, prefix: str, count: int) -> None:
    payloads = [json.dumps(job(dial_id=f"{prefix}{n}", user_id=f"{prefix}{n}")) for n in range(count)]
    for start in range(0, count, 1000):
        pipeline.client.rpush(pipeline.settings.jobs_key, *payloads[start : start + 1000])


def noop_throughput(redis_url: str, count: int) -> float:
    client = redis.Redis.from_url(redis_url)
    fresh_redis(redis_url)
    env = {**os.environ, "PUBSUB_REDIS_URL": redis_url, "BROKER_URL": ""}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "bench.noop_actor", "--processes", "1", "--threads", "8"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ["PUBSUB_REDIS_URL"] = redis_url
        from bench.noop_actor import broker, noop

        noop.send({"warm": "1"})
        wait(lambda: int(client.get("bench:noop") or 0) >= 1, 60)
        start = time.perf_counter()
        for first in range(0, count, 100):  # in bulk, as legacy jobs arrive in bulk in the intake measure
            send_all(noop, [(job(dial_id=f"noop{n}"),) for n in range(first, min(count, first + 100))])
        wait(lambda: int(client.get("bench:noop") or 0) >= count + 1, 120, interval=0.01)
        rate = count / (time.perf_counter() - start)
        broker.close()
        return rate
    finally:
        worker.terminate()
        worker.wait(30)


def bare_intake(redis_url: str, count: int) -> float:
    fresh_redis(redis_url)
    quiet = Scenario.default().with_changes(default_outcome=Outcome(ring=0.01, hangup_after=0.2))
    sim = RemoteSimulator(quiet).start()
    try:
        client = redis.Redis.from_url(redis_url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", "intake", str(sim.port), redis_url, "talkiq-asp.calls", str(count)],
            cwd=os.path.dirname(os.path.dirname(__file__)) or ".",
        )
        time.sleep(1.0)
        start = time.perf_counter()
        payloads = [json.dumps(job(dial_id=f"bare_{n}", user_id=f"bare_{n}")) for n in range(count)]
        for first in range(0, count, 1000):
            client.rpush("talkiq-asp.calls", *payloads[first : first + 1000])
        wait_originates(sim, "bare_", count, 120)
        rate = count / (max(sim.originate_times("bare_").values()) - start)
        proc.wait(30)
        return rate
    finally:
        sim.stop()


# -- 2. intake latency -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry))
        except OSError:
            continue
    return found


def process_table(pipeline: Pipeline, redis_pid: int) -> dict[str, list[int]]:
    """Every process of the run by role (Dramatiq's worker processes count with their parent)."""
    assert pipeline.stack is not None
    table = {child.name: [child.proc.pid, *children_of(child.proc.pid)] for child in pipeline.stack.children}
    table.update({"redis": [redis_pid], "simulator": [remote(pipeline).pid], "load generator": [os.getpid()]})
    return table


def intake_latency(redis_url: str, rates: list[int], seconds: float, redis_pid: int) -> None:
    print("intake latency", flush=True)
    fresh_redis(redis_url)
    quiet = Scenario.default().with_changes(default_outcome=Outcome(ring=0.01, hangup_after=0.3))
    pipeline = pipeline_with(redis_url, scenario=quiet).start()
    try:
        push(pipeline, f"warmlat{time.monotonic_ns()}_", 50)
        time.sleep(2)
        table = process_table(pipeline, redis_pid)
        for rate in rates:
            prefix = f"lat{rate}_{time.monotonic_ns()}_"
            pushed: dict[str, float] = {}
            used = {role: sum(map(cpu_seconds, pids)) for role, pids in table.items()}
            start = time.perf_counter()
            n = 0
            while n < rate * seconds:
                time.sleep(max(0.0, start + n / rate - time.perf_counter()))  # paced, without spinning
                dial_id = f"{prefix}{n}"
                pushed[dial_id] = time.perf_counter()
                pipeline.client.rpush(pipeline.settings.jobs_key, json.dumps(job(dial_id=dial_id, user_id=dial_id)))
                n += 1
            elapsed = time.perf_counter() - start
            used = {role: sum(map(cpu_seconds, pids)) - used[role] for role, pids in table.items()}
            sim = remote(pipeline)
            wait_originates(sim, prefix, len(pushed))
            arrived = sim.originate_times(prefix)
            lat = [(arrived[d] - t) * 1000 for d, t in pushed.items()]
            row(
                f"intake latency at {rate} calls/s (push -> originate)",
                f"p50 {pct(lat, 0.5):.1f} / p99 {pct(lat, 0.99):.1f} / max {max(lat):.1f} ms",
                f"n={len(lat)}",
            )
            shares = ", ".join(f"{role} {100 * cpu / elapsed:.0f} %" for role, cpu in used.items())
            row(
                f"  CPU at {rate} calls/s, % of one core",
                f"{100 * sum(used.values()) / elapsed:.0f} % of {100 * (os.cpu_count() or 1)} %",
                shares,
            )
    finally:
        pipeline.stop()


# -- 3. listener -----------------------------------------------------------------------------------------------


def listener_throughput(redis_url: str, calls: int, rounds: int) -> None:
    """Ours (event log on, the default), ours without the event log (``EVENT_STREAMS=false``), then the bare loop,
    ``rounds`` times (ratios within a round, medians reported: see intake)."""
    print("event throughput", flush=True)
    client = redis.Redis.from_url(redis_url)
    ours, unlogged, bare = [], [], []
    for _ in range(rounds):
        for streams, results in ((True, ours), (False, unlogged)):
            prefix = f"ev{time.monotonic_ns()}_"
            payload, count = call_events(calls, prefix)
            results.append(run_listener(redis_url, client, payload, count, prefix, calls, streams))
        bare.append(run_bare_listener(redis_url, payload, count))
    row(
        "listener: ESL events -> Redis state + publish + log", f"{median(ours):,.0f} events/s", spread(ours, "events/s")
    )
    row(
        "  same without the event log (EVENT_STREAMS=false)",
        f"{median(unlogged):,.0f} events/s",
        ratio("unlogged", ours, unlogged),
    )
    row("  baseline: bare loop reading + publishing", f"{median(bare):,.0f} events/s", ratio("bare", ours, bare))


def event_log_memory(redis_url: str, calls: int) -> None:
    """What the event log adds to Redis per call: a whole call's events (call-start, both answers, both hangups)
    written through the store as the worker and the listener write them, for ``calls`` calls."""
    from redswitch.config import Settings
    from redswitch.store import Batch, ChannelChange, events, open_store

    print("event log memory", flush=True)
    fresh_redis(redis_url)
    client = redis.Redis.from_url(redis_url)
    store = open_store(client, Settings(pubsub_redis_url=redis_url))
    for n in range(calls):
        dial = f"mem_{n}"
        store.claim(dial, "org", dial, {"org_id": "org", "user_id": dial, "job_uuid": f"j{n}", "state": "sent"})
        changes = [
            ChannelChange(kind, dial, "org", dial, side, "fs1", events.encode(event))
            for kind, side, event in (
                ("answered", "0", events.answer("0")),
                ("answered", "1", events.answer("1")),
                ("hung_up", "1", events.hangup("1", "NORMAL_CLEARING")),
                ("hung_up", "0", events.hangup("0", "NORMAL_CLEARING")),
            )
        ]
        store.apply(changes, Batch("mem", n + 1))
    stream = "redswitch:events:mem_0"
    per_call = client.memory_usage(stream) or 0
    firehose = (client.memory_usage("redswitch:firehose", samples=0) or 0) / max(1, client.xlen("redswitch:firehose"))
    history = client.memory_usage("redswitch_history.org.mem_0") or 0
    logged = client.xlen(stream)
    row(f"event log: a call's stream ({logged} events)", f"{per_call:,} B", f"its history list: {history:,} B")
    row(
        "event log: firehose per event",
        f"{firehose:,.0f} B",
        f"{firehose * logged:,.0f} B per call; {per_call + firehose * logged:,.0f} B per call in all",
    )
    client.close()


def run_listener(
    redis_url: str, client: redis.Redis, payload: bytes, count: int, prefix: str, calls: int, streams: bool = True
) -> float:
    feeder = Feeder(payload)
    last = f"{prefix}{calls - 1}"
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(last)
    env = {**os.environ, "PUBSUB_REDIS_URL": redis_url, "ESL_PORT": str(feeder.port)}
    env["EVENT_STREAMS"] = "true" if streams else "false"
    proc = subprocess.Popen([sys.executable, "-m", "redswitch", "listen"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message" and b'"side": "0", "cause"' in message["data"]:
                return count / (time.perf_counter() - feeder.started_at)
        raise TimeoutError("listener did not finish")
    finally:
        proc.terminate()
        proc.wait(10)
        feeder.close()


def run_bare_listener(redis_url: str, payload: bytes, count: int) -> float:
    feeder = Feeder(payload)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.bare", "events", str(feeder.port), redis_url, str(count)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        return count / (float(out.stdout.strip()) - feeder.started_at)
    finally:
        feeder.close()


# -- 4. control latency ----------------------------------------------------------------------------------------


def control_latency(redis_url: str, samples: int) -> None:
    print("control latency", flush=True)
    fresh_redis(redis_url)
    pipeline = pipeline_with(redis_url).start()
    try:
        pubsub = pipeline.call("bench_ctl")
        pipeline.publish("bench_ctl", {"type": "barge", "phone_number": "15105550177", "caller_id": "1001"})
        pipeline.events_until(pubsub, lambda ev: has("answer-event", "2")(ev) and has("ack")(ev))
        sim = remote(pipeline)
        to_command, to_ack = [], []
        for n in range(samples):
            kind = ("whisper", "mute")[n % 2]
            before = sim.arrived()
            start = time.perf_counter()
            pipeline.publish("bench_ctl", {"type": kind})
            pipeline.events_until(pubsub, lambda ev, k=kind: any(e.get("event") == k for e in ev))
            acked = time.perf_counter()
            command_at = sim.first_after(before, "uuid_recv_dtmf")
            assert command_at is not None, "the command never reached the switch"
            to_command.append((command_at - start) * 1000)
            to_ack.append((acked - start) * 1000)
            time.sleep(0.1)  # an idle worker between commands, as in real use
        row(
            "control: publish -> ESL command at the switch",
            f"p50 {pct(to_command, 0.5):.1f} / p99 {pct(to_command, 0.99):.1f} ms",
            f"n={samples}",
        )
        row(
            "control: publish -> ack on the channel",
            f"p50 {pct(to_ack, 0.5):.1f} / p99 {pct(to_ack, 0.99):.1f} ms",
            f"n={samples}",
        )
    finally:
        pipeline.stop()


# -- 5. memory -------------------------------------------------------------------------------------------------


def memory_use(redis_url: str, calls: int) -> None:
    print("memory", flush=True)
    fresh_redis(redis_url)
    pipeline = pipeline_with(redis_url).start()
    try:
        prefix = f"mem{time.monotonic_ns()}_"
        push(pipeline, prefix, calls)
        client = pipeline.client
        wait(lambda: client.scard("redswitch:active") >= calls, 120, 0.1)
        wait(lambda: sum(1 for _ in client.scan_iter("redswitch.*", count=1000)) >= calls, 120, 0.2)
        time.sleep(1.0)
        dial = f"{prefix}0"
        per_call = sum(
            client.memory_usage(k) or 0
            for k in (f"redswitch.{dial}.talkiq_org_id.{dial}", f"redswitch:call:{dial}", f"redswitch:dialled:{dial}")
        )
        history = f"redswitch_history.talkiq_org_id.{dial}"
        per_event = (client.memory_usage(history) or 0) / max(1, client.llen(history))
        row("Redis bytes per active call (active list + record + dedup)", f"{per_call:,} B")
        row("Redis bytes per history event", f"{per_event:,.0f} B")
        for name, kib in memory(pipeline).items():
            row(f"RSS at {calls:,} live calls: {name}", f"{kib / 1024:,.1f} MiB")
        row(f"RSS at {calls:,} live calls: simulator (own process)", f"{rss_kib(remote(pipeline).pid) / 1024:,.1f} MiB")
    finally:
        pipeline.stop()


def main() -> None:
    if any(arg == "--freeswitch" or arg.startswith("--freeswitch=") for arg in sys.argv[1:]):
        from bench.bench_freeswitch import main as real_switch

        real_switch(sys.argv[1:])
        return
    quick = "--quick" in sys.argv
    server = RedisServer().start()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    try:
        started = time.monotonic()
        listener_throughput(server.url, 2000 if quick else 10000, 1 if quick else 3)
        event_log_memory(server.url, 200 if quick else 1000)
        intake_throughput(server.url, 500 if quick else 3000, 1 if quick else 3)
        assert server.proc is not None
        intake_latency(server.url, [50, 200], 3 if quick else 10, server.proc.pid)
        control_latency(server.url, 30 if quick else 200)
        memory_use(server.url, 200 if quick else 1000)
        print(f"\nfinished in {time.monotonic() - started:.0f} s")
        print("\n| measure | result | note |\n|---|---|---|")
        for name, value, note in ROWS:
            print(f"| {name.strip()} | {value} | {note} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
