"""A wire-faithful FreeSWITCH Event Socket (inbound) simulator for tests, CI and benchmarks.

from redswitch.simulator import Simulator, Scenario
sim = Simulator(port=0, scenario=Scenario.default()).start()
...  # connect to 127.0.0.1:sim.port with password ClueCon
sim.stop()
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from redswitch.simulator.channels import ChannelInfo
from redswitch.simulator.dialstring import OriginateRequest
from redswitch.simulator.scenario import Outcome, Rule, Scenario
from redswitch.simulator.server import Simulator

__all__ = ["ChannelInfo", "OriginateRequest", "Outcome", "Rule", "Scenario", "Simulator", "serve"]


def serve(host: str, port: int, password: str, scenario_path: str | None) -> int:
    """Run a simulator until SIGINT/SIGTERM (the ``redswitch simulate`` CLI). Returns the exit code."""
    scenario = Scenario.from_file(scenario_path) if scenario_path else Scenario.default()
    sim = Simulator(host=host, port=port, password=password, scenario=scenario)
    try:
        sim.start()
    except OSError as exc:
        print(f"simulator: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"simulator listening on {host}:{sim.port}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
