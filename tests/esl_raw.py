"""Helpers for simulator tests: a raw-socket ESL client and a reader for the golden transcripts."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from redswitch.protocol import Event, Frame, Mode, Parser, parse_event_plain

#: Sessions recorded from a real FreeSWITCH (their README says how and what they show).
TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
_BLOCK = re.compile(rb"\n===== (<<< RECV|>>> SENT)( \(EOF\))? t=\+[0-9.]+s \((\d+) bytes\) =====\n")


def transcript_blocks(name: str) -> list[tuple[str, bytes]]:
    """(direction, bytes) per recorded block: direction '<<<' received from FreeSWITCH, '>>>' sent to it."""
    data = (TRANSCRIPTS / name).read_bytes()
    out, pos = [], 0
    while (m := _BLOCK.search(data, pos)) is not None:
        n, start = int(m.group(3)), m.end()
        out.append((m.group(1).decode()[:3], data[start : start + n]))
        pos = start + n
    return out


def transcript_frames(name: str) -> list[Frame]:
    parser = Parser(Mode.FRAMES)
    return parser.feed(b"".join(b for d, b in transcript_blocks(name) if d == "<<<"))


#: Every RawClient still open: closed at the end of each test (tests/conftest.py), so none is left to the GC.
OPEN: list[RawClient] = []


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        OPEN.append(self)
        self.parser = Parser(Mode.FRAMES)
        self.frames: list[Frame] = []

    def read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while not self.frames:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def login(self, password: str = "ClueCon") -> None:
        assert self.frame().content_type == "auth/request"
        self.send(f"auth {password}\n\n".encode())
        assert self.frame().reply_text == "+OK accepted"

    def command(self, line: str) -> Frame:
        self.send(f"{line}\n\n".encode())
        while True:
            frame = self.frame()
            if not (frame.content_type or "").startswith("text/event"):
                return frame

    def events_until(self, predicate: object, timeout: float = 5.0) -> list[Event]:
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.frame(deadline - time.monotonic())
            if frame.content_type == "text/event-plain":
                ev = parse_event_plain(frame.raw_body)
                out.append(ev)
                if callable(predicate) and predicate(ev):
                    return out
        raise TimeoutError([e.name for e in out])

    def at_eof(self) -> bool:
        self.sock.settimeout(2)
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
        if self in OPEN:
            OPEN.remove(self)
