"""Benchmark (not a test): the dashboard server's CPU and its event delay with many live calls and a steady event rate.

Run: ``.venv/bin/python bench/bench_dashboard.py [--calls 1000] [--rate 200] [--seconds 20]``.

A private redis-server holds ``--calls`` active calls (each answered on both sides: a record and a stream), then a
real ``redswitch dashboard --no-auth`` (its own process) loads them and one Server-Sent Events client follows it,
while this process appends ``--rate`` events a second to the firehose (``ack`` events, each naming itself, on the
live calls in turn). Measured: the dashboard process's CPU (``/proc/<pid>/stat``) over the run, and the delay from
each ``XADD`` to the delta that carries it reaching the client. The server pushes every 200 ms, so about 100 ms of
the median is that coalescing, by design. The browser's own cost (layout, script) is not measured here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import RedisServer, free_port, wait_for_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    server = RedisServer().start()
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(args.calls):
        dial_id = f"b{i}"
        pipe.sadd("redswitch:active", dial_id)
        record = {"org_id": f"org{i % 20}", "user_id": f"u{i}", "call_provider": f"gw{i % 3}", "node": "n1"}
        pipe.hset(f"redswitch:call:{dial_id}", mapping=record)
        for event in ({"type": "call-start", "dial_id": dial_id}, {"type": "answer-event", "side": "0"}):
            pipe.xadd(f"redswitch:events:{dial_id}", {"event": json.dumps(event)})
    pipe.execute()
    port = free_port()
    env = {**os.environ, "PUBSUB_REDIS_URL": server.url, "ESL_NODES": "n1=127.0.0.1:8021"}
    command = [str(ROOT / ".venv/bin/redswitch"), "dashboard", "--no-auth", "--port", str(port)]
    dashboard = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    delays: list[float] = []
    try:
        wait_for_port("127.0.0.1", port)
        ready = threading.Event()

        def follow() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("GET", "/api/events")
            answer = connection.getresponse()
            while line := answer.readline():
                if not line.startswith(b"data: "):
                    continue
                ready.set()
                now = time.time()
                for call in json.loads(line[6:]).get("calls", []):
                    tag = (call.get("reply") or {}).get("event", "")
                    if tag in sent:
                        delays.append(now - sent.pop(tag))

        threading.Thread(target=follow, daemon=True).start()
        ready.wait(30)
        start_cpu, start = cpu_seconds(dashboard.pid), time.time()
        count = 0
        while time.time() - start < args.seconds:
            due = start + count / args.rate
            if due > time.time():
                time.sleep(due - time.time())
            tag = f"m{count}"
            sent[tag] = time.time()
            event = json.dumps({"type": "ack", "event": tag})
            client.xadd("redswitch:firehose", {"dial_id": f"b{count % args.calls}", "event": event})
            count += 1
        elapsed = time.time() - start
        used = cpu_seconds(dashboard.pid) - start_cpu
        time.sleep(1)
    finally:
        dashboard.terminate()
        dashboard.wait()
        client.close()
        server.stop()
    delays.sort()

    def at(q: float) -> float:
        return 1000 * delays[min(len(delays) - 1, int(len(delays) * q))]

    print(
        f"{args.calls} live calls, {count} events in {elapsed:.1f} s: dashboard CPU {100 * used / elapsed:.1f} % of a "
        f"core; XADD -> SSE client p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {at(1.0):.0f} ms "
        f"({len(delays)} of {count} seen)"
    )


if __name__ == "__main__":
    main()
