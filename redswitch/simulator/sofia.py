"""``sofia status`` tables, laid out as mod_sofia's ``cmd_status`` prints them (widths, tabs, separators, footers).

A scenario names its gateways and nothing more, so each is drawn as mod_sofia configures a gateway that gives only
``register=false``: realm and proxy default to the gateway's name, username to ``FreeSWITCH``, no password, state
``NOREG``, status ``UP`` since the switch started. Call counters stay 0 (the simulator does not count per gateway).
A scenario without gateways accepts every gateway name: the tables list none, and any name has its detail.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["USAGE", "SofiaView", "find_gateway", "gateway_detail", "gateway_summary", "status_table"]

LINE = "=" * 97
USAGE = (
    "USAGE:\n"
    "--------------------------------------------------------------------------------\n"
    "sofia global siptrace <on|off>\n"
    "sofia        capture  <on|off>\n"
    "             watchdog <on|off>\n\n"
    "sofia profile <name> [start | stop | restart | rescan] [wait]\n"
    "                     flush_inbound_reg [<call_id> | <[user]@domain>] [reboot]\n"
    "                     check_sync [<call_id> | <[user]@domain>]\n"
    "                     [register | unregister] [<gateway name> | all]\n"
    "                     killgw <gateway name>\n"
    "                     [stun-auto-disable | stun-enabled] [true | false]]\n"
    "                     siptrace <on|off>\n"
    "                     capture  <on|off>\n"
    "                     watchdog <on|off>\n\n"
    "sofia <status|xmlstatus> profile <name> [reg [<contact str>]] | [pres <pres str>] | [user <user@domain>]\n"
    "sofia <status|xmlstatus> gateway <name>\n\n"
    "sofia loglevel <all|default|tport|iptsec|nea|nta|nth_client|nth_server|nua|soa|sresolv|stun> [0-9]\n"
    "sofia tracelevel <console|alert|crit|err|warning|notice|info|debug>\n\n"
    "sofia help\n"
    "--------------------------------------------------------------------------------\n"
)
SIP_PORT = 5060
USERNAME = "FreeSWITCH"  # mod_sofia's username for a gateway that does not register and names none


@dataclass(frozen=True)
class SofiaView:
    """What the tables show: the one profile, its gateways, the SIP address, channels in use, seconds up."""

    profile: str
    gateways: tuple[str, ...]
    sip_ip: str
    inuse: int
    uptime: int

    @property
    def url(self) -> str:
        return f"sip:mod_sofia@{self.sip_ip}:{SIP_PORT}"


def register_to(gateway: str) -> str:
    return f"sip:{USERNAME}@{gateway}"


def status_table(view: SofiaView) -> str:
    """``sofia status``: the profile, each of its gateways, then ``N profile(s) M alias(es)``."""
    rows = [_row("Name", "   Type", "Data", "State"), LINE]
    rows.append(_row(view.profile, "profile", view.url, f"RUNNING ({view.inuse})"))
    rows += [_row(f"{view.profile}::{gw}", "gateway", register_to(gw), "NOREG") for gw in view.gateways]
    rows += [LINE, "1 profile 0 aliases"]
    return "\n".join(rows) + "\n"


def _row(name: str, kind: str, data: str, state: str) -> str:
    return f"{name:>25}\t{kind}\t  {data:>40}\t{state}"


def gateway_summary(view: SofiaView) -> str:
    """``sofia status gateway`` (any single word after ``status``): one line per gateway and the call totals."""
    head = f"{'Profile::Gateway-Name':>25}\t{'    Data    ':>32}\tState\t{'Ping Time':>9}\tIB Calls(F/T)\tOB Calls(F/T)"
    rows = [head, LINE]
    rows += [
        f"{view.profile + '::' + gw:>25}\t{register_to(gw):>32}\tNOREG\t{0.0:6.2f}\t0/0\t0/0" for gw in view.gateways
    ]
    count = len(view.gateways)
    rows += [LINE, f"{count} gateway{'' if count == 1 else 's'}: Inbound(Failed/Total): 0/0,Outbound(Failed/Total):0/0"]
    return "\n".join(rows) + "\n"


def find_gateway(view: SofiaView, key: str) -> str | None:
    """``sofia_reg_find_gateway``: by name or ``<profile>::<name>`` (case matters). With no gateways listed every
    name exists, as for originate."""
    prefix = f"{view.profile}::"
    name = key[len(prefix) :] if key.startswith(prefix) else key
    return name if name and (not view.gateways or name in view.gateways) else None


def gateway_detail(view: SofiaView, key: str) -> str:
    """``sofia status gateway <name>``; an unknown name is ``Invalid Gateway!``."""
    name = find_gateway(view, key)
    if name is None:
        return "Invalid Gateway!\n"
    contact = f"<sip:gw+{name}@{view.sip_ip}:{SIP_PORT};transport=udp;gw={name}>"
    fields = [
        ("Name    ", name),
        ("Profile ", view.profile),
        ("Scheme  ", "Digest"),
        ("Realm   ", name),
        ("Username", USERNAME),
        ("Password", "no"),
        ("From    ", f"<sip:{USERNAME}@{name}>"),
        ("Contact ", contact),
        ("Exten   ", USERNAME),
        ("To      ", register_to(name)),
        ("Proxy   ", f"sip:{name}"),
        ("Context ", "default"),
        ("Expires ", "3600"),
        ("Freq    ", "3600"),
        ("Ping    ", "0"),
        ("PingFreq", "0"),
        ("PingTime", "0.00"),
        ("PingState", "0/0/0"),
        ("State   ", "NOREG"),
        ("Status  ", "UP"),
        ("Uptime  ", f"{view.uptime}s"),
        ("CallsIN ", "0"),
        ("CallsOUT", "0"),
        ("FailedCallsIN", "0"),
        ("FailedCallsOUT", "0"),
    ]
    return "\n".join([LINE, *(f"{k}\t{v}" for k, v in fields), LINE]) + "\n"
