"""A plain blocking ESL event stream for the listener, built on the pure codec.

The listener needs throughput, not request/response: greenswitch parses line by line, url-decodes whole
blocks and hides event bodies (a BACKGROUND_JOB result ends up inside a header). This reader takes whole
socket reads, hands them to :class:`redswitch.protocol.Parser`, and yields :class:`~redswitch.protocol.Event`
objects with their bodies. No gevent, no threads: one socket, one owner.
"""

from __future__ import annotations

import socket
from collections import deque

from redswitch.errors import EslAuthError, EslConnectionError
from redswitch.protocol import Event, Frame, Mode, Parser, ProtocolError, encode_command, parse_event_plain

RECV_SIZE = 256 * 1024


class EventStream:
    """One authenticated connection subscribed to plain events; ``read()`` returns what has arrived."""

    def __init__(self, host: str, port: int, password: str, timeout: float = 5.0) -> None:
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self._sock: socket.socket | None = None
        self._parser = Parser(Mode.FRAMES)
        self._frames: deque[Frame] = deque()
        self._goodbye = ""
        #: Bodies of the answers to :meth:`send_api`, in order (a ``command/reply`` such as ``-ERR``: its text).
        self.answers: deque[str] = deque()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise EslConnectionError(f"cannot connect to FreeSWITCH at {self.host}:{self.port}: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = self._next_frame(self.timeout)
        if greeting.content_type != "auth/request":
            raise EslConnectionError(f"FreeSWITCH sent {greeting.content_type!r} instead of auth/request")
        reply = self.command(f"auth {self.password}")
        if reply.reply_text != "+OK accepted":
            self.close()
            raise EslAuthError(f"FreeSWITCH at {self.host}:{self.port} rejected the ESL password")

    def command(self, line: str) -> Frame:
        """Send a command and return its ``command/reply`` (events that arrive first are kept for ``read``)."""
        self._send(encode_command(line))
        skipped: list[Frame] = []
        while True:
            frame = self._next_frame(self.timeout)
            if frame.content_type in ("command/reply", "api/response"):
                self._frames.extendleft(reversed(skipped))
                return frame
            skipped.append(frame)

    def send_api(self, line: str) -> None:
        """Send ``api <line>`` without waiting: its answer comes in the stream, in its place among the events, and
        :meth:`read_payloads` stops there and keeps its body in :attr:`answers`."""
        self._send(encode_command(f"api {line}"))

    def subscribe(self, events: list[str]) -> None:
        reply = self.command("event plain " + " ".join(events))
        if not (reply.reply_text or "").startswith("+OK"):
            raise EslConnectionError(f"FreeSWITCH refused the subscription: {reply.reply_text}")

    def read(self, timeout: float) -> list[Event]:
        """Every event received within ``timeout`` seconds of waiting (at least one read), possibly none."""
        return [parse_event_plain(payload) for payload in self.read_payloads(timeout)]

    def read_payloads(self, timeout: float) -> list[bytes]:
        """Like :meth:`read`, but the raw plain-event payloads, for consumers that decode only what they need.

        Events that arrived before a disconnect notice are returned first; the next call raises. An answer to
        :meth:`send_api` ends a read too: the events returned are those that came before it.
        """
        if self._goodbye:
            self.close()
            raise EslConnectionError(f"FreeSWITCH closed the event connection: {self._goodbye.strip()}")
        if not self._frames:
            self._fill(timeout)
        payloads = []
        while self._frames:
            frame = self._frames.popleft()
            kind = frame.content_type
            if kind == "text/event-plain":
                payloads.append(frame.raw_body)
            elif kind in ("api/response", "command/reply"):  # what :meth:`send_api` asked: the events before it
                self.answers.append(frame.body if kind == "api/response" else frame.reply_text or "")
                break
            elif kind in ("text/disconnect-notice", "text/rude-rejection"):
                self._goodbye = frame.body or "disconnected"
                break
        return payloads

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise EslConnectionError("not connected")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise EslConnectionError(f"ESL connection lost: {exc}") from exc

    def _next_frame(self, timeout: float) -> Frame:
        while not self._frames:
            if not self._fill(timeout):
                raise EslConnectionError(f"no reply from FreeSWITCH within {timeout}s")
        return self._frames.popleft()

    def _fill(self, timeout: float) -> bool:
        """One socket read into the frame queue; False on timeout, EslConnectionError on EOF."""
        if self._sock is None:
            raise EslConnectionError("not connected")
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(RECV_SIZE)
        except TimeoutError:
            return False
        except OSError as exc:
            self.close()
            raise EslConnectionError(f"ESL connection lost: {exc}") from exc
        if not data:
            self.close()
            raise EslConnectionError("FreeSWITCH closed the connection")
        try:
            self._frames.extend(self._parser.feed(data))
        except ProtocolError as exc:
            self.close()
            raise EslConnectionError(f"bad bytes from FreeSWITCH: {exc}") from exc
        return True
