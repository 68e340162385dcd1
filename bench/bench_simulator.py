"""Benchmark (not a test): api round-trips/s (greenswitch and raw socket) and events/s to one raw subscriber.

Run: ``. .venv/bin/activate && python bench/bench_simulator.py``. A bare-socket echo server measured in the same
run is the baseline; the ratio shows how much the simulator costs over the raw loopback round trip.
"""

from __future__ import annotations

import socket
import threading
import time

import greenswitch

from redswitch.protocol import Mode, Parser
from redswitch.simulator import Scenario, Simulator

N_API = 3000
N_EVENTS = 30_000


def echo_baseline() -> float:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(65536):
            conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    cli = socket.create_connection(srv.getsockname())
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    for _ in range(N_API):
        cli.sendall(b"api version\n\n")
        cli.recv(65536)
    rate = N_API / (time.perf_counter() - start)
    cli.close()
    srv.close()
    return rate


def raw_api(sim: Simulator) -> float:
    cli = socket.create_connection(("127.0.0.1", sim.port))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = Parser(Mode.FRAMES)

    def one() -> None:
        while not parser.feed(cli.recv(65536)):
            pass

    one()
    cli.sendall(b"auth ClueCon\n\n")
    one()
    start = time.perf_counter()
    for _ in range(N_API):
        cli.sendall(b"api version\n\n")
        one()
    rate = N_API / (time.perf_counter() - start)
    cli.close()
    return rate


def greenswitch_api(sim: Simulator) -> float:
    client = greenswitch.InboundESL(host="127.0.0.1", port=sim.port, password="ClueCon")
    client.connect()
    start = time.perf_counter()
    for _ in range(N_API):
        client.send("api version")
    rate = N_API / (time.perf_counter() - start)
    client.stop()
    return rate


def events(sim: Simulator) -> float:
    cli = socket.create_connection(("127.0.0.1", sim.port))
    parser = Parser(Mode.FRAMES)
    cli.recv(65536)
    cli.sendall(b"auth ClueCon\n\nevent plain CUSTOM bench::tick\n\n")
    got = 0
    while got < 2:
        got += len(parser.feed(cli.recv(65536)))
    headers = [(f"Bench-Header-{i}", f"value {i} with spaces: and colons") for i in range(40)]

    def fire() -> None:
        for _ in range(N_EVENTS):
            sim.bus.fire("CUSTOM", ("bench.py", "fire", 1), headers, subclass="bench::tick")

    start = time.perf_counter()
    threading.Thread(target=lambda: sim._call(fire), daemon=True).start()
    got = 0
    while got < N_EVENTS:
        got += len(parser.feed(cli.recv(1 << 20)))
    rate = N_EVENTS / (time.perf_counter() - start)
    cli.close()
    return rate


def main() -> None:
    sim = Simulator(port=0, scenario=Scenario.default().with_changes(heartbeat_interval=0)).start()
    try:
        base = echo_baseline()
        raw = raw_api(sim)
        gs = greenswitch_api(sim)
        ev = events(sim)
    finally:
        sim.stop()
    print(f"baseline bare-socket echo round-trips/s: {base:10.0f}")
    print(f"raw-socket api round-trips/s:            {raw:10.0f}  (ratio to baseline {raw / base:.2f})")
    print(f"greenswitch api round-trips/s:           {gs:10.0f}  (ratio to baseline {gs / base:.2f})")
    print(f"events/s to one raw subscriber:          {ev:10.0f}  (target >= 20000)")


if __name__ == "__main__":
    main()
