"""Benchmark (not a test): api round-trips/s and events/s from the simulator, each next to a baseline from this run.

Run: ``. .venv/bin/activate && python bench/bench_simulator.py [--events N] [--api N]``.

The simulator runs in its own process (as under ``redswitch simulate``), so the reading client and the simulator
do not share a GIL. Baselines, measured in the same run on the same machine:

* api: a bare-socket echo server (in its own process) answering the same request bytes: the loopback round trip;
* events: a bare socket blasting pre-encoded copies of the simulator's own CHANNEL_ANSWER frame to the same
  reader: the most one Python reader with the protocol ``Parser`` can take.

Ratios near 1 mean the simulator is not what limits the measurement. ``api sim_flood`` (SIMULATOR-ONLY) is the
event source; downstream benchmarks can use it the same way (see docs/simulator.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import greenswitch

from redswitch.protocol import Frame, Mode, Parser, encode_command
from redswitch.simulator import Scenario, Simulator

N_API = 3000
N_EVENTS = 200_000
REPEAT = 3
EVENTS = "event plain CHANNEL_ANSWER CHANNEL_HANGUP"


# ------------------------------------------------------------------------------------------- child processes


def _simulator_process(conn: Connection) -> None:
    sim = Simulator(port=0, scenario=Scenario.default().with_changes(heartbeat_interval=0)).start()
    conn.send(sim.port)
    conn.recv()
    sim.stop()


def _echo_process(conn: Connection) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    conn.send(srv.getsockname()[1])
    while True:
        peer, _ = srv.accept()
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := peer.recv(65536):
            peer.sendall(data)


def _blast_process(conn: Connection, frame: bytes, count: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    conn.send(srv.getsockname()[1])
    peer, _ = srv.accept()
    batch = 256
    for start in range(0, count, batch):
        peer.sendall(frame * min(batch, count - start))
    peer.recv(1)


def _spawn(target: Callable[..., None], *args: object) -> tuple[multiprocessing.process.BaseProcess, Connection, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    return proc, parent, int(parent.recv())


# ------------------------------------------------------------------------------------------- clients


class Reader:
    """A raw ESL client reading with the protocol ``Parser`` (what the listener's event stream does)."""

    def __init__(self, port: int, login: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = Parser(Mode.FRAMES)
        self.frames: list[Frame] = []
        if login:
            self.next()
            self.command("auth ClueCon")

    def next(self) -> Frame:
        while not self.frames:
            self.frames.extend(self.parser.feed(self.sock.recv(1 << 20)))
        return self.frames.pop(0)

    def command(self, line: str) -> Frame:
        self.sock.sendall(encode_command(line))
        return self.next()

    def count(self, n: int) -> int:
        """Read until ``n`` frames have arrived (frames already buffered count)."""
        got = len(self.frames)
        self.frames.clear()
        while got < n:
            got += len(self.parser.feed(self.sock.recv(1 << 20)))
        return got


def api_rate(port: int, login: bool = True) -> float:
    reader = Reader(port, login)
    start = time.perf_counter()
    for _ in range(N_API):
        reader.command("api version")
    rate = N_API / (time.perf_counter() - start)
    reader.sock.close()
    return rate


def greenswitch_rate(port: int) -> float:
    client = greenswitch.InboundESL(host="127.0.0.1", port=port, password="ClueCon")
    client.connect()
    start = time.perf_counter()
    for _ in range(N_API):
        client.send("api version")
    rate = N_API / (time.perf_counter() - start)
    client.stop()
    return rate


def sample_frame(port: int) -> bytes:
    """One CHANNEL_ANSWER frame exactly as the simulator writes it (for the blast baseline)."""
    sub = Reader(port)
    sub.command(EVENTS)
    sub.command("api sim_flood 1")
    frame = sub.next()
    sub.sock.close()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(frame.raw_body), frame.raw_body)


def flood_rate(port: int, count: int) -> float:
    sub, ctl = Reader(port), Reader(port)
    sub.command(EVENTS)
    start = time.perf_counter()
    ctl.sock.sendall(encode_command(f"bgapi sim_flood {count}"))
    sub.count(count)
    rate = count / (time.perf_counter() - start)
    sub.sock.close()
    ctl.sock.close()
    return rate


def blast_rate(frame: bytes, count: int) -> float:
    proc, _, port = _spawn(_blast_process, frame, count)
    reader = Reader(port, login=False)
    start = time.perf_counter()
    reader.count(count)
    rate = count / (time.perf_counter() - start)
    reader.sock.close()
    proc.join(5)
    return rate


def in_process_custom_rate(count: int) -> float:
    """The older measurement: bus.fire of 40-header CUSTOM events in this process (sharing the GIL with the reader)."""
    sim = Simulator(port=0, scenario=Scenario.default().with_changes(heartbeat_interval=0)).start()
    try:
        sub = Reader(sim.port)
        sub.command("event plain CUSTOM bench::tick")
        headers = [(f"Bench-Header-{i}", f"value {i} with spaces: and colons") for i in range(40)]

        def fire() -> None:
            for i in range(count):
                sim.bus.fire("CUSTOM", ("bench.py", "fire", 1), [*headers, ("Bench-N", str(i))], subclass="bench::tick")

        start = time.perf_counter()
        sim._loop.call_soon_threadsafe(fire)  # type: ignore[union-attr]
        sub.count(count)
        return count / (time.perf_counter() - start)
    finally:
        sim.stop()


def main() -> None:
    global N_API
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=N_EVENTS)
    parser.add_argument("--api", type=int, default=N_API)
    opts = parser.parse_args()
    N_API = opts.api
    sim_proc, sim_conn, port = _spawn(_simulator_process)
    echo_proc, _, echo_port = _spawn(_echo_process)
    try:
        base_api, raw, green = 0.0, 0.0, 0.0
        for _ in range(REPEAT):  # interleaved, best of each: the machine is shared, load comes and goes
            base_api = max(base_api, api_rate(echo_port, login=False))
            raw = max(raw, api_rate(port))
            green = max(green, greenswitch_rate(port))
        frame = sample_frame(port)
        base_events = blast_rate(frame, opts.events)
        events = flood_rate(port, opts.events)
    finally:
        sim_conn.send("stop")
        sim_proc.join(10)
        echo_proc.kill()
    custom = in_process_custom_rate(30_000)
    print(f"baseline bare-socket echo round-trips/s:       {base_api:10.0f}")
    print(f"raw-socket api round-trips/s:                  {raw:10.0f}  (ratio to baseline {raw / base_api:.2f})")
    print(f"greenswitch api round-trips/s:                 {green:10.0f}  (ratio to baseline {green / base_api:.2f})")
    print(f"baseline bare-socket blast events/s ({len(frame)} B): {base_events:10.0f}")
    print(
        f"events/s to one raw subscriber (sim_flood):    {events:10.0f}  (ratio to baseline "
        f"{events / base_events:.2f}; target >= 20000)"
    )
    print(f"in-process CUSTOM events/s (shared GIL):       {custom:10.0f}")


if __name__ == "__main__":
    main()
