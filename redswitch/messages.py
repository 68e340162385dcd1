"""Typed models of every job, control message and event of the Redswitch protocol, with strict validation.

The protocol is the original Redswitch's (``docs/protocol.md``). Validation is the first line of defence
against ESL command injection: every value that can end up on an ESL command line has an explicit alphabet
and length here, so nothing with a space, a newline, a brace, a bracket, a comma, a quote or an ampersand
ever gets past :func:`parse_job` or :func:`parse_control`. ``redswitch.protocol.commands`` checks again.

Rules that hold for every message: the payload must be a JSON object of at most :data:`MAX_PAYLOAD_BYTES`;
``type`` must be known; each field must have the right JSON type (a number where a string is expected is
rejected, not coerced); unknown extra fields are ignored, so newer producers keep working.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from redswitch.errors import PayloadError

MAX_PAYLOAD_BYTES = 16 * 1024

#: ``dial_id``, ``org_id`` and ``user_id``: they become Redis key parts and channel names, so no dots.
ID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
#: A gateway (sofia gateway name) as FreeSWITCH's configuration allows it.
GATEWAY_PATTERN = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
#: A phone number or caller id as seen in the wild: digits with an optional ``+`` and ``-``/``.`` separators.
PHONE_PATTERN = re.compile(r"\+?[0-9](?:[0-9\-.]{0,38}[0-9])?")
PHONE_DIGITS = (3, 20)
#: A SIP address ``user@host[:port]`` for a barger dialled directly, as the original allowed.
SIP_ADDRESS_PATTERN = re.compile(
    r"[A-Za-z0-9_.+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}(?::[0-9]{1,5})?"
)

CONTROL_TYPES = (
    "hangup",
    "barge",
    "whisper",
    "mute",
    "threeway",
    "unthreeway",
    "coach-callee",
    "send-dtmf",
    "hold",
    "unhold",
    "record",
    "stop-record",
    "play",
    "stop-play",
    "transfer",
)
#: The verbs that act on one side of the call, named by ``side``.
SIDED_TYPES = ("send-dtmf", "hold", "unhold", "transfer")
SIDES = ("0", "1")
#: A transfer's new leg rings at most this many seconds (or ORIGINATE_TIMEOUT if shorter): a worker thread waits.
TRANSFER_MAX_RING = 120
#: ``play`` and ``stop-play`` also take ``"both"``.
PLAY_TYPES = ("play", "stop-play")
PLAY_SIDES = ("0", "1", "both")
#: A sound's file name in the sounds directory: no directory part, no leading dot (``redswitch/sounds.py``).
SOUND_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,63}")
#: DTMF digits ``send-dtmf`` may send: what ``uuid_send_dtmf`` takes, without its ``@duration`` and ``w``/``W`` pauses.
DTMF_PATTERN = re.compile(r"[0-9*#A-D]{1,32}")
#: The sender's identity (``by``), logged with what it asked for: ids, e-mail-like names, service names.
SENDER_PATTERN = re.compile(r"[A-Za-z0-9_.@+\-]{1,64}")
#: A signature: the HMAC-SHA256 of the canonical message, in lower-case hex (``redswitch/auth.py``).
SIG_PATTERN = re.compile(r"[0-9a-f]{64}")
EVENT_TYPES = (
    "call-start",
    "answer-event",
    "hangup-event",
    "failure",
    "ack",
    "error",
    "queued",
    "record-event",
    "early-media-event",
)
#: Fields the relay adds to a control message it forwards (never read from what a client published): its entry in
#: the call's control log, which one execution takes; the execution that took it (a hangup waiting for its call's
#: originate sends itself again); until when that hangup waits.
CONTROL_ID = "_control_id"
CONTROL_TAKER = "_control_taker"
CONTROL_UNTIL = "_control_until"
#: Milliseconds a call's control log remembers a message (every relay has heard it by then).
CONTROL_WINDOW_MS = 30_000


@dataclasses.dataclass(frozen=True)
class AspCall:
    """An ``asp-call`` job: ring side 0 (``caller_number``), then bridge it to side 1 (``callee_number``)."""

    call_provider: str
    callee_number: str
    caller_id_lega: str
    caller_id_legb: str
    caller_number: str
    dial_id: str
    org_id: str
    user_id: str
    type: Literal["asp-call"] = "asp-call"

    def to_dict(self) -> dict[str, str]:
        # The fields as __init__ set them, in order: dataclasses.asdict deep-copies every value (plain strings
        # here) and cost tens of microseconds per job on the intake path.
        return dict(self.__dict__)


@dataclasses.dataclass(frozen=True)
class Control:
    """A call-control message published on a call's ``dial_id`` channel (the dial_id is the channel itself)."""

    type: str
    phone_number: str = ""
    caller_id: str = ""
    side: str = ""
    digits: str = ""
    file: str = ""
    #: Who sent it (optional, logged); when it was signed (Unix seconds) and its signature (``redswitch/auth.py``).
    by: str = ""
    ts: int | None = None
    nonce: str = ""
    sig: str = ""

    @property
    def is_sip_address(self) -> bool:
        return "@" in self.phone_number

    def to_dict(self) -> dict[str, Any]:
        """The message as validated: only the fields its type reads, and the sender's and signature's if any."""
        data: dict[str, Any] = self.signed_fields()
        if self.sig:
            data["sig"] = self.sig
        return data

    def signed_fields(self) -> dict[str, Any]:
        """What a signature covers: every field of :meth:`to_dict` but ``sig`` itself."""
        data: dict[str, Any] = {"type": self.type}
        if self.type == "barge":
            data.update(phone_number=self.phone_number, caller_id=self.caller_id)
        if self.type == "transfer":
            data["phone_number"] = self.phone_number
            if self.caller_id:
                data["caller_id"] = self.caller_id
        if self.type in SIDED_TYPES or self.type in PLAY_TYPES:
            data["side"] = self.side
        if self.type == "play":
            data["file"] = self.file
        if self.type == "send-dtmf":
            data["digits"] = self.digits
        if self.by:
            data["by"] = self.by
        if self.ts is not None:
            data["ts"] = self.ts
        if self.nonce:
            data["nonce"] = self.nonce
        return data


Message = AspCall | Control


def load_object(raw: bytes | str) -> dict[str, Any]:
    """Decode a payload into a JSON object, refusing oversized, non-UTF-8, non-JSON and non-object input."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload is {len(raw)} bytes, more than the {MAX_PAYLOAD_BYTES} allowed")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("payload is not UTF-8") from None
    try:
        data = _loads_lenient(raw)
    except RecursionError:
        raise PayloadError("payload is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"payload must be a JSON object, not {_json_type(data)}")
    return data


def _loads_lenient(text: str) -> Any:
    """``json.loads``, also accepting trailing commas (the original README's examples have them)."""
    try:
        return json.loads(text)
    except ValueError:
        relaxed = _drop_trailing_commas(text)
        if relaxed == text:
            raise
        return json.loads(relaxed)


_CLOSING_AHEAD = re.compile(r"\s*[}\]]")


def _drop_trailing_commas(text: str) -> str:
    """Remove each comma that is followed (after white space) by ``}`` or ``]``, outside strings."""
    out: list[str] = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            in_string, escaped = (not (char == '"' and not escaped)), (char == "\\" and not escaped)
        elif char == '"':
            in_string = True
        elif char == "," and _CLOSING_AHEAD.match(text, index + 1):
            continue
        out.append(char)
    return "".join(out)


def parse_job(raw: bytes | str) -> AspCall:
    """Parse and validate a job from the legacy list (or a Dramatiq message's argument)."""
    return job_from_dict(load_object(raw))


def job_from_dict(data: dict[str, Any]) -> AspCall:
    kind = _string(data, "type", re.compile(r".{1,64}"), "a message type")
    if kind != "asp-call":
        raise PayloadError(f"unknown job type {kind!r}: expected 'asp-call'")
    return AspCall(
        call_provider=_string(data, "call_provider", GATEWAY_PATTERN, "a gateway name of letters, digits, _ - ."),
        callee_number=_phone(data, "callee_number"),
        caller_id_lega=_phone(data, "caller_id_lega"),
        caller_id_legb=_phone(data, "caller_id_legb"),
        caller_number=_phone(data, "caller_number"),
        dial_id=_id(data, "dial_id"),
        org_id=_id(data, "org_id"),
        user_id=_id(data, "user_id"),
    )


def parse_control(raw: bytes | str) -> Control:
    """Parse and validate a call-control message."""
    data = load_object(raw)
    kind = _string(data, "type", re.compile(r".{1,64}"), "a message type")
    if kind not in CONTROL_TYPES:
        raise PayloadError(f"unknown control type {kind!r}: expected one of {', '.join(CONTROL_TYPES)}")
    fields: dict[str, Any] = _numbers(kind, data)
    if kind in SIDED_TYPES:
        fields["side"] = _string(data, "side", re.compile("|".join(SIDES)), f"one of {', '.join(SIDES)}")
    if kind in PLAY_TYPES:
        fields["side"] = _string(data, "side", re.compile("|".join(PLAY_SIDES)), f"one of {', '.join(PLAY_SIDES)}")
    if kind == "play":
        fields["file"] = _string(data, "file", SOUND_PATTERN, "a file name in the sounds directory (no '/')")
    if kind == "send-dtmf":
        fields["digits"] = _string(data, "digits", DTMF_PATTERN, "1 to 32 DTMF digits: 0-9 * # A-D")
    if "by" in data:
        fields["by"] = _string(data, "by", SENDER_PATTERN, "1 to 64 letters, digits, _ . @ + or -")
    if "ts" in data:
        ts = data["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 2**40:
            raise PayloadError(f"field 'ts' must be Unix seconds (an integer), not {_preview(str(ts))}")
        fields["ts"] = ts
    if "nonce" in data:
        fields["nonce"] = _string(data, "nonce", ID_PATTERN, "1 to 64 letters, digits, _ or -")
    if "sig" in data:
        fields["sig"] = _string(data, "sig", SIG_PATTERN, "64 lower-case hex digits (HMAC-SHA256)")
    return Control(type=kind, **fields)


def _numbers(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The numbers a verb dials: a barger's (a phone number or a SIP address) and caller id; a transfer's number
    (a phone number only: the call's gateway dials it, as a job's numbers) and optional caller id."""
    if kind == "barge":
        return {"phone_number": _phone_or_sip(data, "phone_number"), "caller_id": _phone(data, "caller_id")}
    if kind == "transfer":
        fields = {"phone_number": _phone(data, "phone_number")}
        if "caller_id" in data:
            fields["caller_id"] = _phone(data, "caller_id")
        return fields
    return {}


def check_dial_id(dial_id: str) -> str:
    """``dial_id`` when it is one (it names a channel and keys): else PayloadError saying what one is."""
    if not ID_PATTERN.fullmatch(dial_id):
        raise PayloadError(f"dial_id must be 1 to 64 letters, digits, _ or -: {dial_id[:40]!r}")
    return dial_id


def peek_field(raw: bytes | str, name: str) -> str | None:
    """Best effort: the valid id in field ``name`` of a payload that may be otherwise invalid, else None.

    Used to tell the right ``dial_id`` channel why its job was refused, without trusting anything else in it.
    """
    try:
        data = load_object(raw)
        return _id(data, name)
    except PayloadError:
        return None


def _json_type(value: object) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _string(data: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    if name not in data:
        raise PayloadError(f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, str):
        raise PayloadError(f"field {name!r} must be a string, not {_json_type(value)}")
    if not pattern.fullmatch(value):
        raise PayloadError(f"field {name!r} must be {what}: {_preview(value)}")
    return value


def _id(data: dict[str, Any], name: str) -> str:
    return _string(data, name, ID_PATTERN, "1 to 64 letters, digits, _ or -")


def _phone(data: dict[str, Any], name: str) -> str:
    value = _string(data, name, PHONE_PATTERN, "a phone number: digits, optional leading +, - or . separators")
    digits = re.sub(r"[\-.]", "", value)
    low, high = PHONE_DIGITS
    if not low <= len(digits.lstrip("+")) <= high:
        raise PayloadError(f"field {name!r} must have {low} to {high} digits: {_preview(value)}")
    return digits


def _phone_or_sip(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if isinstance(value, str) and "@" in value:
        return _string(data, name, SIP_ADDRESS_PATTERN, "a phone number or a SIP address user@host")
    return _phone(data, name)


def _preview(value: str, limit: int = 40) -> str:
    shown = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(shown)
