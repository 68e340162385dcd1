"""Sans-I/O ESL codec: an incremental parser and the encoders for every frame FreeSWITCH writes.

No sockets, threads or clocks here (like h11): callers feed bytes in and write the bytes we return. Layouts follow
``mod_event_socket.c`` and ``switch_event.c`` and are checked byte for byte against recorded sessions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from enum import Enum

from redswitch.protocol.frames import Event, Frame, HeaderPairs
from redswitch.protocol.urlcode import url_decode, url_decode_many, url_encode, url_encode_many

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
    "event_plain_frame",
    "parse_event_json",
    "parse_event_plain",
    "plain_body_section",
    "serialize_event_json",
    "serialize_event_plain",
    "serialize_event_xml",
    "serialize_headers_plain",
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
        if not self._lines and self._whole_block():
            return self._end_headers()
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

    def _whole_block(self) -> bool:
        """Fast path: take a complete ``\\n``-only header block in one slice (no per-line scanning or decoding)."""
        buf, pos = self._buf, self._pos
        while pos < len(buf) and buf[pos] == 0x0A:
            pos += 1
        self._pos = pos
        end = buf.find(b"\n\n", pos)
        if end < 0 or buf.find(b"\r", pos, end) >= 0:
            return False
        self._lines = buf[pos:end].decode("utf-8", errors="replace").split("\n")
        self._pos = end + 2
        return True

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
        raw = bytes(memoryview(self._buf)[self._pos : self._pos + need])
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


def event_plain_frame(payload: bytes) -> bytes:
    """Frame an already serialised plain event (see :func:`serialize_headers_plain`): Content-Length first."""
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(payload), payload)


def serialize_headers_plain(headers: Sequence[tuple[str, str]]) -> bytes:
    """The ``Name: value\\n`` lines of ``switch_event_serialize`` (values url-encoded, empty ones ``_undef_``).

    Lines of consecutive header groups concatenate, so callers may serialise constant groups once and reuse them.
    """
    if not headers:
        return b""
    names, values = zip(*headers, strict=True)
    encoded = url_encode_many([value or "_undef_" for value in values])
    return ("\n".join(map(": ".join, zip(names, encoded, strict=True))) + "\n").encode("utf-8")


def plain_body_section(body: str) -> bytes:
    """What follows the header lines: an empty line, or the inner Content-Length, the empty line and the body."""
    if not body:
        return b"\n"
    data = body.encode("utf-8")
    return b"Content-Length: %d\n\n%s" % (len(data), data)


def serialize_event_plain(event: Event) -> bytes:
    """``switch_event_serialize``: url-encoded ``Name: value`` lines, then a blank line or the body section."""
    return serialize_headers_plain(event.headers) + plain_body_section(event.body)


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


#: One header line (not empty): the name up to the first ``:``, then the value after any spaces.
_HEADER_LINE = re.compile(r"^(?=[^\n])([^:\n]*):? *([^\n]*)", re.MULTILINE)


def parse_event_plain(payload: bytes | str) -> Event:
    """Parse a plain event payload (a frame's body): headers url-decoded; inner Content-Length becomes the body.

    This is the listener's per-event cost, so the usual layout (``Name: value`` lines, url-encoded values, no inner
    Content-Length) is split with a few C-level string operations; anything else takes the general path.
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    head, sep, rest = data.partition(b"\n\n")
    text = head.decode("utf-8", errors="replace")
    if "\r" in text:
        text = "\n".join(line.rstrip("\r") for line in text.split("\n"))
    if "content-length" in text.lower():
        pairs, body_len = _header_pairs_with_length(text)
    else:
        pairs, body_len = _header_pairs(text), 0
    body = rest[:body_len].decode("utf-8", errors="replace") if sep and body_len else ""
    return Event(pairs, body)


def _header_pairs(text: str) -> HeaderPairs:
    """Decoded ``(name, value)`` pairs; names are never decoded."""
    if text.count(": ") == text.count(":") and ":  " not in text:
        # every ":" is followed by exactly one space: partition(": ") == partition(":") + lstrip(" ")
        rows = [line.partition(": ") for line in text.split("\n") if line]
        if not rows:
            return ()
        names, _, values = zip(*rows, strict=True)
    else:
        found = _HEADER_LINE.findall(text)
        names, values = tuple(n for n, _ in found), tuple(v for _, v in found)
    decoded = url_decode_many(list(values)) if "%" in text else values
    return tuple(zip(names, decoded, strict=True))


def _header_pairs_with_length(text: str) -> tuple[HeaderPairs, int]:
    """The general path: ``Content-Length`` lines are taken out (the last one gives the body length)."""
    found = _HEADER_LINE.findall(text)
    lengths = [_content_length(v) for n, v in found if n.lower() == "content-length"]
    kept = [(n, v) for n, v in found if n.lower() != "content-length"]
    pairs = tuple((n, url_decode(v) if "%" in v else v) for n, v in kept)
    return pairs, lengths[-1] if lengths else 0


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
