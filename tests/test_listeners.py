"""Several listeners over real processes: each FreeSWITCH node followed by exactly one of them under a fenced lease,
nodes spread evenly and moved when a listener joins or leaves, a killed listener's nodes taken over with the gap
recovered from the switches' channels, and no event published twice, across a hand-over or by a paused listener
that lost its lease.

The scale test (20 simulator nodes, 3 listeners) is marked ``slow``; a smaller one (4 nodes, 2 listeners) runs by
default. Both print their take-over time and events/s per listener (``pytest -s``)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redswitch.cli.launcher import Child, Stack, redswitch_command
from redswitch.config import Settings
from redswitch.services.ownership import assign
from redswitch.simulator import Scenario, Simulator
from tests.payloads import job
from tests.servers import RedisServer, free_port
from tests.test_scheduler import scrape

#: Every call answers at once and its callee hangs up after a few seconds: calls start and end on their own.
#: Longer than a take-over, so that every call has a leg that a listener saw (see docs/operations.md).
CALL_SECONDS = 4.0
CHANNEL_EVENTS = [("answer-event", "0"), ("answer-event", "1"), ("hangup-event", "0"), ("hangup-event", "1")]


def wait(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Fleet:
    """``nodes`` simulators (in this process), bridge and worker (processes), and listener processes on demand."""

    def __init__(self, redis_url: str, nodes: int, lease: float = 1.5, hangup_after: float | None = CALL_SECONDS):
        default: dict[str, Any] = {"outcome": "answer", "ring": 0.05, "hangup_after": hangup_after}
        scenario = Scenario.from_dict({"default": default, "include_default_numbers": False})
        self.sims = {f"fs{n:02d}": Simulator(host="127.0.0.1", port=0, scenario=scenario).start() for n in range(nodes)}
        esl_nodes = ",".join(f"{name}=127.0.0.1:{sim.port}" for name, sim in self.sims.items())
        self.settings = Settings(
            pubsub_redis_url=redis_url, esl_nodes=esl_nodes, listener_lease=lease, originate_timeout=5, switch_cps=0
        )
        self.log_dir = tempfile.mkdtemp(prefix="redswitch-listeners-")
        self.stack = Stack(self.settings, listener=False, log_dir=self.log_dir).start()
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.listeners: dict[str, Child] = {}
        self.ports: dict[str, int] = {}

    def start_listener(self, name: str) -> Child:
        self.ports[name] = free_port()
        env = {"METRICS_PORT": str(self.ports[name]), "METRICS_HOST": "127.0.0.1"}
        child = self.stack.spawn(name, redswitch_command("listen"), env)
        self.listeners[name] = child
        return child

    def kill(self, name: str) -> None:
        """SIGKILL a listener (a crash: no lease is given up)."""
        child = self.listeners.pop(name)
        child.kill()
        self.stack.children.remove(child)

    def stop_listener(self, name: str) -> None:
        child = self.listeners.pop(name)
        child.stop()
        self.stack.children.remove(child)

    def owners(self) -> dict[str, str]:
        """node -> the name of the listener process holding its lease ('' when none)."""
        pids = {str(child.proc.pid): name for name, child in self.listeners.items()}
        out = {}
        for node in self.sims:
            token = str(self.client.get(f"redswitch:listener:{{{node}}}:lease") or "")
            pid = token.rsplit("/", 2)[0].split("-")[-2] if token else ""
            out[node] = pids.get(pid, "?" if token else "")
        return out

    def per_listener(self) -> Counter[str]:
        return Counter(self.owners().values())

    def settled(self, names: list[str]) -> bool:
        """Every node followed, by the listeners ``names`` only, evenly (subscribed too)."""
        counts = self.per_listener()
        if set(counts) != set(names):
            return False
        return max(counts.values()) - min(counts.values()) <= 1

    def events_published(self, name: str) -> float:
        samples = scrape(self.ports[name])
        return sum(v for k, v in samples.items() if k.startswith("redswitch_events_published_total"))

    def log(self, name: str) -> str:
        path = pathlib.Path(self.log_dir) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        names = sorted(path.stem for path in pathlib.Path(self.log_dir).glob("*.log"))
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in names)

    def stop(self) -> None:
        self.stack.stop()
        self.client.close()
        for sim in self.sims.values():
            sim.stop()


class Heard:
    """Every message published on the calls' channels (pattern ``<prefix>*``), in a thread of its own."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(f"{prefix}*")
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                self.messages.append((message["channel"], json.loads(message["data"])))

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.pubsub.close()

    def per_call(self) -> dict[str, Counter[tuple[str, str]]]:
        out: dict[str, Counter[tuple[str, str]]] = {}
        for channel, event in list(self.messages):
            if event.get("type") in ("answer-event", "hangup-event"):
                out.setdefault(channel, Counter())[(event["type"], event["side"])] += 1
        return out


@pytest.fixture
def fresh_redis(own_redis_server: RedisServer) -> RedisServer:
    return own_redis_server


def test_nodes_are_dealt_evenly_to_the_live_listeners() -> None:
    nodes = [f"fs{n}" for n in range(20)]
    for live in (["a"], ["a", "b"], ["c", "a", "b"], [f"l{n}" for n in range(7)]):
        counts = Counter(assign(nodes, live).values())
        assert set(counts) == set(live) and max(counts.values()) - min(counts.values()) <= 1
    assert assign(nodes, []) == {}


def test_listeners_share_the_nodes_evenly_and_rebalance_when_one_joins_or_leaves(fresh_redis: RedisServer) -> None:
    fleet = Fleet(fresh_redis.url, 5, lease=1.0, hangup_after=None)
    try:
        # Given two listeners: every node followed by one of them, 3 and 2
        fleet.start_listener("la")
        fleet.start_listener("lb")
        assert wait(lambda: fleet.settled(["la", "lb"]), 20), (fleet.owners(), fleet.logs())
        # When a third joins: 2, 2 and 1
        fleet.start_listener("lc")
        assert wait(lambda: fleet.settled(["la", "lb", "lc"]), 20), (fleet.owners(), fleet.logs())
        # Then metrics say which nodes each follows, and check names every node's listener and lease age
        follows = {
            name: {
                key.split('"')[1]
                for key, value in scrape(port).items()
                if key.startswith("redswitch_listener_follows{") and value == 1
            }
            for name, port in fleet.ports.items()
        }
        owners = fleet.owners()
        assert follows == {name: {n for n, o in owners.items() if o == name} for name in fleet.ports}
        ages = [v for k, v in scrape(fleet.ports["lc"]).items() if k.startswith("redswitch_listener_lease_age_seconds")]
        assert any(0 <= age < 1.0 for age in ages)  # renewed every third of the lease
        checked = subprocess.run(
            redswitch_command("check"), env={**os.environ, **fleet.settings.env()}, capture_output=True, text=True
        )
        lines = [line for line in checked.stdout.splitlines() if line.startswith("listener:")]
        assert len(lines) == 5 and all("lease age" in line for line in lines), checked.stdout
        pid_of = {str(child.proc.pid): name for name, child in fleet.listeners.items()}
        for line in lines:
            node = line.split()[2]
            assert pid_of[line.split(" followed by ")[1].split()[0].split("-")[-2]] == owners[node], line
        # When one leaves cleanly: its nodes go to the others at once (its leases given up), 3 and 2
        fleet.stop_listener("la")
        assert wait(lambda: fleet.settled(["lb", "lc"]), 5), (fleet.owners(), fleet.logs())
    finally:
        fleet.stop()


def _scale_run(redis_url: str, nodes: int, listeners: int, seconds: float, rate: float) -> dict[str, Any]:
    """Calls flowing on every node; one listener killed a third in and restarted two thirds in; every call's events
    complete and none doubled. Returns the take-over time and events/s per listener."""
    fleet = Fleet(redis_url, nodes)
    names = [f"listener{n}" for n in range(listeners)]
    prefix = f"sc{time.monotonic_ns()}_"
    heard = Heard(fleet.client, prefix)
    pushed: list[str] = []
    try:
        for name in names:
            fleet.start_listener(name)
        assert wait(lambda: fleet.settled(names), 30), (fleet.owners(), fleet.logs())
        victim = names[-1]
        started = time.monotonic()
        kill_at, restart_at = started + seconds / 3, started + 2 * seconds / 3
        killed_nodes: list[str] = []
        takeover = 0.0
        before: dict[str, float] = {name: fleet.events_published(name) for name in names}
        n = 0
        while (now := time.monotonic()) < started + seconds:
            due = int((now - started) * rate) + 1
            batch = [f"{prefix}{i}" for i in range(n, due)]
            if batch:
                fleet.client.rpush(
                    fleet.settings.jobs_key, *[json.dumps(job(dial_id=d, user_id=d, org_id="scale")) for d in batch]
                )
                pushed += batch
                n = due
            if kill_at and now >= kill_at:
                killed_nodes = [node for node, owner in fleet.owners().items() if owner == victim]
                fleet.kill(victim)
                killed = time.monotonic()
                kill_at = 0.0
                while any(fleet.owners()[node] in ("", "?") for node in killed_nodes):
                    assert time.monotonic() - killed < 15, fleet.owners()
                    time.sleep(0.02)
                takeover = time.monotonic() - killed
            if not kill_at and restart_at and now >= restart_at:
                fleet.start_listener(victim)
                restart_at = 0.0
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        survivors = [name for name in names if name != victim]
        during = {name: fleet.events_published(name) - before[name] for name in survivors}
        # Every call ended (callee hangs up after CALL_SECONDS) and was announced completely
        assert wait(lambda: fleet.client.scard("redswitch:active") == 0, 60), fleet.logs()
        time.sleep(0.5)
        heard.close()
        got = heard.per_call()
        calls = {d: dict(got.get(d, Counter())) for d in pushed}
        incomplete = {d: c for d, c in calls.items() if set(c) != set(CHANNEL_EVENTS)}
        doubled = {d: dict(c) for d, c in got.items() if max(c.values()) > 1}
        assert not incomplete and not doubled, (len(incomplete), list(incomplete.items())[:5], doubled, fleet.logs())
        recovered = sum(1 for _, event in heard.messages if str(event.get("reason", "")).startswith("recovered"))
        assert fleet.settled(names), fleet.owners()  # the restarted listener has its share again
        return {
            "calls": len(pushed),
            "takeover_s": round(takeover, 2),
            "killed_nodes": len(killed_nodes),
            "events_per_s_per_listener": {name: round(v / elapsed, 1) for name, v in during.items()},
            "recovered_events": recovered,
        }
    finally:
        heard.close()
        fleet.stop()


def test_a_killed_listeners_nodes_are_taken_over_and_no_event_is_lost_or_doubled(fresh_redis: RedisServer) -> None:
    stats = _scale_run(fresh_redis.url, nodes=4, listeners=2, seconds=15, rate=8)
    print(f"\nscale (4 nodes, 2 listeners): {stats}")
    assert stats["killed_nodes"] == 2 and stats["takeover_s"] < 1.5 + 2.0  # LISTENER_LEASE plus a renewal or two


@pytest.mark.slow
def test_scale_20_nodes_3_listeners_one_killed_and_restarted(fresh_redis: RedisServer) -> None:
    stats = _scale_run(fresh_redis.url, nodes=20, listeners=3, seconds=45, rate=20)
    print(f"\nscale (20 nodes, 3 listeners): {stats}")
    assert stats["killed_nodes"] in (6, 7) and stats["takeover_s"] < 1.5 + 2.0


def test_a_paused_listener_that_lost_its_lease_publishes_nothing_when_it_resumes(fresh_redis: RedisServer) -> None:
    fleet = Fleet(fresh_redis.url, 1, lease=1.0, hangup_after=None)
    prefix = f"zz{time.monotonic_ns()}_"
    heard = Heard(fleet.client, prefix)
    try:
        # Given a listener following the node, and a second one waiting
        fleet.start_listener("first")
        assert wait(lambda: fleet.owners() == {"fs00": "first"}, 20), fleet.logs()
        fleet.start_listener("second")
        time.sleep(1.0)  # both live; the node stays with its holder or moves: wait for it to settle
        holder = fleet.owners()["fs00"]
        other = "second" if holder == "first" else "first"
        # When the holder is paused (a zombie: its connection stays open) until its lease expires and the other
        # listener took the node over
        os.kill(fleet.listeners[holder].proc.pid, signal.SIGSTOP)
        try:
            assert wait(lambda: fleet.owners()["fs00"] == other, 10), fleet.owners()
            # and calls are placed, answered and ended meanwhile: the zombie's socket fills with their events
            dial_ids = [f"{prefix}{n}" for n in range(5)]
            fleet.client.rpush(
                fleet.settings.jobs_key, *[json.dumps(job(dial_id=d, user_id=d, org_id="zz")) for d in dial_ids]
            )
            answered = lambda: all(  # noqa: E731
                {("answer-event", "0"), ("answer-event", "1")} <= set(heard.per_call().get(d, {})) for d in dial_ids
            )
            assert wait(answered, 20), fleet.logs()
            for dial_id in dial_ids:
                uuid0 = fleet.client.hget(f"redswitch:call:{dial_id}", "uuid0")
                fleet.sims["fs00"].hangup(str(uuid0), "NORMAL_CLEARING")
            assert wait(lambda: fleet.client.scard("redswitch:active") == 0, 20), fleet.logs()
        finally:
            # Then the zombie resumes and reads all of them
            os.kill(fleet.listeners[holder].proc.pid, signal.SIGCONT)
        assert wait(lambda: "lost the lease" in fleet.log(holder), 10), fleet.log(holder)[-2000:]
        time.sleep(1.0)
        heard.close()
        # and every event was published once: the zombie's batches were refused
        got = heard.per_call()
        once = dict.fromkeys(CHANNEL_EVENTS, 1)
        assert {d: dict(got.get(d, Counter())) for d in dial_ids} == {d: once for d in dial_ids}
    finally:
        heard.close()
        fleet.stop()
