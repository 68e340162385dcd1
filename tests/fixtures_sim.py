"""Fixtures that start the ESL simulator (owned by the simulator's work)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from redswitch.simulator import Scenario, Simulator

SimFactory = Callable[..., Simulator]


@pytest.fixture
def simulator_factory() -> Iterator[SimFactory]:
    """``simulator_factory(scenario=None, password="ClueCon")`` starts a simulator on a free loopback port."""
    started: list[Simulator] = []

    def make(scenario: Scenario | None = None, password: str = "ClueCon") -> Simulator:
        sim = Simulator(host="127.0.0.1", port=0, password=password, scenario=scenario)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(simulator_factory: SimFactory) -> Simulator:
    """A started simulator with the default scenario."""
    return simulator_factory()
