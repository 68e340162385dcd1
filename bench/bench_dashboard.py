"""Dashboard benchmark: 1,000 live calls and 200 events/s, measured against baselines taken in the same run.

What a person at the page waits for is the delay from an event entering the event log to the page having it; what
the operator pays is the dashboard server's CPU. The load is real store writes (the listener's own ``apply`` and
``claim``), so every event goes through the firehose exactly as in production: each second 40 calls end (two
``hangup-event``s) and 40 start (``call-start`` and two ``answer-event``s), 1,000 live throughout.

* **Event delay to the browser** (Debian's headless Chromium, the page as an operator opens it): the time from the
  event's stream id (Redis's clock, ms) to the page's ``delta`` handler running, next to a bare ``XREAD BLOCK``
  follower of the firehose in a process of its own (the floor: Redis's own delivery to a client). The dashboard
  coalesces deltas (at most one every 200 ms), so its delay is expected to sit about 100 ms above the floor.
* **Server CPU** of the dashboard process (uvicorn, the feed thread), idle with 1,000 calls and the page open, then
  under load; per event, next to the bare follower's CPU per event.
* **Page responsiveness**: the page's own ``delta`` handler time, and the round trip of a trivial script evaluation
  (the page's main thread must be free for a click), idle vs under load.

Run: ``.venv/bin/python bench/bench_dashboard.py [--seconds 20] [--calls 1000] [--rate 200]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from playwright.sync_api import Page, sync_playwright

from redswitch.cli.launcher import redswitch_command
from redswitch.config import Settings
from redswitch.store import Batch, CallStore, ChannelChange, events, open_store
from redswitch.store.connection import redis_from_settings
from tests.browser import launch
from tests.servers import RedisServer, free_port

NODE = "fs1"
ORGS = 10
GATEWAYS = ("flowroute", "twilio", "bandwidth")
#: Wraps the page's EventSource before its script runs: every ``delta`` is kept with when it arrived (wall clock,
#: ms) and how long the page's own handlers took with it.
PROBE = """
(() => {
  window.__busy = 0;  // ms of the main thread in long tasks (over 50 ms each)
  new PerformanceObserver((list) => {
    for (const task of list.getEntries()) window.__busy += task.duration;
  }).observe({type: "longtask"});
  const Original = window.EventSource;
  window.__deltas = [];
  window.EventSource = function (url, options) {
    const source = new Original(url, options);
    const add = source.addEventListener.bind(source);
    source.addEventListener = (kind, handler, more) => add(kind, (message) => {
      const arrived = Date.now();
      const started = performance.now();
      handler(message);
      if (kind === "delta") {
        window.__deltas.push({arrived, handled: performance.now() - started, data: message.data});
      }
    }, more);
    return source;
  };
  window.EventSource.prototype = Original.prototype;
})();
"""
#: The page baseline: the same event stream followed by a page that renders nothing (evaluated in a same-origin
#: document, the stylesheet, so it is not the dashboard's script).
BARE_PAGE = """
(() => {
  window.__busy = 0;
  new PerformanceObserver((list) => {
    for (const task of list.getEntries()) window.__busy += task.duration;
  }).observe({type: "longtask"});
  window.__deltas = 0;
  const source = new EventSource("/api/events");
  source.addEventListener("delta", () => { window.__deltas += 1; });
})();
"""
#: The baseline follower: XREAD BLOCK on the firehose from "$", printing "<received ms> <stream ms>" per entry.
BARE_FOLLOWER = textwrap.dedent(
    """
    import sys, time, redis
    client = redis.Redis.from_url(sys.argv[1])
    position, out = "$", open(sys.argv[2], "w")
    deadline = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < deadline:
        for _, entries in client.xread({"redswitch:firehose": position}, block=500, count=1000) or []:
            now = int(time.time() * 1000)
            for entry_id, _ in entries:
                position = entry_id
                out.write(f"{now} {entry_id.decode().split('-')[0]}\\n")
    out.close()
    """
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:50s} {value:>26s}  {note}", flush=True)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Calls:
    """Live calls made and ended through the store, as the bridge's claim and the listener's batches do."""

    def __init__(self, store: CallStore) -> None:
        self.store = store
        self.live: list[tuple[str, str, str]] = []
        self.made = 0
        self.batches = 0

    def start(self) -> None:
        dial_id, org, user = f"bench_{self.made:06d}", f"org{self.made % ORGS}", f"user{self.made}"
        gateway = GATEWAYS[self.made % len(GATEWAYS)]
        self.made += 1
        record = {"org_id": org, "user_id": user, "state": "dialling", "node": NODE, "call_provider": gateway}
        record["job_uuid"] = f"job-{dial_id}"
        self.store.claim(dial_id, org, user, record)
        self._apply([self._change("answered", dial_id, org, user, side) for side in ("0", "1")])
        self.live.append((dial_id, org, user))

    def end_oldest(self) -> None:
        dial_id, org, user = self.live.pop(0)
        self._apply([self._change("hung_up", dial_id, org, user, side) for side in ("1", "0")])

    def _change(self, kind: str, dial_id: str, org: str, user: str, side: str) -> ChannelChange:
        event = events.answer(side) if kind == "answered" else events.hangup(side, "NORMAL_CLEARING")
        return ChannelChange(kind, dial_id, org, user, side, NODE, events.encode(event))

    def _apply(self, changes: list[ChannelChange]) -> None:
        self.batches += 1
        self.store.apply(changes, Batch("bench", self.batches))


def serve(settings: Settings, port: int, log_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.env()}
    log = open(os.path.join(log_dir, "dashboard.log"), "wb")
    command = [*redswitch_command("dashboard"), "--host", "127.0.0.1", "--port", str(port), "--no-auth"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/state")
            if connection.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the dashboard did not answer; see {log_dir}/dashboard.log")


def responsiveness(page: Page, seconds: float) -> list[float]:
    """Round trips (ms) of a trivial evaluation on the page's main thread, for ``seconds``."""
    trips: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        page.evaluate("1")
        trips.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return trips


def delays_of(deltas: list[dict[str, Any]], after_ms: int) -> tuple[list[float], list[float], int]:
    """Per event the page got (a side's new state, at its event's stream time): arrival minus stream time; the
    handler times; how many events."""
    delays: list[float] = []
    seen: set[tuple[str, str, str, int]] = set()
    for delta in deltas:
        data = json.loads(delta["data"])
        for call in data.get("calls", []):
            for name, side in (call.get("sides") or {}).items():
                since = int(side.get("since") or 0)
                key = (call["dial_id"], name, side.get("state", ""), since)
                if since >= after_ms and key not in seen:
                    seen.add(key)
                    delays.append(delta["arrived"] - since)
    return delays, [delta["handled"] for delta in deltas], len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="events a second (5 per call that ends and starts)")
    parser.add_argument("--seconds", type=float, default=20.0)
    options = parser.parse_args()
    redis_server = RedisServer()
    redis_server.start()
    log_dir = tempfile.mkdtemp(prefix="redswitch-bench-dashboard-")
    settings = Settings(pubsub_redis_url=redis_server.url, esl_nodes=f"{NODE}=127.0.0.1:{free_port()}")
    client = redis_from_settings(settings)
    calls = Calls(open_store(client, settings))
    print(f"dashboard benchmark: {options.calls} live calls, {options.rate} events/s for {options.seconds:.0f} s")
    for _ in range(options.calls):
        calls.start()
    port = free_port()
    server = serve(settings, port, log_dir)
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page()
            page.add_init_script(PROBE)
            page.goto(f"http://127.0.0.1:{port}/")
            rows = "document.getElementById('calls-count').textContent"
            deadline = time.monotonic() + 60
            while f"({options.calls} up" not in page.evaluate(rows) and time.monotonic() < deadline:
                time.sleep(0.1)  # (polled from here: the page's CSP forbids the eval of wait_for_function)
            bare_page = browser.new_page()
            bare_page.goto(f"http://127.0.0.1:{port}/static/app.css")
            bare_page.evaluate(BARE_PAGE)
            idle_seconds = 5.0
            cpu_idle_before = cpu_seconds(server.pid)
            idle_trips = responsiveness(page, idle_seconds)
            cpu_idle = (cpu_seconds(server.pid) - cpu_idle_before) / idle_seconds
            bare_out = os.path.join(log_dir, "bare.txt")
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_FOLLOWER, redis_server.url, bare_out, str(options.seconds + 3)]
            )
            time.sleep(1.0)
            page.evaluate("window.__deltas = []; window.__busy = 0")
            bare_page.evaluate("window.__deltas = 0; window.__busy = 0")
            load_started_ms = int(time.time() * 1000)
            cpu_before, bare_cpu_before = cpu_seconds(server.pid), cpu_seconds(bare.pid)
            turnovers = 0
            load_trips: list[float] = []
            bare_trips: list[float] = []
            started = time.monotonic()
            interval = 5 / options.rate  # one turnover (5 events) each interval
            next_probe = started
            while (elapsed := time.monotonic() - started) < options.seconds:
                due = int(elapsed / interval) + 1
                while turnovers < due:
                    calls.end_oldest()
                    calls.start()
                    turnovers += 1
                if time.monotonic() >= next_probe:  # both pages in turn: the same moment of the same load
                    for probed, trips in ((page, load_trips), (bare_page, bare_trips)):
                        trip = time.perf_counter()
                        probed.evaluate("1")
                        trips.append((time.perf_counter() - trip) * 1000)
                    next_probe = time.monotonic() + 0.25
                time.sleep(max(0.0, started + turnovers * interval - time.monotonic()))
            wall = time.monotonic() - started
            cpu_load = cpu_seconds(server.pid) - cpu_before
            bare_cpu = cpu_seconds(bare.pid) - bare_cpu_before
            time.sleep(1.0)
            deltas: list[dict[str, Any]] = page.evaluate("window.__deltas")
            busy, bare_busy = page.evaluate("window.__busy"), bare_page.evaluate("window.__busy")
            bare_deltas = bare_page.evaluate("window.__deltas")
            live_rows = page.evaluate(rows)
            browser.close()
        bare.wait(timeout=30)
        with open(bare_out) as found:
            bare_delays = [int(r) - int(s) for r, s in (line.split() for line in found) if int(s) >= load_started_ms]
        sent = turnovers * 5
        page_delays, handled, page_events = delays_of(deltas, load_started_ms)
        print(f"\n  load: {sent} events in {wall:.1f} s ({sent / wall:.0f}/s); page's count at the end: {live_rows}")
        row("server CPU, idle (1,000 calls, page open)", f"{cpu_idle:.3f} of a core")
        row("server CPU, under load", f"{cpu_load / wall:.3f} of a core", f"{cpu_load / sent * 1000:.3f} ms/event")
        row(
            "baseline: bare XREAD follower CPU",
            f"{bare_cpu / wall:.3f} of a core",
            f"{bare_cpu / sent * 1000:.3f} ms/event; dashboard {cpu_load / max(bare_cpu, 1e-9):.1f}x",
        )
        row(
            "event delay to the browser p50 / p99",
            f"{pct(page_delays, 0.5):.0f} / {pct(page_delays, 0.99):.0f} ms",
            f"{page_events} events seen",
        )
        row(
            "baseline: bare XREAD follower p50 / p99",
            f"{pct(bare_delays, 0.5):.0f} / {pct(bare_delays, 0.99):.0f} ms",
            f"{len(bare_delays)} events",
        )
        row(
            "page's delta handler p50 / p99 / max",
            f"{pct(handled, 0.5):.1f} / {pct(handled, 0.99):.1f} / {max(handled, default=0):.1f} ms",
            f"{len(deltas)} deltas ({len(deltas) / wall:.1f}/s)",
        )
        row("page round trip idle p50 / p99", f"{pct(idle_trips, 0.5):.1f} / {pct(idle_trips, 0.99):.1f} ms")
        row(
            "page round trip under load p50 / p99",
            f"{pct(load_trips, 0.5):.1f} / {pct(load_trips, 0.99):.1f} ms",
            f"{pct(load_trips, 0.5) / max(pct(idle_trips, 0.5), 1e-9):.2f}x idle",
        )
        row(
            "baseline: a page that renders nothing p50 / p99",
            f"{pct(bare_trips, 0.5):.1f} / {pct(bare_trips, 0.99):.1f} ms",
            f"{bare_deltas} deltas; dashboard page {pct(load_trips, 0.5) / max(pct(bare_trips, 0.5), 1e-9):.2f}x",
        )
        row(
            "main thread in long tasks (>50 ms), under load",
            f"{busy / (wall * 10):.1f} % of the time",
            f"baseline page {bare_busy / (wall * 10):.1f} %",
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        client.close()
        redis_server.stop()


if __name__ == "__main__":
    main()
