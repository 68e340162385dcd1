"""The call engine: originate, ringing outcomes, apps (park, bridge, eavesdrop), hangup cascades, DTMF.

Runs only on the simulator's event-loop thread. Event order follows the carrier_* transcripts: a sofia leg fires
CHANNEL_OUTGOING, CHANNEL_CREATE, CHANNEL_ORIGINATE, [CHANNEL_PROGRESS], CHANNEL_ANSWER (or CHANNEL_HANGUP),
and the originate result is available *before* the leg's application starts.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid as uuidlib
from collections.abc import Callable

from redswitch.protocol import cause_code, cause_name
from redswitch.protocol.codec import serialize_headers_plain
from redswitch.simulator.bus import EventBus
from redswitch.simulator.channels import Channel, channel_headers, channel_plain
from redswitch.simulator.dialstring import Leg, OriginateRequest, parse_dial_string
from redswitch.simulator.scenario import FAIL, NO_ANSWER, Outcome, Scenario

__all__ = ["CALLERS", "CallEngine"]

CALLERS = {
    "CHANNEL_OUTGOING": ("switch_core_session.c", "switch_core_session_outgoing_channel", 739),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_ORIGINATE": ("switch_ivr_originate.c", "switch_ivr_originate", 3918),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3488),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c", "switch_channel_perform_mark_pre_answered", 3562),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3848),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2949),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1205),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1689),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1799),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3447),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1721),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 678),
    "CHANNEL_HOLD": ("switch_ivr.c", "switch_ivr_hold", 1558),
    "CHANNEL_UNHOLD": ("switch_ivr.c", "switch_ivr_unhold", 1638),
    "RECORD_START": ("switch_ivr_async.c", "record_callback", 1482),
    "RECORD_STOP": ("switch_ivr_async.c", "send_record_stop_event", 1241),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", 1649),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", 2023),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2972),
}
_EAVESDROP_DIGITS = {"0": "listen", "1": "talk_other", "2": "talk_target", "3": "threeway"}
OUT_OF_ORDER = "-ERR DESTINATION_OUT_OF_ORDER\n"


class CallEngine:
    def __init__(self, bus: EventBus, scenario: Scenario) -> None:
        self.bus = bus
        self.scenario = scenario
        self.channels: dict[str, Channel] = {}
        #: Channels that ever ran eavesdrop and still exist: while there are none, a hangup need not look for spies.
        self.eavesdroppers: set[str] = set()
        self.sessions_since_startup = 0
        self.peak = 0
        self._recent: collections.deque[float] = collections.deque()
        self._session_id = 0

    # ------------------------------------------------------------------------------------------- events

    def emit(
        self,
        name: str,
        ch: Channel,
        *,
        variables: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
        tail: tuple[tuple[str, str], ...] = (),
    ) -> None:
        other = self.channels.get(ch.other_uuid) if ch.other_uuid else None

        # Built only for a subscriber that takes the event, as it goes out: pairs for json/xml and filters,
        # bytes for plain (channel_plain reuses the serialisation of what did not change since the last event).
        def headers() -> list[tuple[str, str]]:
            return [*extra, *channel_headers(ch, other, variables=variables), *tail]

        def plain() -> bytes:
            rows = channel_plain(ch, other, variables=variables)
            return serialize_headers_plain(extra) + rows + serialize_headers_plain(tail)

        caller = CALLERS.get(name, ("switch_channel.c", "switch_channel_event", 1))
        self.bus.fire(name, caller, headers, unique_id=ch.uuid, rest_plain=plain)

    # ------------------------------------------------------------------------------------------- originate

    def _admit(self) -> bool:
        """FreeSWITCH's session throttle: refuse past sessions-per-second or max-sessions, with no channel."""
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        sps, max_sessions = self.scenario.sessions_per_second, self.scenario.max_sessions
        if sps is not None and len(self._recent) >= sps:
            return False
        return max_sessions is None or len(self.channels) < max_sessions

    def _precheck(self, leg: Leg) -> str | None:
        gateways = self.scenario.gateways
        ep = leg.endpoint
        if ep.kind == "sofia" and ep.gateway is not None and gateways and ep.gateway not in gateways:
            return "-ERR INVALID_GATEWAY\n"
        if ep.kind not in ("sofia", "loopback", "user", "error"):
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        if not self._admit():
            return OUT_OF_ORDER
        return None

    def create_channel(self, leg: Leg, variables: dict[str, str], other: Channel | None = None) -> Channel:
        ch = self.new_channel(leg, variables, other)
        b = self._loopback_b(ch, variables) if leg.endpoint.kind == "loopback" else None
        self._register(ch)
        for name_ in ("CHANNEL_OUTGOING", "CHANNEL_CREATE", "CHANNEL_ORIGINATE"):
            self.emit(name_, ch)
        if b is not None:
            self._register(b)
            self.emit("CHANNEL_CREATE", b)
        return ch

    def _register(self, ch: Channel) -> None:
        self.channels[ch.uuid] = ch
        self._recent.append(time.monotonic())
        self.sessions_since_startup += 1
        self.peak = max(self.peak, len(self.channels))

    def _loopback_b(self, a: Channel, variables: dict[str, str]) -> Channel:
        """mod_loopback's ``-b`` half (``channel_on_init``): an inbound leg that runs the dialplan for the number,
        carrying the originate's variables; each half names the other in ``other_loopback_leg_uuid``."""
        uid = str(uuidlib.uuid4())
        name = f"loopback/{a.number}-b"
        self._session_id += 1
        base = {"direction": "inbound", "uuid": uid, "call_uuid": uid, "session_id": str(self._session_id)}
        base["channel_name"] = name
        base.update(variables)
        base.update(other_loopback_leg_uuid=a.uuid, loopback_leg="B")
        a.variables.update(other_loopback_leg_uuid=uid, loopback_leg="A")
        b = Channel(uid, name, a.number, a.endpoint, None, a.cid_num, base, direction="inbound")
        b.source, b.context, b.dialplan = a.source, a.context, a.dialplan
        a.loopback_peer, b.loopback_peer = uid, a.uuid
        return b

    def _loopback_answer(self, a: Channel) -> None:
        """The ``-b`` half answered (its dialplan: answer, then park); the ``-a`` half just did, in ``ring``."""
        b = self.channels.get(a.loopback_peer) if a.loopback_peer else None
        if b is not None and b.alive and not b.answered:
            self.answer(b, Outcome(hangup_after=None))
            self.start_app(b, "park", "")

    def new_channel(self, leg: Leg, variables: dict[str, str], other: Channel | None = None) -> Channel:
        """A channel for ``leg`` with the variables FreeSWITCH sets on an outbound leg (not registered, no event)."""
        ep = leg.endpoint
        uid = variables.get("origination_uuid") or str(uuidlib.uuid4())
        if uid in self.channels:
            uid = str(uuidlib.uuid4())
        if ep.kind == "sofia":
            name = f"sofia/{ep.profile or self.scenario.profile}/{ep.number}"
        elif ep.kind == "loopback":  # loopback/<number>[/<context>]: the -a half, the one originate returns
            name = f"loopback/{ep.number}-a"
        else:
            name = ep.url
        self._session_id += 1
        base = {"direction": "outbound", "is_outbound": "true", "uuid": uid, "call_uuid": uid}
        base["session_id"] = str(self._session_id)
        if ep.gateway:
            base["sip_gateway_name"] = ep.gateway
        base["channel_name"] = name
        base.update(variables)
        base.update({"originate_early_media": str(_early_ok(variables)).lower(), "originate_endpoint": ep.kind})
        if ep.kind == "sofia":
            base["sofia_profile_name"] = ep.profile or self.scenario.profile
        cid_num = variables.get("origination_caller_id_number", "0000000000")
        ch = Channel(uid, name, ep.number, ep.url, variables.get("origination_caller_id_name"), cid_num, base)
        if ep.kind == "loopback":
            ch.source, ch.context, ch.dialplan = "mod_loopback", ep.context, "xml"
        if other is not None:
            ch.other_uuid, ch.other_type = other.uuid, "originator"
        return ch

    async def originate(self, req: OriginateRequest) -> tuple[str, Callable[[], None] | None]:
        """Dial the first leg; return the api body and the action that starts the app once the result is out."""
        if not req.legs:
            return "-ERR INVALID_URL\n", None
        leg = req.legs[0]
        refused = self._precheck(leg)
        if refused:
            return refused, None
        variables = req.leg_variables
        if req.cid_num and "origination_caller_id_number" not in variables:
            variables["origination_caller_id_number"] = req.cid_num
        ch = self.create_channel(leg, variables)
        timeout = _timeout(variables, req.timeout, self.scenario.originate_timeout)
        cause = await self.ring(ch, self._outcome(leg), timeout, early_ok=_early_ok(variables))
        if cause is not None:
            return f"-ERR {cause}\n", None
        self._loopback_answer(ch)
        return f"+OK {ch.uuid}\n", lambda: self.start_app(ch, req.app or "park", req.app_arg)

    def _outcome(self, leg: Leg) -> Outcome:
        if leg.endpoint.kind == "error":
            return Outcome(kind=FAIL, cause=cause_name(leg.endpoint.number), ring=0.0, progress=False)
        return self.scenario.outcome_for(leg.endpoint.number)

    async def ring(self, ch: Channel, outcome: Outcome, timeout: float, *, early_ok: bool = True) -> str | None:
        """Let the far end do ``outcome``; returns None once answered, else the hangup cause.

        Like ``switch_ivr_originate``, it also returns None at early media unless the originate's variables say
        ``ignore_early_media=true`` (``early_ok`` false); the far end answers (or fails) later all the same, and
        the originate timeout no longer applies to a leg the originate has handed over.
        """
        loop = asyncio.get_running_loop()
        ch.waiter = loop.create_future()
        if outcome.progress and outcome.kind != FAIL:
            # switch_channel_perform_mark_ring_ready_value fires CHANNEL_PROGRESS, then sets the call state RINGING:
            # the event shows the state before it
            ch.times["progress"] = time.time()
            ch.state = "CS_CONSUME_MEDIA"
            self.emit("CHANNEL_PROGRESS", ch)
            ch.callstate = "RINGING"
        no_answer = loop.call_later(timeout, self.hangup, ch.uuid, "NO_ANSWER")
        ch.timers.append(no_answer)
        after = outcome.ring
        if outcome.early_media is not None:
            after = outcome.early_media
            self.pre_answer(ch)
            if early_ok:
                no_answer.cancel()
                ch.waiter.set_result(None)
        if outcome.kind == FAIL:
            ch.timers.append(loop.call_later(after, self._refused, ch, outcome.cause))
        elif outcome.kind != NO_ANSWER and after < timeout:
            ch.timers.append(loop.call_later(after, self.answer, ch, outcome))
        return await ch.waiter

    def pre_answer(self, ch: Channel) -> None:
        """Early media (SIP 183 with SDP): ``switch_channel_perform_mark_pre_answered``.

        The event still shows the call state before it; the channel is ``EARLY`` from the next event on.
        """
        ch.times["progress_media"] = time.time()
        ch.state = "CS_CONSUME_MEDIA"
        ch.variables["endpoint_disposition"] = "EARLY MEDIA"
        self.emit("CHANNEL_PROGRESS_MEDIA", ch)
        ch.callstate = "EARLY"

    def _refused(self, ch: Channel, cause: str) -> None:
        """The far end refused the INVITE: a sofia leg records the SIP answer, as mod_sofia does."""
        status = SIP_REFUSALS.get(cause)
        if status is not None and ch.variables.get("sofia_profile_name"):
            code, phrase = status
            ch.variables.update(
                sip_term_status=code,
                proto_specific_hangup_cause=f"sip:{code}",
                sip_hangup_disposition="recv_refuse",
                sip_invite_failure_status=code,
                sip_invite_failure_phrase=phrase,
            )
        self.hangup(ch.uuid, cause)

    def answer(self, ch: Channel, outcome: Outcome) -> None:
        if not ch.alive or ch.answered:
            return
        ch.cancel_timers()
        ch.times["answered"] = time.time()
        ch.state = "CS_CONSUME_MEDIA"
        ch.variables["endpoint_disposition"] = "ANSWER"
        self.emit("CHANNEL_ANSWER", ch)
        ch.callstate, ch.state = "ACTIVE", "CS_EXECUTE"
        if outcome.hangup_after is not None:
            loop = asyncio.get_running_loop()
            ch.timers.append(loop.call_later(outcome.hangup_after, self.hangup, ch.uuid, "NORMAL_CLEARING"))
        if ch.waiter is not None and not ch.waiter.done():
            ch.waiter.set_result(None)

    # ------------------------------------------------------------------------------------------- apps

    def start_app(self, ch: Channel, app: str, arg: str) -> None:
        if not ch.alive:
            return
        ch.app, ch.app_arg = app, arg
        if arg:
            ch.variables["current_application_data"] = arg
        ch.variables["current_application"] = app
        # switch_core_session_exec: the application, its data when it has any, and a fresh Application-UUID
        execute = (("Application", app), *((("Application-Data", arg),) if arg else ()))
        self.emit("CHANNEL_EXECUTE", ch, tail=(*execute, ("Application-UUID", str(uuidlib.uuid4()))))
        if app == "park":
            self.emit("CHANNEL_PARK", ch)
        elif app == "bridge":
            asyncio.get_running_loop().create_task(self._bridge_app(ch, arg))
        elif app == "eavesdrop":
            self._eavesdrop_app(ch, arg)

    async def _bridge_app(self, a: Channel, dial: str) -> None:
        variables, legs = parse_dial_string(dial)
        if not legs:
            self.hangup(a.uuid, "INVALID_URL")
            return
        leg = legs[0]
        refused = self._precheck(leg)
        if refused:
            self.hangup(a.uuid, _after_failed_bridge(a.variables, refused[5:].strip()))
            return
        # bridge copies the caller's ignore_early_media when the dial string leaves it unset (switch_ivr_originate.c)
        inherited = {k: a.variables[k] for k in _INHERITED if k in a.variables and k not in variables}
        b = self.create_channel(leg, {**inherited, **variables, **leg.variables}, other=a)
        a.pending_b = b.uuid
        if a.answered:  # an answered channel that originates waits in RING_WAIT (switch_channel.c, CF_ORIGINATOR)
            a.callstate = "RING_WAIT"
        timeout = _timeout(b.variables, None, self.scenario.originate_timeout)
        cause = await self.ring(b, self._outcome(leg), timeout, early_ok=_early_ok({**inherited, **variables}))
        a.pending_b = None
        if a.callstate == "RING_WAIT":
            a.callstate = "ACTIVE"
        if cause is not None:
            a.variables.update({"originate_disposition": cause, "DIALSTATUS": cause, "originate_failed_cause": cause})
            self.hangup(a.uuid, _after_failed_bridge(a.variables, cause))
            return
        self._loopback_answer(b)
        self._link(a, b)

    def _link(self, a: Channel, b: Channel) -> None:
        """Bridge ``a`` (originator, fires the single CHANNEL_BRIDGE) with ``b``."""
        now = time.time()
        a.other_uuid, a.other_type, a.bridged = b.uuid, "originatee", True
        b.other_uuid, b.other_type, b.bridged = a.uuid, "originator", True
        a.times["bridged"] = now
        for x, y in ((a, b), (b, a)):
            x.variables.update({"bridge_uuid": y.uuid, "signal_bond": y.uuid, "last_bridge_to": y.uuid})
        a.variables.update({"originate_disposition": "SUCCESS", "DIALSTATUS": "SUCCESS"})
        bridge_ids = (("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid))
        self.emit("CHANNEL_BRIDGE", a, extra=bridge_ids)

    def uuid_bridge(self, a_uuid: str, b_uuid: str) -> str:
        """``switch_ivr_uuid_bridge``: each channel leaves what it was doing (a park ends: CHANNEL_UNPARK; a bridge
        ends: CHANNEL_UNBRIDGE, and the partner left alone hangs up, see :meth:`_leave_bridge`), then ``a`` bridges
        to ``b``. Needs media on one of them (``a`` answered, else ``b``: the order is reversed)."""
        a, b = self.channels.get(a_uuid), self.channels.get(b_uuid)
        if a is None or b is None or a is b:
            return "-ERR Invalid uuid\n"
        if not a.answered:
            if not b.answered:
                return "-ERR Invalid uuid\n"  # "Neither channel is answered, cannot bridge them."
            a, b = b, a
        left = [old for old in (self._leave_bridge(a), self._leave_bridge(b)) if old is not None]
        for ch in (a, b):
            if ch.app == "park":
                self.emit("CHANNEL_UNPARK", ch)
        for ch, other in ((a, b), (b, a)):  # uuid_bridge_on_soft_execute: for "show channels"
            ch.app, ch.app_arg = "uuid_bridge", other.uuid
            self.emit("CHANNEL_EXECUTE", ch, tail=(("Application", "uuid_bridge"), ("Application-Data", other.uuid)))
        self._link(a, b)
        for old in left:
            self._left_alone(old)
        return f"+OK {b_uuid}\n"

    def _leave_bridge(self, ch: Channel) -> Channel | None:
        """``ch`` leaves its bridge for a ``uuid_bridge`` (CF_TRANSFER): the bridge's originator fires
        CHANNEL_UNBRIDGE; the partner it leaves, returned, is no longer bridged (it is ended by :meth:`_left_alone`)."""
        partner = self.channels.get(ch.other_uuid) if ch.bridged and ch.other_uuid else None
        if partner is None or not partner.alive:
            return None
        originator = ch if ch.other_type == "originatee" else partner
        self.emit("CHANNEL_UNBRIDGE", originator)
        for x in (ch, partner):
            x.bridged, x.other_uuid, x.other_type = False, None, None
        return partner

    def _left_alone(self, ch: Channel) -> None:
        """The partner a ``uuid_bridge`` took away from ``ch``: with ``park_after_bridge`` it parks; otherwise it
        hangs up NORMAL_CLEARING (answered), whichever end of the bridge it was: the b-leg in
        ``audio_bridge_on_exchange_media``, the originator's ``bridge`` application returning with nothing after it
        (``switch_ivr_bridge.c``); an unanswered b-leg hangs up ORIGINATOR_CANCEL."""
        if not ch.alive:
            return
        if _truthy(ch.variables.get("park_after_bridge")):
            self.start_app(ch, "park", "")
            return
        self.hangup(ch.uuid, "NORMAL_CLEARING" if ch.answered else "ORIGINATOR_CANCEL")

    def _eavesdrop_app(self, spy: Channel, target_uuid: str) -> None:
        target = self.channels.get(target_uuid.strip())
        if target is None or target is spy:
            asyncio.get_running_loop().call_soon(self.hangup, spy.uuid, "NORMAL_CLEARING")
            return
        v = spy.variables
        spy.eavesdrop_target = target.uuid
        self.eavesdroppers.add(spy.uuid)
        spy.eavesdrop_dtmf = v.get("eavesdrop_enable_dtmf", "true").lower() != "false"
        read, write = _truthy(v.get("eavesdrop_whisper_aleg")), _truthy(v.get("eavesdrop_whisper_bleg"))
        spy.eavesdrop_mode = (
            "threeway" if read and write else "talk_other" if read else "talk_target" if write else "listen"
        )

    # ------------------------------------------------------------------------------------------- dtmf

    def recv_dtmf(self, ch: Channel, digits: str) -> None:
        for digit in digits:
            if not ch.alive:
                return
            tail = (("DTMF-Digit", digit), ("DTMF-Duration", "2000"), ("DTMF-Source", "APP"))
            self.emit("DTMF", ch, variables=False, tail=tail)
            if ch.eavesdrop_target is not None and ch.eavesdrop_dtmf:
                if digit == "*":
                    ch.eavesdrop_target = ch.eavesdrop_mode = None
                    asyncio.get_running_loop().call_soon(self.hangup, ch.uuid, "NORMAL_CLEARING")
                elif digit in _EAVESDROP_DIGITS:
                    ch.eavesdrop_mode = _EAVESDROP_DIGITS[digit]

    # ---------------------------------------------------------------------------------------- playback

    def broadcast(self, ch: Channel, path: str) -> None:
        """``switch_ivr_broadcast`` queues ``playback <path>`` on the channel, which runs it: CHANNEL_EXECUTE,
        PLAYBACK_START (``Playback-File-Path``). A simulated file plays until ``uuid_break`` or the hangup."""
        if ch.playing is not None:
            self.break_playback(ch)  # the broadcast interrupts what played (the queued app runs next)
        ch.playing = path
        self.emit("CHANNEL_EXECUTE", ch, tail=(("Application", "playback"), ("Application-Data", path)))
        self.emit("PLAYBACK_START", ch, tail=(("Playback-File-Path", path),))

    def break_playback(self, ch: Channel) -> None:
        """``uuid_break``: the playback ends with PLAYBACK_STOP (``Playback-Status: break``), then
        CHANNEL_EXECUTE_COMPLETE of ``playback``; nothing when nothing plays."""
        path, ch.playing = ch.playing, None
        if path is None:
            return
        self.emit("PLAYBACK_STOP", ch, tail=(("Playback-File-Path", path), ("Playback-Status", "break")))
        tail = (("Application", "playback"), ("Application-Data", path), ("Application-Response", "FILE PLAYED"))
        self.emit("CHANNEL_EXECUTE_COMPLETE", ch, tail=tail)

    # ---------------------------------------------------------------------------------------- record

    def record(self, ch: Channel, path: str) -> str:
        """``switch_ivr_record_session_event``: needs media (an answered channel here); a path already recorded is
        a success that starts nothing; RECORD_START carries ``Record-File-Path``."""
        if not ch.answered:
            return "-ERR Cannot record session!\n"
        if path not in ch.recordings:
            ch.recordings.append(path)
            self.emit("RECORD_START", ch, tail=(("Record-File-Path", path),))
        return "+OK Success\n"

    def stop_record(self, ch: Channel, path: str) -> str:
        """``switch_ivr_stop_record_session``: ``all`` or one path being recorded; RECORD_STOP for each."""
        paths = list(ch.recordings) if path == "all" else [path] if path in ch.recordings else []
        if not paths:
            return "-ERR Cannot stop record session!\n"
        for one in paths:
            ch.recordings.remove(one)
            self.emit("RECORD_STOP", ch, tail=(("Record-File-Path", one),))
        return "+OK Success\n"

    # ------------------------------------------------------------------------------------------- hangup

    def hangup(self, uid: str, cause: str = "NORMAL_CLEARING") -> bool:
        """Hang ``uid`` up and cascade: bridged partner, ringing bridge leg, the other half of a loopback pair (each
        of those cascading in turn), then eavesdroppers (NORMAL_CLEARING)."""
        first = self.channels.get(uid)
        if first is None or not first.alive:
            return False
        group: list[tuple[Channel, str]] = [(first, cause)]
        for ch, ch_cause in group:  # grows while it is walked: each follower brings its own
            ending = {c.uuid for c, _ in group}
            group += [(f, c) for f, c in self._followers(ch, ch_cause) if f.uuid not in ending]
        ended = {c.uuid for c, _ in group}
        if self.eavesdroppers:  # the scan of every channel, only while someone eavesdrops
            spies = [s for s in self.channels.values() if s.eavesdrop_target in ended and s.uuid not in ended]
            group += [(s, "NORMAL_CLEARING") for s in spies]
        self._end(group)
        return True

    def _followers(self, gone: Channel, cause: str) -> list[tuple[Channel, str]]:
        """The channels ``gone``'s hangup ends directly, with their causes (a parked partner is not one)."""
        out: list[tuple[Channel, str]] = []
        partner = self.channels.get(gone.other_uuid) if gone.bridged and gone.other_uuid else None
        if partner is not None and partner.alive:
            partner_cause = self._partner_cause(gone, partner, cause)
            if partner_cause is None:
                self._park_after_bridge(partner)
            else:
                out.append((partner, partner_cause))
        ringing_b = self.channels.get(gone.pending_b) if gone.pending_b else None
        if ringing_b is not None and ringing_b.alive:
            out.append((ringing_b, "ORIGINATOR_CANCEL"))
        peer = self.channels.get(gone.loopback_peer) if gone.loopback_peer else None
        if peer is not None and peer.alive:
            out.append((peer, cause))  # mod_loopback's channel_on_hangup: the other half, with the same cause
        return out

    @staticmethod
    def _partner_cause(gone: Channel, partner: Channel, cause: str) -> str | None:
        """``signal_bridge_on_hangup`` and the bridge app's return: the other leg's cause, or None if it parks.

        An originatee is hung up with the same cause. The originator (A of ``originate A &bridge(B)``) parks with
        ``park_after_bridge``, takes B's cause with ``hangup_after_bridge`` (B answered), else its app list ends
        and it hangs up NORMAL_CLEARING.
        """
        if gone.other_type == "originatee":
            return cause
        if _truthy(partner.variables.get("park_after_bridge")):
            return None
        if gone.answered and _truthy(partner.variables.get("hangup_after_bridge")):
            return cause
        return "NORMAL_CLEARING"

    def _park_after_bridge(self, a: Channel) -> None:
        """The originator survives its bridge: CHANNEL_UNBRIDGE, then it is parked."""
        self.emit("CHANNEL_UNBRIDGE", a)
        a.bridged, a.other_uuid, a.other_type = False, None, None
        self.start_app(a, "park", "")

    def _end(self, group: list[tuple[Channel, str]]) -> None:
        now = time.time()
        unbridged: set[str] = set()
        for ch, cause in group:
            ch.cancel_timers()
            if ch is not group[0][0] and ch.bridged and ch.other_type == "originatee":
                self.emit("CHANNEL_UNBRIDGE", ch)  # the originator's bridge returns before it hangs up
                unbridged.add(ch.uuid)
            ch.cause = cause
            ch.times["hangup"] = now
            self.emit("CHANNEL_HANGUP", ch)
            if ch.waiter is not None and not ch.waiter.done():
                ch.waiter.set_result(cause)
        for ch, _ in group:  # the hangup state removes every media bug: each recording closes (RECORD_STOP)
            while ch.recordings:
                self.stop_record(ch, ch.recordings[0])
        for ch, _ in group:
            if ch.bridged and ch.other_type == "originatee" and ch.uuid not in unbridged:
                self.emit("CHANNEL_UNBRIDGE", ch)
            if ch.app == "park" and ch.answered:
                self.emit("CHANNEL_UNPARK", ch)
        for ch, _ in group:
            ch.set_hangup_vars(now)
            ch.state, ch.callstate = "CS_REPORTING", "HANGUP"
            self.emit("CHANNEL_HANGUP_COMPLETE", ch, extra=(("Hangup-Cause", ch.cause or ""),))
        for ch, _ in group:
            ch.state = "CS_DESTROY"
            self.emit("CHANNEL_DESTROY", ch)
            self.channels.pop(ch.uuid, None)
            self.eavesdroppers.discard(ch.uuid)

    def hupall(self, cause: str, matching: tuple[tuple[str, str], ...] = ()) -> int:
        """``switch_core_session_hupall[_matching_vars]``: hang up every live channel, or those whose variables
        equal every ``(name, value)`` of ``matching``; returns how many were hung up (cascades aside)."""
        count = 0
        for ch in list(self.channels.values()):
            if ch.alive and all(ch.lookup(name) == value for name, value in matching):
                count += self.hangup(ch.uuid, cause)
        return count


#: The SIP final response behind each refusal cause (mod_sofia's sip_to_hangup_cause, read backwards).
SIP_REFUSALS: dict[str, tuple[str, str]] = {
    "USER_BUSY": ("486", "Busy Here"),
    "UNALLOCATED_NUMBER": ("404", "Not Found"),
    "NORMAL_TEMPORARY_FAILURE": ("503", "Service Unavailable"),
    "CALL_REJECTED": ("603", "Decline"),
    "NO_USER_RESPONSE": ("480", "Temporarily Unavailable"),
    "INVALID_NUMBER_FORMAT": ("484", "Address Incomplete"),
    "NETWORK_OUT_OF_ORDER": ("502", "Bad Gateway"),
    "RECOVERY_ON_TIMER_EXPIRE": ("408", "Request Timeout"),
    "SERVICE_UNAVAILABLE": ("503", "Service Unavailable"),
}


#: Variables ``bridge`` copies from the calling channel into its own originate when its dial string lacks them.
_INHERITED = ("ignore_early_media",)


def _early_ok(variables: dict[str, str]) -> bool:
    """Does an originate with these variables return at early media? (``ignore_early_media``: true, or the
    ``ring_ready``/``consume`` forms, make it wait for the answer.)"""
    value = variables.get("ignore_early_media", "")
    return not (_truthy(value) or value in ("ring_ready", "consume"))


#: Causes a failed bridge continues after when neither continue_on_fail nor failure_causes is set.
_CONTINUE_BY_DEFAULT = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL"})


def _after_failed_bridge(variables: dict[str, str], cause: str) -> str:
    """The cause the caller of a failed ``bridge`` hangs up with (``switch_channel_handle_cause``).

    It is hung up with the bridge's cause, unless the failure is a reason to continue: then the caller's
    application list goes on and, as after ``&bridge()`` nothing is left to run, it ends ``NORMAL_CLEARING``.
    "No answer is *always* a reason to continue" unless ``continue_on_fail`` or ``failure_causes`` says otherwise;
    ``continue_on_fail`` is ``true`` or a list of cause names and numbers, ``failure_causes`` the opposite list.
    """
    carry_on, failures = variables.get("continue_on_fail"), variables.get("failure_causes")
    names = {cause, str(cause_code(cause))}
    if failures is not None and not names & {c.strip().upper() for c in failures.split(",")}:
        return "NORMAL_CLEARING"
    if carry_on is not None:
        listed = {c.strip().upper() for c in carry_on.split(",")}
        return "NORMAL_CLEARING" if _truthy(carry_on) or names & listed else cause
    if failures is None and cause in _CONTINUE_BY_DEFAULT:
        return "NORMAL_CLEARING"
    return cause


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "yes", "on", "1", "t", "y")


def _timeout(variables: dict[str, str], arg: float | None, default: float) -> float:
    raw = variables.get("originate_timeout") or variables.get("call_timeout")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    return arg if arg else default
