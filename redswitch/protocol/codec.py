"""Sans-I/O ESL codec: an incremental parser and the encoders for every frame FreeSWITCH writes.

No sockets, threads or clocks here (like h11): callers feed bytes in and write the bytes we return. Layouts follow
``mod_event_socket.c`` and ``switch_event.c`` and are checked byte for byte against recorded sessions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import Enum

from redswitch.protocol.frames import Event, Frame
from redswitch.protocol.urlcode import url_decode, url_encode

__all__ = [
    "DISCONNECT_GOODBYE",
    "MAX_BLOCK",
    "MAX_CONTENT_LENGTH",
    "Mode",
    "Parser",
    "ProtocolError",
    "encode_api_response",
    "encode_auth_request",
    "encode_command",
    "encode_disconnect_notice",
    "encode_event_json",
    "encode_event_plain",
    "encode_event_xml",
    "encode_reply",
    "encode_rude_rejection",
    "parse_event_json",
    "parse_event_plain",
    "serialize_event_json",
    "serialize_event_plain",
    "serialize_event_xml",
]

#: Body of the disconnect notice on a normal close (MES ``send_disconnect``), 67 bytes.
DISCONNECT_GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
#: MES ``MAX_CONTENT_LENGTH``: larger (or non-positive) Content-Length values are rejected.
MAX_CONTENT_LENGTH = 16 * 1024 * 1024
#: MES ``read_packet`` cuts a header block larger than this.
MAX_BLOCK = 10 * 1024 * 1024


class ProtocolError(ValueError):
    """The peer sent bytes that cannot be an ESL block (bad or oversized Content-Length, oversized headers)."""


class Mode(Enum):
    """Which side's blocks a ``Parser`` reads."""

    COMMANDS = "commands"  # client -> server: first line is the command
    FRAMES = "frames"  # server -> client: header block (+ Content-Length body)


class Parser:
    """Incremental block parser. ``feed(data)`` returns the blocks completed by ``data`` (any split is fine).

    Tolerates ``\\r\\n`` line ends and blank lines between blocks, as FreeSWITCH's ``read_packet`` does.
    """

    def __init__(self, mode: Mode = Mode.FRAMES) -> None:
        self.mode = mode
        self._buf = bytearray()
        self._pos = 0  # scan position inside _buf
        self._lines: list[str] = []
        self._need: int | None = None  # body bytes still expected for the pending header block

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                break
            out.append(frame)
        if self._pos > 65536 or (self._pos and self._pos == len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
        return out

    def _next(self) -> Frame | None:
        if self._need is not None:
            return self._take_body()
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end < 0:
                if len(self._buf) - self._pos > MAX_BLOCK:
                    raise ProtocolError("header block too large")
                return None
            line = bytes(self._buf[self._pos : end]).rstrip(b"\r").decode("utf-8", errors="replace")
            self._pos = end + 1
            if line:
                self._lines.append(line)
            elif self._lines:
                return self._end_headers()

    def _end_headers(self) -> Frame | None:
        length = 0
        for line in self._lines[1 if self.mode is Mode.COMMANDS else 0 :]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = _content_length(value)
        self._need = length
        return self._take_body()

    def _take_body(self) -> Frame | None:
        need = self._need or 0
        if len(self._buf) - self._pos < need:
            return None
        raw = bytes(self._buf[self._pos : self._pos + need])
        self._pos += need
        self._need = None
        lines, self._lines = self._lines, []
        command = lines.pop(0) if self.mode is Mode.COMMANDS else None
        headers = tuple(_split_header(line) for line in lines)
        return Frame(headers, raw.decode("utf-8", errors="replace"), command, raw)


def _content_length(value: str) -> int:
    try:
        length = int(value.strip())
    except ValueError:
        raise ProtocolError(f"bad Content-Length {value!r}") from None
    if length < 0 or length > MAX_CONTENT_LENGTH:
        raise ProtocolError(f"Content-Length out of range: {length}")
    return length


def _split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value.lstrip(" ")


# ----------------------------------------------------------------------------------------------- encoders


def encode_auth_request() -> bytes:
    """The greeting FreeSWITCH sends on connect."""
    return b"Content-Type: auth/request\n\n"


def encode_rude_rejection(body: str = "Access Denied, go away.\n") -> bytes:
    """What an ACL-refused peer gets before the close."""
    data = body.encode("utf-8")
    return b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n%s" % (len(data), data)


def encode_reply(text: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A ``command/reply``; extra headers (e.g. bgapi's ``Job-UUID``) follow ``Reply-Text``."""
    extra = "".join(f"{k}: {v}\n" for k, v in headers)
    return f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode()


def encode_api_response(body: str) -> bytes:
    """An ``api/response``: Content-Type first, then Content-Length (MES ``api_exec``)."""
    data = body.encode("utf-8")
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(data), data)


def encode_disconnect_notice(body: str = DISCONNECT_GOODBYE, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """``text/disconnect-notice`` (Content-Type first, then any extra headers, then Content-Length)."""
    data = body.encode("utf-8")
    extra = "".join(f"{k}: {v}\n" for k, v in headers).encode("utf-8")
    return b"Content-Type: text/disconnect-notice\n%sContent-Length: %d\n\n%s" % (extra, len(data), data)


def encode_command(command: str, headers: Iterable[tuple[str, str]] = (), body: str = "") -> bytes:
    """A client->server block: the command line, header lines, a Content-Length when there is a body."""
    lines = [command, *(f"{k}: {v}" for k, v in headers)]
    data = body.encode("utf-8")
    if data:
        lines.append(f"Content-Length: {len(data)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + data


def _event_frame(kind: bytes, payload: bytes) -> bytes:
    return b"Content-Length: %d\nContent-Type: text/event-%s\n\n%s" % (len(payload), kind, payload)


def serialize_event_plain(event: Event) -> bytes:
    """``switch_event_serialize``: url-encoded ``Name: value`` lines, then a blank line or the body section."""
    parts = [f"{k}: {url_encode(v) if v else '_undef_'}\n" for k, v in event.headers]
    if event.body:
        body = event.body.encode("utf-8")
        parts.append(f"Content-Length: {len(body)}\n\n")
        return "".join(parts).encode("utf-8") + body
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def serialize_event_json(event: Event) -> bytes:
    """``switch_event_serialize_json``: one unformatted object; repeated names become arrays; body as ``_body``."""
    obj: dict[str, str | list[str]] = {}
    for key, value in event.headers:
        prev = obj.get(key)
        if prev is None:
            obj[key] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            obj[key] = [prev, value]
    if event.body:
        obj["Content-Length"] = str(len(event.body.encode("utf-8")))
        obj["_body"] = event.body
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def serialize_event_xml(event: Event) -> bytes:
    """``switch_event_xmlize`` rendered by ``switch_xml_toxml``: header values url-encoded, body escaped."""
    rows = [f"    <{k}>{_xml_escape(url_encode(v))}</{k}>\n" for k, v in event.headers]
    body = ""
    if event.body:
        rows.append(f"    <Content-Length>{len(event.body.encode('utf-8'))}</Content-Length>\n")
        body = f"  <body>{_xml_escape(event.body)}</body>\n"
    return f"<event>\n  <headers>\n{''.join(rows)}  </headers>\n{body}</event>".encode()


def encode_event_plain(event: Event) -> bytes:
    """The whole ``text/event-plain`` frame: Content-Length first, then Content-Type (MES event loop)."""
    return _event_frame(b"plain", serialize_event_plain(event))


def encode_event_json(event: Event) -> bytes:
    return _event_frame(b"json", serialize_event_json(event))


def encode_event_xml(event: Event) -> bytes:
    return _event_frame(b"xml", serialize_event_xml(event))


# ----------------------------------------------------------------------------------------------- event parsing


def parse_event_plain(payload: bytes | str) -> Event:
    """Parse a plain event payload (a frame's body): headers url-decoded; inner Content-Length becomes the body."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    head, sep, rest = data.partition(b"\n\n")
    headers: list[tuple[str, str]] = []
    body_len = 0
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if not line:
            continue
        name, value = _split_header(line)
        if name.lower() == "content-length":
            body_len = _content_length(value)
            continue
        headers.append((name, url_decode(value)))
    body = rest[:body_len].decode("utf-8", errors="replace") if sep and body_len else ""
    return Event(tuple(headers), body)


def parse_event_json(payload: bytes | str) -> Event:
    """Parse a JSON event payload; arrays expand back into repeated headers, ``_body`` becomes the body."""
    obj = json.loads(payload)
    headers: list[tuple[str, str]] = []
    body = str(obj.pop("_body", ""))
    if body:
        obj.pop("Content-Length", None)
    for key, value in obj.items():
        values = value if isinstance(value, list) else [value]
        headers.extend((key, str(v)) for v in values)
    return Event(tuple(headers), body)
