"""One inbound ESL connection: auth, event subscriptions, api/bgapi, in FreeSWITCH's order of writes.

Like ``mod_event_socket``'s listener thread, a session handles one command at a time: while an ``api`` command
(e.g. a blocking ``originate``) runs, nothing else is read and no event is written; queued events follow the
response. Writes are batched per loop iteration, which is what makes high event rates cheap.
"""

from __future__ import annotations

import asyncio
import collections
import uuid as uuidlib
from collections.abc import Coroutine
from typing import Any

from redswitch.protocol import (
    EVENT_NAMES,
    Frame,
    Mode,
    Parser,
    ProtocolError,
    encode_api_response,
    encode_auth_request,
    encode_disconnect_notice,
    encode_reply,
)
from redswitch.simulator.api import Api, ApiResult, Deferred
from redswitch.simulator.bus import EventBus, OutEvent, Subscription

__all__ = ["Session"]

_KNOWN = frozenset(EVENT_NAMES)
_FORMATS = ("plain", "json", "xml")
_NOT_SESSION = "-ERR not controlling a session"


class Session(asyncio.Protocol):
    def __init__(self, password: str, bus: EventBus, api: Api, hooks: Any) -> None:
        self.password = password
        self.bus = bus
        self.api = api
        self.hooks = hooks  # the Simulator: record_command(), reply_delay, sessions set
        self.parser = Parser(Mode.COMMANDS)
        self.sub = Subscription()
        self.authed = False
        self.busy = False
        self.closing = False
        self.transport: asyncio.Transport | None = None
        self._queue: collections.deque[Frame] = collections.deque()
        self._out: list[bytes] = []
        self._held: list[bytes] = []
        self._flush_scheduled = False

    # ---------------------------------------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.hooks.sessions.add(self)
        self.write(encode_auth_request())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.hooks.sessions.discard(self)
        self.bus.subscribers.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._queue.extend(self.parser.feed(data))
        except ProtocolError:
            self.close()
            return
        self._pump()
        self._flush()  # answer now: waiting for the scheduled flush would cost a loop turn per round trip

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        """Flush what is queued, then close (FreeSWITCH closes after the disconnect notice)."""
        self.closing = True
        self.bus.subscribers.discard(self)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def backlog(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        return self.transport.get_write_buffer_size() + sum(map(len, self._out))

    def may_take(self, name: str, subclass: str | None, unique_id: str | None) -> bool:
        return not self.closing and self.sub.may_take(name, subclass, unique_id)

    def deliver(self, ev: OutEvent) -> None:
        if self.closing or not self.sub.wants(ev):
            return
        data = ev.wire(self.sub.fmt)
        if self.busy:
            self._held.append(data)
        else:
            self.write(data)

    # ---------------------------------------------------------------------------------------- command loop

    def _pump(self) -> None:
        while self._queue and not self.busy and not self.closing:
            frame = self._queue.popleft()
            if self.hooks.reply_delay > 0:
                self._run_async(self._delayed(frame, self.hooks.reply_delay))
                continue
            pending = self._handle(frame)
            if pending is not None:
                self._run_async(pending)

    async def _delayed(self, frame: Frame, delay: float) -> None:
        await asyncio.sleep(delay)
        pending = self._handle(frame)
        if pending is not None:
            await pending

    def _run_async(self, coro: Coroutine[Any, Any, None]) -> None:
        """Block this connection (no commands read, events held) until ``coro`` is done."""
        self.busy = True
        asyncio.get_running_loop().create_task(coro).add_done_callback(self._unblock)

    def _unblock(self, _task: object) -> None:
        self.busy = False
        self._release_held()
        self._pump()

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for data in held:
            self.write(data)

    def _handle(self, frame: Frame) -> Coroutine[Any, Any, None] | None:
        line = (frame.command or "").strip()
        if not self.authed:
            self._pre_auth(line)
            return None
        self.hooks.record_command(line)
        raw = frame.command or ""
        if raw[:7].lower() == "filter ":  # matched as mod_event_socket does: any case, a space, the rest unstripped
            self._filter(raw[7:])
            return None
        word, _, rest = line.partition(" ")
        if word == "api":
            return self._cmd_api(rest)
        if word == "bgapi":
            self._cmd_bgapi(rest, frame)
            return None
        handler = getattr(self, f"_cmd_{word}", None) if word.islower() else None
        if handler is not None:
            handler(rest)
        elif line.startswith("..."):
            self._cmd_exit("")
        else:
            self.write(encode_reply("-ERR command not found"))
        return None

    def _pre_auth(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "auth":
            if rest.strip() == self.password:
                self.authed = True
                self.write(encode_reply("+OK accepted"))
            else:
                self.write(encode_reply("-ERR invalid"))
                self.write(encode_disconnect_notice())
                self.close()
        elif word == "userauth" and rest.rpartition(":")[2] == self.password:
            self.authed = True
            self.write(encode_reply("+OK accepted", (("Allowed-Events", "all"), ("Allowed-API", "all"))))
        elif word == "userauth":
            self.write(encode_reply("-ERR invalid"))
            self.write(encode_disconnect_notice())
            self.close()
        elif word == "exit" or line.startswith("..."):
            self._cmd_exit("")
        else:
            self.write(encode_reply("-ERR command not found"))

    # ---------------------------------------------------------------------------------------- api / bgapi

    def _cmd_api(self, rest: str) -> Coroutine[Any, Any, None] | None:
        cmd, _, args = rest.strip().partition(" ")
        self.busy = True  # events fired by the command itself are written after its response, as in FreeSWITCH
        try:
            result: ApiResult = self.api.dispatch(cmd, args.strip())
        finally:
            self.busy = False
        if isinstance(result, str):
            self.write(encode_api_response(result))
            self._release_held()
            return None
        return self._finish_api(result)

    async def _finish_api(self, pending: Deferred) -> None:
        body, after = await pending
        self.write(encode_api_response(body))
        if after is not None:
            after()

    def _cmd_bgapi(self, rest: str, frame: Frame) -> None:
        cmd, _, args = rest.strip().partition(" ")
        args = args.strip()
        job = frame.get("Job-UUID") or str(uuidlib.uuid4())
        self.write(encode_reply(f"+OK Job-UUID: {job}", (("Job-UUID", job),)))
        result = self.api.dispatch(cmd, args, "bgapi")
        headers = [("Job-UUID", job), ("Job-Command", cmd)]
        if args:
            headers.append(("Job-Command-Arg", args))
        caller = ("mod_event_socket.c", "api_exec", 1580)

        async def run() -> None:
            if isinstance(result, str):
                body, after = result, None
            else:
                body, after = await result
            self.bus.fire("BACKGROUND_JOB", caller, headers, body)
            if after is not None:
                after()

        asyncio.get_running_loop().create_task(run())

    # ---------------------------------------------------------------------------------------- events

    def _cmd_event(self, rest: str) -> None:
        words = rest.split()
        if words and words[0].lower() in _FORMATS:
            self.sub.fmt = words.pop(0).lower()
        added = False
        custom = False
        for word in words:
            if custom:
                self.sub.customs.add(word)
                added = True
            elif word == "CUSTOM":
                custom = True
            elif word.upper() in _KNOWN:
                added = True
                if word.upper() == "ALL":
                    self.sub.all = True
                else:
                    self.sub.names.add(word.upper())
        if added:
            self.bus.subscribers.add(self)
            self.write(encode_reply(f"+OK event listener enabled {self.sub.fmt}"))
        else:
            self.write(encode_reply("-ERR no keywords supplied"))

    def _cmd_nixevent(self, rest: str) -> None:
        words = [w.upper() for w in rest.split()]
        if not words:
            self.write(encode_reply("-ERR no keywords supplied"))
            return
        if self.sub.all and any(w != "ALL" for w in words):
            self.sub.all = False
            self.sub.names |= set(EVENT_NAMES) - {"ALL"}
        for word in words:
            if word == "ALL":
                self.sub.all = False
                self.sub.names.clear()
            self.sub.names.discard(word)
        self.write(encode_reply("+OK events nixed"))

    def _cmd_noevents(self, rest: str) -> None:
        if self.sub.active:
            self.sub = Subscription(fmt=self.sub.fmt, filters=self.sub.filters)
            self.bus.subscribers.discard(self)
            self.write(encode_reply("+OK no longer listening for events"))
        else:
            self.write(encode_reply("-ERR not listening for events"))

    def _cmd_myevents(self, rest: str) -> None:
        words = rest.split()
        fmt = next((w for w in words if w in _FORMATS), None)
        uid = next((w for w in words if w not in _FORMATS), "")
        if self.sub.myevents is not None:
            self.write(encode_reply("-ERR aready enabled."))
            return
        if fmt is not None and uid not in self.api.engine.channels:
            self.write(encode_reply("-ERR invalid uuid"))
            return
        self.sub.fmt = fmt or self.sub.fmt
        self.sub.myevents = uid
        self.bus.subscribers.add(self)
        self.write(encode_reply("+OK Events Enabled"))

    def _filter(self, rest: str) -> None:
        """``filter [add] <header> <value>`` / ``filter delete ...``, word for word as ``parse_command`` reads
        them: the value is the rest of the line, unstripped; ``filter delete`` alone is a filter without a value."""
        name, space, value = rest.lstrip(" ").partition(" ")
        if name.lower() == "delete" and space:
            self._filter_delete(value)
        elif not space:
            self.write(encode_reply("-ERR invalid syntax"))
        elif name.lower() == "add":
            self._filter_add(*_split_value(value))
        else:
            self._filter_add(name, value)

    def _filter_add(self, name: str, value: str | None) -> None:
        if value is not None:  # switch_event_add_header_string adds nothing without a value, yet says it did
            self.sub.filters.append((name, value))
        self.write(encode_reply(f"+OK filter added. [{name}]=[{'(null)' if value is None else value}]"))

    def _filter_delete(self, rest: str) -> None:
        """``all`` clears every filter; else ``switch_event_del_header_val``: the name in any case, then the exact
        value, or every value of that name when none (or an empty one) is given."""
        name, value = _split_value(rest)
        if name.lower() == "all":
            self.sub.filters.clear()
        else:
            self.sub.filters = [
                (k, v) for k, v in self.sub.filters if not (k.lower() == name.lower() and (not value or v == value))
            ]
        self.write(encode_reply(f"+OK filter deleted. [{name}][{value or ''}]"))

    # ---------------------------------------------------------------------------------------- misc

    def _cmd_linger(self, rest: str) -> None:
        self.write(encode_reply(_NOT_SESSION))

    def _cmd_nolinger(self, rest: str) -> None:
        self.write(encode_reply(_NOT_SESSION))

    def _cmd_divert_events(self, rest: str) -> None:
        self.write(encode_reply(_NOT_SESSION + "."))

    def _cmd_log(self, rest: str) -> None:
        self.write(encode_reply("+OK log level debug [7]"))

    def _cmd_nolog(self, rest: str) -> None:
        self.write(encode_reply("-ERR not loging"))

    def _cmd_sendevent(self, rest: str) -> None:
        event_uuid = str(uuidlib.uuid4())
        self.write(encode_reply(f"+OK {event_uuid}"))

    def _cmd_exit(self, rest: str) -> None:
        self.write(encode_reply("+OK bye"))
        self.write(encode_disconnect_notice())
        self.close()


def _split_value(text: str) -> tuple[str, str | None]:
    """``strchr(header_name, ' ')``: the header up to the first space and everything after it, or no value."""
    name, space, value = text.partition(" ")
    return name, value if space else None
