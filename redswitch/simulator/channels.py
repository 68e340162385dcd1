"""The channel model and the channel part of each event, in FreeSWITCH's header order.

Header layout follows ``switch_channel_event_set_basic_data``, ``switch_caller_profile_event_set_data`` and
``switch_channel_event_set_extended_data`` as seen in the recorded sofia gateway legs (carrier_* transcripts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from redswitch.protocol import cause_code
from redswitch.protocol.codec import serialize_headers_plain

__all__ = ["Channel", "ChannelInfo", "channel_headers", "channel_plain"]

STATE_NUMBERS = {
    "CS_NEW": 0,
    "CS_INIT": 2,
    "CS_ROUTING": 3,
    "CS_EXECUTE": 4,
    "CS_CONSUME_MEDIA": 7,
    "CS_HANGUP": 10,
    "CS_REPORTING": 11,
    "CS_DESTROY": 12,
}
_TIMES = ("answered", "progress", "progress_media", "hangup", "transfer", "resurrect", "bridged")
_TIME_NAMES = ("Answered", "Progress", "Progress-Media", "Hangup", "Transfer", "Resurrect", "Bridged")


def _usec(t: float) -> str:
    return str(int(t * 1_000_000)) if t else "0"


@dataclass(frozen=True)
class ChannelInfo:
    """A thread-safe snapshot of one channel, as returned by ``Simulator.channels()``."""

    uuid: str
    variables: dict[str, str]
    state: str
    answered: bool
    number: str
    endpoint: str
    name: str
    other_uuid: str | None
    eavesdrop_target: str | None
    eavesdrop_mode: str | None
    #: On hold (``uuid_hold``), and the DTMF sent out to the endpoint (``uuid_send_dtmf``), oldest first.
    held: bool = False
    dtmf_sent: str = ""
    recordings: tuple[str, ...] = ()
    playing: str | None = None


@dataclass
class Channel:
    uuid: str
    name: str
    number: str
    endpoint: str
    cid_name: str | None
    cid_num: str
    variables: dict[str, str]
    state: str = "CS_INIT"
    callstate: str = "DOWN"
    times: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    cause: str | None = None
    other_uuid: str | None = None
    other_type: str | None = None  # "originator" | "originatee": role of the *other* leg
    bridged: bool = False
    app: str = ""
    app_arg: str = ""
    eavesdrop_target: str | None = None
    eavesdrop_mode: str | None = None
    eavesdrop_dtmf: bool = True
    held: bool = False
    dtmf_sent: str = ""
    #: Paths being recorded (``uuid_record start``), in the order they started.
    recordings: list[str] = field(default_factory=list)
    #: The file ``uuid_broadcast`` plays on it, until ``uuid_break``.
    playing: str | None = None
    waiter: asyncio.Future[str | None] | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    pending_b: str | None = None  # uuid of a bridge leg still ringing
    #: The other half of a loopback pair (``loopback/N-a`` <-> ``loopback/N-b``): a hangup of one ends the other.
    loopback_peer: str | None = None
    direction: str = "outbound"
    source: str = "src/switch_ivr_originate.c"
    context: str = "default"
    dialplan: str | None = None
    #: Plain serialisations of this channel's header groups, each with the rows it was made from.
    plain_cache: dict[str, tuple[object, bytes]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def answered(self) -> bool:
        return "answered" in self.times

    @property
    def alive(self) -> bool:
        return self.cause is None

    def answer_state(self) -> str:
        if self.cause is not None:
            return "hangup"
        if self.answered:
            return "answered"
        return "early" if "progress_media" in self.times else "ringing"

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()

    def lookup(self, name: str) -> str | None:
        """``switch_channel_get_variable``: a channel variable, else a caller-profile field of that name."""
        value = self.variables.get(name)
        if value is not None:
            return value
        fields = {
            "caller_id_name": self.cid_name,
            "caller_id_number": self.cid_num,
            "ani": self.cid_num,
            "destination_number": self.number,
            "uuid": self.uuid,
            "chan_name": self.name,
            "context": self.context,
            "dialplan": self.dialplan,
            "source": self.source,
        }
        return fields.get(name.lower())

    def snapshot(self) -> ChannelInfo:
        return ChannelInfo(
            uuid=self.uuid,
            variables=dict(self.variables),
            state=self.state,
            answered=self.answered,
            number=self.number,
            endpoint=self.endpoint,
            name=self.name,
            other_uuid=self.other_uuid,
            eavesdrop_target=self.eavesdrop_target,
            eavesdrop_mode=self.eavesdrop_mode,
            held=self.held,
            dtmf_sent=self.dtmf_sent,
            recordings=tuple(self.recordings),
            playing=self.playing,
        )

    def profile(self, prefix: str, with_index: bool = True) -> list[tuple[str, str]]:
        """Caller profile headers (``switch_caller_profile_event_set_data``)."""
        cid_num = self.cid_num
        rows = [("Direction", self.direction), ("Logical-Direction", self.direction)]
        if self.dialplan:
            rows.append(("Dialplan", self.dialplan))
        if self.cid_name:
            rows.append(("Caller-ID-Name", self.cid_name))
        rows += [
            ("Caller-ID-Number", cid_num),
            ("Orig-Caller-ID-Number", cid_num),
            ("Callee-ID-Name", "Outbound Call"),
            ("Callee-ID-Number", self.number),
            ("ANI", cid_num),
            ("Destination-Number", self.number),
            ("Unique-ID", self.uuid),
            ("Source", self.source),
            ("Context", self.context),
            ("Channel-Name", self.name),
        ]
        if with_index:
            rows.append(("Profile-Index", "1"))
        rows += [("Profile-Created-Time", _usec(self.created)), ("Channel-Created-Time", _usec(self.created))]
        rows += [(f"Channel-{n}-Time", _usec(self.times.get(k, 0.0))) for k, n in zip(_TIMES, _TIME_NAMES, strict=True)]
        rows += [("Channel-Last-Hold", "0"), ("Channel-Hold-Accum", "0"), ("Screen-Bit", "true")]
        rows += [("Privacy-Hide-Name", "false"), ("Privacy-Hide-Number", "false")]
        return [(f"{prefix}-{k}", v) for k, v in rows]

    def basic(self, state: str | None = None, state_number: int | None = None) -> list[tuple[str, str]]:
        """``switch_channel_event_set_basic_data`` up to (and including) the codec headers."""
        state = state or self.state
        number = STATE_NUMBERS.get(state, 4) if state_number is None else state_number
        rows = [
            ("Channel-State", state),
            ("Channel-Call-State", self.callstate),
            ("Channel-State-Number", str(number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true" if self.app or self.direction == "inbound" else "false"),
            ("Channel-Call-UUID", self.variables.get("call_uuid", self.uuid)),
            ("Answer-State", self.answer_state()),
        ]
        if self.cause is not None:
            rows.append(("Hangup-Cause", self.cause))
        if self.answered:
            for side, codec, bits in (("Read", "PCMU", "64000"), ("Write", "PCMU", "64000")):
                rows += [(f"Channel-{side}-Codec-Name", codec), (f"Channel-{side}-Codec-Rate", "8000")]
                rows.append((f"Channel-{side}-Codec-Bit-Rate", bits))
        return rows

    def set_hangup_vars(self, end: float) -> None:
        """Billing variables FreeSWITCH adds in the reporting state (seen on CHANNEL_HANGUP_COMPLETE)."""
        cause = self.cause or "NORMAL_CLEARING"
        answered = self.times.get("answered", 0.0)
        v = self.variables
        v["hangup_cause"] = cause
        v["hangup_cause_q850"] = str(cause_code(cause))
        v["start_stamp"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        if answered:
            v["answer_stamp"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(answered))
        v["end_stamp"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end))
        v["start_epoch"], v["start_uepoch"] = str(int(self.created)), _usec(self.created)
        v["answer_epoch"], v["answer_uepoch"] = str(int(answered)), _usec(answered)
        v["end_epoch"], v["end_uepoch"] = str(int(end)), _usec(end)
        if self.app:
            v["last_app"] = self.app
        v["duration"] = str(int(end - self.created))
        v["billsec"] = str(int(end - answered)) if answered else "0"
        v["mduration"] = str(int((end - self.created) * 1000))
        v["billmsec"] = str(int((end - answered) * 1000)) if answered else "0"


def channel_headers(
    ch: Channel, other: Channel | None, *, variables: bool = True, state: str | None = None
) -> list[tuple[str, str]]:
    """Everything after the standard headers for a channel event: basic data, profiles, ``variable_*``."""
    return [row for _, rows in _header_groups(ch, other, variables=variables, state=state) for row in rows]


def channel_plain(ch: Channel, other: Channel | None, *, variables: bool = True) -> bytes:
    """``serialize_headers_plain(channel_headers(...))``, reusing the serialisation of a group of headers (a
    profile, the variables) while its rows are unchanged: a channel's events mostly repeat them."""
    return b"".join(_group_plain(ch, name, rows) for name, rows in _header_groups(ch, other, variables=variables))


def _header_groups(
    ch: Channel, other: Channel | None, *, variables: bool, state: str | None = None
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The channel part of an event in FreeSWITCH's order, as groups; a named group's plain form may be reused."""
    hanging = ch.cause is not None and ch.state not in ("CS_REPORTING", "CS_DESTROY")
    yield "", ch.basic(state, STATE_NUMBERS["CS_HANGUP"] if hanging else None)
    yield "caller", ch.profile("Caller")
    if other is not None and ch.other_type is not None:
        yield "", [("Other-Type", ch.other_type)]
        yield "other", other.profile("Other-Leg", with_index=False)
    if variables:
        yield "variables", [(f"variable_{k}", v) for k, v in ch.variables.items()]


def _group_plain(ch: Channel, name: str, rows: list[tuple[str, str]]) -> bytes:
    """The plain lines of ``rows``: from the channel's cache while its group ``name`` is unchanged."""
    if not name:
        return serialize_headers_plain(rows)
    cached = ch.plain_cache.get(name)
    if cached is None or cached[0] != rows:
        cached = ch.plain_cache[name] = (rows, serialize_headers_plain(rows))
    return cached[1]
