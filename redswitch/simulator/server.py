"""``Simulator``: an asyncio event loop in one background thread serving the ESL protocol on a TCP port.

Every piece of switch state lives on the loop thread; the public methods below are thread-safe because they hop
onto the loop (``call_soon_threadsafe`` / ``run_coroutine_threadsafe``) or read lock-protected logs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from redswitch.protocol import encode_disconnect_notice
from redswitch.simulator.api import Api
from redswitch.simulator.bus import EventBus, SwitchInfo
from redswitch.simulator.calls import CallEngine
from redswitch.simulator.channels import ChannelInfo
from redswitch.simulator.dialstring import OriginateRequest
from redswitch.simulator.flood import FloodSpec, flood
from redswitch.simulator.heartbeat import heartbeat_loop
from redswitch.simulator.scenario import Scenario
from redswitch.simulator.session import Session

__all__ = ["Simulator"]

T = TypeVar("T")


#: MES body of the disconnect notice on module/system shutdown.
SHUTDOWN_NOTICE = "The system is being shut down.\n"


class Simulator:
    """An in-process FreeSWITCH Event Socket (inbound) simulator. See docs/simulator.md."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon", scenario: Scenario | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.scenario = scenario or Scenario.default()
        self.hostname = self.scenario.hostname
        self.started = time.time()
        self.reply_delay = 0.0
        self.sessions: set[Session] = set()
        self.bus = EventBus(SwitchInfo(hostname=self.hostname))
        self.engine = CallEngine(self.bus, self.scenario)
        self.api = Api(self.engine, self)
        self._lock = threading.Lock()
        self._commands: list[str] = []
        self._originates: list[OriginateRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        """Serve in a background thread; returns once listening (``self.port`` is then the bound port)."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"esl-sim-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def serve_forever(self) -> None:
        """Blocking variant (the CLI's); returns after ``stop()`` or on KeyboardInterrupt."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.2)
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running() and self._stopped is not None:
            loop.call_soon_threadsafe(self._stopped.set)
        if thread is not threading.current_thread():
            thread.join(10)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        await self._listen()
        self._ready.set()
        beat = asyncio.get_running_loop().create_task(heartbeat_loop(self))
        await self._stopped.wait()
        beat.cancel()
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.abort()
        for ch in self.engine.channels.values():
            ch.cancel_timers()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, self.host, self.port, reuse_address=True)
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sock.getsockname()[1]

    def _new_session(self) -> Session:
        return Session(self.password, self.bus, self.api, self)

    # ---------------------------------------------------------------------------------------- loop hops

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result (directly when already there or not running)."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(10)

    # ---------------------------------------------------------------------------------------- inspection

    def record_command(self, line: str) -> None:
        with self._lock:
            self._commands.append(line)

    def record_originate(self, req: OriginateRequest) -> None:
        with self._lock:
            self._originates.append(req)

    def commands(self) -> list[str]:
        """Every command line received after auth, in order, over all connections."""
        with self._lock:
            return list(self._commands)

    def originates(self) -> list[OriginateRequest]:
        """Every parsed originate (api or bgapi)."""
        with self._lock:
            return list(self._originates)

    def originates_json(self) -> list[dict[str, object]]:
        return [req.as_dict() for req in self.originates()]

    def channels(self) -> dict[str, ChannelInfo]:
        """Snapshot of live channels by uuid."""
        return self._call(lambda: {u: c.snapshot() for u, c in self.engine.channels.items()})

    def eavesdrop_mode(self, uuid: str) -> str:
        """SIMULATOR-ONLY: listen | talk_target | talk_other | threeway; KeyError if ``uuid`` is not eavesdropping."""
        info = self.channels().get(uuid)
        if info is None or info.eavesdrop_mode is None:
            raise KeyError(uuid)
        return info.eavesdrop_mode

    # ---------------------------------------------------------------------------------------- faults

    def shutdown(self, cause: str = "SYSTEM_SHUTDOWN") -> None:
        """Stop as FreeSWITCH's ``fsctl shutdown`` does: hang every channel up (its events go out to the
        subscribers), tell each client ``The system is being shut down.``, close, then stop serving."""
        self._call(lambda: self.engine.hupall(cause))
        time.sleep(0.2)  # let the hangup events reach the subscribers before the sockets close
        self._call(self._say_goodbye)
        time.sleep(0.05)
        self.stop()

    def _say_goodbye(self) -> None:
        for session in list(self.sessions):
            session.write(encode_disconnect_notice(SHUTDOWN_NOTICE))
            session.close()

    def drop_all_connections(self) -> None:
        """Abort every ESL connection (clients see EOF/reset, no disconnect notice)."""
        self._call(self._abort_all)

    def drop_soon(self) -> None:
        """``api sim_drop``: drop after the current response has been written."""
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, self._abort_all)

    def _abort_all(self) -> None:
        for session in list(self.sessions):
            session.abort()

    def refuse_connections(self, refuse: bool) -> None:
        """Close (True) or reopen (False) the listening socket on the same port: connects get ECONNREFUSED."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        if threading.current_thread() is self._thread:
            self.set_refuse(refuse)
            return
        asyncio.run_coroutine_threadsafe(self._set_refuse(refuse), loop).result(10)

    def set_refuse(self, on: bool) -> None:
        asyncio.get_running_loop().create_task(self._set_refuse(on))

    async def _set_refuse(self, on: bool) -> None:
        if on and self._server is not None:
            self._server.close()
            self._server = None
        elif not on and self._server is None:
            await self._listen()

    def set_reply_delay(self, seconds: float) -> None:
        """Delay every reply (command, api, bgapi) by ``seconds``."""
        self.reply_delay = max(0.0, float(seconds))

    set_delay = set_reply_delay

    def flood(
        self,
        count: int,
        dial_id: str | None = None,
        *,
        org_id: str = "flood-org",
        user_id: str = "flood-user",
        side: str = "0",
    ) -> int:
        """SIMULATOR-ONLY: emit ``count`` synthetic CHANNEL_ANSWER/CHANNEL_HANGUP events as fast as subscribers read
        them (each synthetic channel gets ``flood-<n>`` as its dial id unless ``dial_id`` is given); returns once all
        are handed to the connections. Same as ``api sim_flood <count> [<dial_id>]``."""
        spec = FloodSpec(count, dial_id, org_id, user_id, side)
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("simulator not running")
        return asyncio.run_coroutine_threadsafe(flood(self.engine, spec), loop).result(60 + count / 1000)

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> bool:
        """Far-end hangup of ``uuid`` (cascades like uuid_kill). False if no such channel."""
        return self._call(lambda: self.engine.hangup(uuid, cause))
