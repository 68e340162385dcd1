"""The switch the end-to-end tests run against: the simulator, or a real FreeSWITCH.

``REDSWITCH_TEST_FREESWITCH=host:port`` (and ``REDSWITCH_TEST_FREESWITCH_PASSWORD``, default ClueCon) points the
end-to-end tests (the modules in TIER: pipeline, early media, control, faults, admission, reconciliation) at a real
switch configured with compose/freeswitch/conf; every other test keeps its simulators. Tests that need what only
the simulator has (a scenario of their own, its ``sim_*`` controls or inspection, slow replies, more calls at once
than a small switch holds) are marked ``sim_only`` and skipped there. Without the setting everything runs against
simulators started by the tests, as in CI.

A real switch is reached through a recording proxy on 127.0.0.1 (``RealSwitch``): it passes the bytes through
unchanged and notes every command line sent to the switch, so that "FreeSWITCH received this originate once" is
checked on the wire, as the simulator's ``commands()`` does. Before and after each test every call on that switch
is hung up.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from redswitch.errors import EslCommandError
from redswitch.esl.client import EslClient
from redswitch.simulator import Scenario, Simulator

ENV = "REDSWITCH_TEST_FREESWITCH"
PASSWORD_ENV = "REDSWITCH_TEST_FREESWITCH_PASSWORD"
#: The modules of the real-switch tier; every other test runs against its own simulators whatever the setting.
TIER = (
    "test_pipeline",
    "test_early_media",
    "test_control",
    "test_verbs",
    "test_faults",
    "test_admission",
    "test_scheduler",
)

_in_tier = False  # whether the running test belongs to TIER (set before its fixtures are)


class ChannelView(Protocol):
    @property
    def variables(self) -> Mapping[str, str]: ...


class Switch(Protocol):
    """What the end-to-end tests use of a switch, simulated or real."""

    @property
    def port(self) -> int: ...

    @property
    def password(self) -> str: ...

    def commands(self) -> list[str]: ...

    def channels(self) -> Mapping[str, ChannelView]: ...

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> bool: ...

    def drop_all_connections(self) -> None: ...

    def stop(self) -> None: ...


def real_address() -> tuple[str, int] | None:
    """``(host, port)`` of the real switch the running test is pointed at, or None (the simulator)."""
    value = os.environ.get(ENV, "").strip()
    if not value or not _in_tier:
        return None
    host, _, port = value.rpartition(":")
    return (host or "127.0.0.1", int(port))


def start_switch(scenario: Scenario | None = None) -> Switch:
    """A started switch: the real one (behind a fresh proxy, with no call left on it) or a new simulator."""
    address = real_address()
    if address is None:
        return Simulator(host="127.0.0.1", port=0, password="ClueCon", scenario=scenario).start()
    if scenario is not None and scenario.with_changes(gateways=()) != Scenario.default():
        raise AssertionError(f"a real switch behaves as Scenario.default(): mark this test sim_only ({scenario})")
    real = RealSwitch(*address, os.environ.get(PASSWORD_ENV, "ClueCon"))
    real.clear()
    return real


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _in_tier
    _in_tier = item.path.stem in TIER
    if real_address() is not None and item.get_closest_marker("sim_only") is not None:
        pytest.skip(f"simulator only ({ENV} is set)")


@pytest.fixture
def switch() -> Iterator[Switch]:
    """A switch with the default behaviour and no call on it: a new simulator, or the real switch."""
    started = start_switch()
    yield started
    started.stop()


@dataclass(frozen=True)
class RealChannel:
    uuid: str
    variables: dict[str, str]


class RealSwitch:
    """A real FreeSWITCH behind a recording proxy on 127.0.0.1; the part of the Simulator's interface a real
    switch has too (what it was sent, its channels and their variables, a far-end hangup, dropped connections)."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self.upstream = (host, port)
        self.password = password
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._commands: list[str] = []
        self._sockets: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, name="switch-proxy", daemon=True).start()

    # -- the proxy -------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                if record:  # note each command's first line before the switch can act on it
                    pending += data
                    while b"\n\n" in pending:
                        block, pending = pending.split(b"\n\n", 1)
                        line = block.split(b"\n", 1)[0].decode(errors="replace").strip()
                        if line and not line.startswith("auth "):
                            with self._lock:
                                self._commands.append(line)
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all_connections(self) -> None:
        """Cut every connection made through the proxy (the switch's end stays up, as in a network failure)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        self._stopped = True
        self._server.close()
        self.drop_all_connections()
        self.clear()

    # -- inspection and control, over ESL --------------------------------------------------------------------

    def commands(self) -> list[str]:
        """Every command line sent to the switch through the proxy after auth, in order, over all connections."""
        with self._lock:
            return list(self._commands)

    def api(self, command: str) -> str:
        esl = EslClient(*self.upstream, self.password)
        try:
            return esl.api(command)
        finally:
            esl.close()

    def channels(self) -> dict[str, RealChannel]:
        """The switch's channels by uuid, with their variables (``uuid_dump``; a channel gone meanwhile is left out)."""
        esl = EslClient(*self.upstream, self.password)
        try:
            rows: list[dict[str, Any]] = json.loads(esl.api("show channels as json") or "{}").get("rows") or []
            found = {}
            for row in rows:
                try:
                    dump = esl.api(f"uuid_dump {row['uuid']} json")
                except EslCommandError:  # gone since the listing
                    continue
                variables = {k[9:]: str(v) for k, v in json.loads(dump).items() if k.startswith("variable_")}
                found[row["uuid"]] = RealChannel(row["uuid"], variables)
            return found
        finally:
            esl.close()

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> bool:
        """Hang ``uuid`` up (``uuid_kill``); False if the switch has no such channel."""
        try:
            return self.api(f"uuid_kill {uuid} {cause}").startswith("+OK")
        except EslCommandError:
            return False

    def clear(self, timeout: float = 30.0) -> None:
        """Hang up every call on the switch until it holds no channel (calls still being placed are caught by the
        next round)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.api("hupall NORMAL_CLEARING")
            for _ in range(10):
                time.sleep(0.1)
                if self.api("show channels count").strip().startswith("0 total"):
                    return
        raise AssertionError(f"channels left on the switch: {self.api('show channels count').strip()}")
