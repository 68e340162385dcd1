"""``api``/``bgapi`` command implementations with FreeSWITCH's exact result strings (``mod_commands.c``).

A handler returns the response body directly, or a coroutine for commands that take time (``originate``): the
coroutine yields the body plus an optional action to run once the body has been delivered (the new leg's app).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from redswitch.protocol import cause_name
from redswitch.simulator import sofia
from redswitch.simulator.calls import CallEngine
from redswitch.simulator.channels import Channel
from redswitch.simulator.dialstring import OriginateRequest, UsageError, parse_originate
from redswitch.simulator.flood import FloodSpec, flood

__all__ = ["VERSION", "Api", "ApiResult", "Controls"]

VERSION = "1.11.3-dev"
After = Callable[[], None] | None
Deferred = Coroutine[Any, Any, tuple[str, After]]
ApiResult = str | Deferred

CHANNEL_COLUMNS = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,application_data,"
    "dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,write_bit_rate,secure,hostname,"
    "presence_id,presence_data,accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,"
    "sent_callee_name,sent_callee_num,initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,"
    "initial_dialplan,initial_context"
).split(",")


_SHOW_USAGE = "-USAGE: calls [count]|channels [count] [as json]|...\n"
_SOFIA_UNMODELLED = frozenset(("profile", "xmlstatus", "jsonstatus", "tracelevel", "loglevel", "global", "recover"))


class Controls(Protocol):
    """The simulator-only knobs reachable over ESL (``sim_*`` commands)."""

    started: float
    hostname: str

    def record_originate(self, req: OriginateRequest) -> None: ...
    def commands(self) -> list[str]: ...
    def originates_json(self) -> list[dict[str, object]]: ...
    def drop_soon(self) -> None: ...
    def set_refuse(self, on: bool) -> None: ...
    def set_delay(self, seconds: float) -> None: ...


def _hupall_cause(word: str) -> str:
    """``switch_channel_str2cause`` as hupall reads it: a leading digit is a number (``atoi``; no such cause
    prints ``UNKNOWN``), an unknown name is NORMAL_CLEARING, and NONE (0) becomes MANAGER_REQUEST."""
    digits = len(word) - len(word.lstrip("0123456789"))
    cause = cause_name(word[:digits], default="UNKNOWN") if digits else cause_name(word)
    return "MANAGER_REQUEST" if cause == "NONE" else cause


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Api:
    def __init__(self, engine: CallEngine, controls: Controls) -> None:
        self.engine = engine
        self.controls = controls
        self._table: dict[str, Callable[[str], ApiResult]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")
        }

    def dispatch(self, cmd: str, args: str, command: str = "api") -> ApiResult:
        if cmd == "originate":
            return self.originate(args, command)
        handler = self._table.get(cmd)
        if handler is None:
            return f"-ERR {cmd} Command not found!\n"
        return handler(args) or "-ERR no reply\n"

    def _channel(self, uid: str) -> Channel | None:
        return self.engine.channels.get(uid.strip())

    # ---------------------------------------------------------------------------------------- calls

    def originate(self, args: str, command: str) -> ApiResult:
        try:
            req = parse_originate(args, command)
        except UsageError as exc:
            return str(exc)
        self.controls.record_originate(req)
        return self.engine.originate(req)

    def cmd_uuid_kill(self, args: str) -> str:
        parts = args.split()
        if not parts:
            return "-USAGE: <uuid> [cause]\n"
        cause = cause_name(parts[1]) if len(parts) > 1 else "NORMAL_CLEARING"
        return "+OK\n" if self.engine.hangup(parts[0], cause) else "-ERR No such channel!\n"

    def cmd_uuid_bridge(self, args: str) -> str:
        parts = args.split()
        if len(parts) < 2:
            return "-USAGE: <uuid> <other_uuid>\n"
        return self.engine.uuid_bridge(parts[0], parts[1])

    def _dtmf(self, args: str, verb: str) -> tuple[Channel | None, str, str]:
        parts = args.split()
        if len(parts) < 2:
            return None, "", "-USAGE: <uuid> <dtmf_data>\n"
        ch = self._channel(parts[0])
        if ch is None:
            return None, "", "-ERR Cannot locate session!\n"
        return ch, parts[1], f"+OK {ch.uuid} {verb} DTMF {parts[1]}.\n"

    def cmd_uuid_recv_dtmf(self, args: str) -> str:
        ch, digits, reply = self._dtmf(args, "received")
        if ch is not None:
            self.engine.recv_dtmf(ch, digits)
        return reply

    def cmd_uuid_send_dtmf(self, args: str) -> str:
        ch, digits, reply = self._dtmf(args, "sent")
        if ch is not None:  # goes out to the endpoint (no event, and eavesdrop never sees it): noted for tests
            ch.dtmf_sent += digits
        return reply

    def cmd_uuid_record(self, args: str) -> str:
        """``uuid_record <uuid> [start|stop|mask|unmask|pause|resume] <path> [<limit>] [<recording_vars>]``
        (mod_commands.c session_record_function); start and stop are modelled, the others answer as if no such
        recording ran."""
        argv = args.split(" ")
        if len(argv) < 3 or not all(argv[:3]):
            return "-USAGE: <uuid> [start|stop|mask|unmask|pause|resume] <path> [<limit>] [<recording_vars>]\n"
        uid, action, path = argv[0], argv[1].lower(), argv[2]
        ch = self._channel(uid)
        if ch is None:
            return "-ERR Cannot locate session!\n"
        if action == "start":
            return self.engine.record(ch, path)
        if action == "stop":
            return self.engine.stop_record(ch, path)
        if action in ("pause", "resume", "mask", "unmask"):
            return f"-ERR Cannot {action} recording session!\n"
        return "-USAGE: <uuid> [start|stop|mask|unmask|pause|resume] <path> [<limit>] [<recording_vars>]\n"

    def cmd_uuid_broadcast(self, args: str) -> str:
        """``uuid_broadcast <uuid> <path> [aleg|bleg|holdb|both]`` (mod_commands.c → switch_ivr_broadcast): the
        legs by substring, as FreeSWITCH reads them; no legs: aleg (and holdb, not modelled)."""
        argv = args.split(" ")
        if len(argv) < 2 or not argv[0] or not argv[1]:
            return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
        ch = self._channel(argv[0])
        if ch is None:
            return "-ERR invalid uuid\n"
        legs = argv[2].lower() if len(argv) > 2 else "aleg"
        other = self._channel(ch.other_uuid or "")
        if ("bleg" in legs or "both" in legs) and other is not None:
            self.engine.broadcast(other, argv[1])
        if "aleg" in legs or "both" in legs:
            self.engine.broadcast(ch, argv[1])
        return "+OK Message sent\n"

    def cmd_uuid_break(self, args: str) -> str:
        """``uuid_break <uuid> [all|both]`` (mod_commands.c break_function): ``+OK`` whether or not anything played."""
        if not args.strip():
            return "-USAGE: <uuid> [all]\n"
        uid, _, flag = args.strip().partition(" ")
        ch = self._channel(uid)
        if ch is None:
            return "-ERR No such channel!\n"
        self.engine.break_playback(ch)
        other = self._channel(ch.other_uuid or "") if "both" in flag else None
        if other is not None:
            self.engine.break_playback(other)
        return "+OK\n"

    def cmd_uuid_hold(self, args: str) -> str:
        """``uuid_hold [off|toggle] <uuid> [<display>]`` (mod_commands.c → switch_ivr_hold/unhold_uuid): ``+OK
        Success`` (also for a uuid that does not exist: the status starts as success), ``-ERR Operation failed``
        when the channel is already in the state asked for; CHANNEL_HOLD / CHANNEL_UNHOLD on a change."""
        argv = args.split()
        if not argv:
            return "-USAGE: [off|toggle] <uuid> [<display>]\n"
        verb = argv[0].lower()
        if verb in ("off", "toggle"):
            uid = argv[1] if len(argv) > 1 else ""
        else:
            uid, verb = argv[0], "on"
        ch = self._channel(uid)
        if ch is None:
            return "+OK Success\n"
        hold = not ch.held if verb == "toggle" else verb == "on"
        if hold == ch.held:
            return "-ERR Operation failed\n"
        ch.held = hold
        # the call state follows (switch_channel.c, CF_LEG_HOLDING): HELD, or UNHELD then ACTIVE at once (the
        # simulator sends no CHANNEL_CALLSTATE events; each state shows in the events and dumps that follow)
        ch.callstate = "HELD" if hold else "UNHELD"
        self.engine.emit("CHANNEL_HOLD" if hold else "CHANNEL_UNHOLD", ch)
        if not hold:
            ch.callstate = "ACTIVE"
        return "+OK Success\n"

    def cmd_uuid_exists(self, args: str) -> str:
        return "true" if self._channel(args) is not None else "false"

    def cmd_uuid_getvar(self, args: str) -> str:
        parts = args.split()
        if len(parts) < 2:
            return "-USAGE: <uuid> <var>\n"
        ch = self._channel(parts[0])
        if ch is None:
            return "-ERR No such channel!\n"
        return ch.variables.get(parts[1]) or "_undef_"

    def cmd_uuid_setvar(self, args: str) -> str:
        parts = args.split(" ", 2)
        if len(parts) < 2 or not parts[0]:
            return "-USAGE: <uuid> <var> [value]\n"
        ch = self._channel(parts[0])
        if ch is None:
            return "-ERR No such channel!\n"
        if not parts[1]:
            return "-ERR No variable specified\n"
        if len(parts) > 2 and parts[2] not in ("", "undef"):
            ch.variables[parts[1]] = parts[2]
        else:
            ch.variables.pop(parts[1], None)
        return "+OK\n"

    def cmd_uuid_dump(self, args: str) -> str:
        parts = args.split()
        ch = self._channel(parts[0]) if parts else None
        if ch is None:
            return "-ERR No such channel!\n" if parts else "-USAGE: <uuid> [format]\n"
        from redswitch.simulator.channels import channel_headers

        other = self.engine.channels.get(ch.other_uuid) if ch.other_uuid else None
        rows = [("Event-Name", "CHANNEL_DATA"), *channel_headers(ch, other)]
        if len(parts) > 1 and parts[1] == "json":
            return json.dumps(dict(rows), separators=(",", ":"))
        return "".join(f"{k}: {v}\n" for k, v in rows)

    def cmd_hupall(self, args: str) -> str:
        """``hupall [<cause> [<var> <value>]...]`` (``hupall_api_function``): every channel, or those matching
        every pair; a trailing unpaired word is ignored, so ``hupall CAUSE VAR`` hangs up everything."""
        argv = args.split(None, 10)  # switch_separate_string into argv[11]: the last keeps the rest
        cause = _hupall_cause(argv[0]) if argv else "MANAGER_REQUEST"
        pairs = tuple((argv[i], argv[i + 1]) for i in range(1, len(argv) - 1, 2))
        self.engine.hupall(cause, pairs)
        if not pairs:
            return f"+OK hangup all channels with cause {cause}\n"
        more = "..." if len(pairs) > 1 else ""
        return f"+OK hangup all channels matching [{argv[1]}]=[{argv[2]}]{more} with cause: {cause}\n"

    # ---------------------------------------------------------------------------------------- info

    def _row(self, ch: Channel, as_of: float | None = None) -> dict[str, str]:
        """``show channels``'s row of ``ch``, as the core database held it at ``as_of`` (None: now)."""
        row = dict.fromkeys(CHANNEL_COLUMNS, "")
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ch.created))
        row.update(uuid=ch.uuid, direction=ch.direction, created=created, created_epoch=str(int(ch.created)))
        row.update(name=ch.name, state=ch.state, cid_name=ch.cid_name or "", cid_num=ch.cid_num, dest=ch.number)
        callstate = ch.callstate
        if as_of is not None and ch.times.get("answered", 0.0) > as_of:  # answered since: listed as it was then
            media = ch.times.get("progress_media")
            callstate = "EARLY" if media is not None and media <= as_of else "RINGING"
        row.update(application=ch.app, application_data=ch.app_arg, context=ch.context, callstate=callstate)
        row.update(dialplan=ch.dialplan or "", initial_dialplan=ch.dialplan or "")
        row.update(hostname=self.controls.hostname, call_uuid=ch.variables.get("call_uuid", ch.uuid))
        row.update(initial_dest=ch.number, initial_context=ch.context, callee_num=ch.number)
        if ch.answered:
            for side in ("read", "write"):
                row.update({f"{side}_codec": "PCMU", f"{side}_rate": "8000", f"{side}_bit_rate": "64000"})
        return row

    def cmd_show(self, args: str) -> str:
        words = args.split()
        what = words[0] if words else ""
        if what not in ("channels", "calls"):
            return _SHOW_USAGE
        chans = list(self.engine.channels.values())
        lag = self.engine.scenario.channels_lag
        as_of = time.time() - lag if lag > 0 else None
        if as_of is not None:  # the core database has not caught up with the youngest channels yet
            chans = [c for c in chans if c.created <= as_of]
        if what == "calls":
            chans = [c for c in chans if not (c.bridged and c.other_type == "originator")]
        if "count" in words:
            return f"\n{len(chans)} total.\n"
        rows = [self._row(c, as_of) for c in chans]
        if words[-2:] == ["as", "json"]:
            if not rows:
                return '{"row_count": 0}\n'
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
        if not rows:
            return "\n0 total.\n"
        lines = [",".join(CHANNEL_COLUMNS), *(",".join(r.values()) for r in rows)]
        return "\n".join(lines) + f"\n\n{len(rows)} total.\n"

    def cmd_status(self, args: str) -> str:
        up = time.time() - self.controls.started
        us = int(up * 1_000_000)
        secs, micro = divmod(us, 1_000_000)
        mins, sec = divmod(secs, 60)
        hours, minute = divmod(mins, 60)
        days, hour = divmod(hours, 24)
        years, day = divmod(days, 365)
        milli, micro = divmod(micro, 1000)
        parts = [_plural(years, "year"), _plural(day, "day"), _plural(hour, "hour"), _plural(minute, "minute")]
        parts += [_plural(sec, "second"), _plural(milli, "millisecond"), _plural(micro, "microsecond")]
        eng = self.engine
        sps = eng.scenario.sessions_per_second or 30
        max_sessions = eng.scenario.max_sessions or 1000
        return (
            f"UP {', '.join(parts)}\n"
            f"FreeSWITCH (Version {VERSION}  64bit) is ready\n"
            f"{eng.sessions_since_startup} session(s) since startup\n"
            f"{len(eng.channels)} session(s) - peak {eng.peak}, last 5min {eng.peak} \n"
            f"0 session(s) per Sec out of max {sps}, peak 0, last 5min 0 \n"
            f"{max_sessions} session(s) max\n"
            "min idle cpu 0.00/99.60\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def cmd_sofia(self, args: str) -> str:
        """``sofia`` (mod_sofia's ``sofia_function``): usage, ``status`` and its gateway views; others not modelled."""
        argv = args.split()
        if not argv or argv[0].lower() == "help":
            return sofia.USAGE
        if argv[0].lower() == "status":
            return self._sofia_status(argv[1:])
        if argv[0].lower() in _SOFIA_UNMODELLED:
            return f"-ERR sofia {argv[0]} is not modelled by the simulator\n"
        return f"Unknown Command [{argv[0]}]\n"

    def _sofia_status(self, argv: list[str]) -> str:
        """``cmd_status``: no argument lists the profiles, a single word (any) summarises the gateways."""
        view = self._sofia_view()
        if not argv:
            return sofia.status_table(view)
        if len(argv) == 1:
            return sofia.gateway_summary(view)
        if argv[0].lower() == "gateway":
            return sofia.gateway_detail(view, argv[1])
        if argv[0].lower() == "profile":
            if argv[1] != view.profile:
                return "Invalid Profile!\n"
            return "-ERR sofia status profile is not modelled by the simulator\n"
        return "Invalid Syntax!\n"

    def _sofia_view(self) -> sofia.SofiaView:
        scenario = self.engine.scenario
        on_profile = [
            c for c in self.engine.channels.values() if c.variables.get("sofia_profile_name") == scenario.profile
        ]
        uptime = int(time.time() - self.controls.started)
        return sofia.SofiaView(scenario.profile, scenario.gateways, self.engine.bus.info.ipv4, len(on_profile), uptime)

    def cmd_version(self, args: str) -> str:
        return f"FreeSWITCH Version {VERSION}~64bit ( 64bit)\n"

    def cmd_reloadxml(self, args: str) -> str:
        return "+OK [Success]\n"

    def cmd_global_getvar(self, args: str) -> str:
        known = {"hostname": self.controls.hostname, "switchname": self.controls.hostname}
        name = args.strip()
        if not name:
            return "".join(f"{k}={v}\n" for k, v in known.items())
        return known.get(name, "")

    # ---------------------------------------------------------------------------------------- simulator-only

    def cmd_sim_eavesdrop_mode(self, args: str) -> str:
        ch = self._channel(args)
        if ch is None or ch.eavesdrop_mode is None:
            return "-ERR not eavesdropping\n"
        return ch.eavesdrop_mode

    def cmd_sim_commands(self, args: str) -> str:
        return json.dumps(self.controls.commands())

    def cmd_sim_originates(self, args: str) -> str:
        return json.dumps(self.controls.originates_json())

    def cmd_sim_drop(self, args: str) -> str:
        self.controls.drop_soon()
        return "+OK\n"

    def cmd_sim_refuse(self, args: str) -> str:
        on = args.strip().lower() in ("on", "true", "1", "yes")
        self.controls.set_refuse(on)
        return f"+OK refuse {'on' if on else 'off'}\n"

    def cmd_sim_delay(self, args: str) -> str:
        try:
            seconds = float(args.strip() or "0")
        except ValueError:
            return "-USAGE: sim_delay <seconds>\n"
        self.controls.set_delay(seconds)
        return f"+OK delay {seconds:g}\n"

    def cmd_sim_flood(self, args: str) -> ApiResult:
        """``sim_flood <count> [<dial_id>]``: answers ``+OK <count>`` once every event has been handed out."""
        parts = args.split()
        if not parts or not parts[0].isdigit():
            return "-USAGE: sim_flood <count> [<dial_id>]\n"
        spec = FloodSpec(int(parts[0]), parts[1] if len(parts) > 1 else None)
        return self._flooded(spec)

    async def _flooded(self, spec: FloodSpec) -> tuple[str, After]:
        return f"+OK {await flood(self.engine, spec)}\n", None

    def cmd_sim_hangup(self, args: str) -> str:
        parts = args.split()
        if not parts:
            return "-USAGE: sim_hangup <uuid> [cause]\n"
        cause = cause_name(parts[1]) if len(parts) > 1 else "NORMAL_CLEARING"
        return "+OK\n" if self.engine.hangup(parts[0], cause) else "-ERR No such channel!\n"
