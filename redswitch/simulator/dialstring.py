"""Parsing of ``originate`` arguments and dial strings, following ``originate_function`` and ``switch_ivr_originate``.

Supported: ``{k=v,...}`` variables for all legs, ``[k=v]`` per leg, ``\\,`` escaped commas inside values,
single-quote grouping of arguments, ``undef`` for an empty positional argument, and the endpoints
``sofia/gateway/<gw>/<number>``, ``sofia/<profile>/<user@host>``, ``loopback/<number>[/<context>]``,
``user/<number>[@domain]`` and ``error/<cause>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["USAGE", "Endpoint", "Leg", "OriginateRequest", "UsageError", "parse_dial_string", "parse_originate"]

USAGE = (
    "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] "
    "[<cid_num>] [<timeout_sec>]\n"
)


class UsageError(ValueError):
    """Wrong number of originate arguments: FreeSWITCH answers with its usage text."""


@dataclass(frozen=True)
class Endpoint:
    """``kind`` is the endpoint module (``sofia``, ``loopback``, ``user``, ``error`` or unknown)."""

    url: str
    kind: str
    number: str
    gateway: str | None = None
    profile: str | None = None
    context: str = "default"


@dataclass(frozen=True)
class Leg:
    variables: dict[str, str]
    endpoint: Endpoint


@dataclass(frozen=True)
class OriginateRequest:
    """One parsed ``originate`` (api or bgapi). ``variables`` are the ``{}`` ones; each leg has its ``[]`` ones."""

    dial_string: str
    variables: dict[str, str]
    legs: tuple[Leg, ...]
    app: str | None = None
    app_arg: str = ""
    exten: str | None = None
    dialplan: str = "XML"
    context: str = "default"
    cid_name: str | None = None
    cid_num: str | None = None
    timeout: float | None = None
    command: str = ""
    raw: str = field(default="", compare=False)

    @property
    def endpoint(self) -> str:
        return self.legs[0].endpoint.url if self.legs else ""

    @property
    def leg_variables(self) -> dict[str, str]:
        """Variables the first leg gets: ``{}`` ones overridden by its ``[]`` ones."""
        return {**self.variables, **(self.legs[0].variables if self.legs else {})}

    def as_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "args": self.raw,
            "dial_string": self.dial_string,
            "variables": self.variables,
            "legs": [{"variables": leg.variables, "endpoint": leg.endpoint.url} for leg in self.legs],
            "endpoint": self.endpoint,
            "app": self.app,
            "app_arg": self.app_arg,
            "exten": self.exten,
            "timeout": self.timeout,
        }


def split_args(text: str) -> list[str]:
    """Split on spaces; single quotes group (and are removed); ``undef`` means an empty argument."""
    if "'" not in text:  # the common case, without the character loop (runs of spaces separate once)
        return ["" if a == "undef" else a for a in text.split(" ") if a]
    return split_args_by_rule(text)


def split_args_by_rule(text: str) -> list[str]:
    """:func:`split_args` one character at a time (the rule itself; also what the fast path is tested against)."""
    args: list[str] = []
    cur: list[str] = []
    quoted = False
    started = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
            started = True
        elif ch == " " and not quoted:
            if started:
                args.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        args.append("".join(cur))
    return ["" if a == "undef" else a for a in args]


_NESTING_OR_ESCAPE = frozenset("{[(<}])>\\")


def _split_top(text: str, seps: str) -> list[str]:
    """Split on any of ``seps`` outside brackets/parentheses and not escaped by a backslash."""
    if _NESTING_OR_ESCAPE.isdisjoint(text):  # nothing nests and nothing is escaped: a plain split
        return re.split("[" + re.escape(seps) + "]", text)
    return split_top_by_rule(text, seps)


def split_top_by_rule(text: str, seps: str) -> list[str]:
    """:func:`_split_top` one character at a time."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    prev = ""
    for ch in text:
        if ch in "{[(<":
            depth += 1
        elif ch in "}])>":
            depth -= 1
        if ch in seps and depth == 0 and prev != "\\":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        prev = ch
    parts.append("".join(cur))
    return parts


def parse_vars(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` with ``\\,`` for a literal comma; surrounding single quotes of a value are removed."""
    out: dict[str, str] = {}
    for item in _split_top(text, ","):
        if "=" not in item:
            continue
        key, _, value = item.partition("=")
        value = value.replace("\\,", ",")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _take_block(text: str, open_ch: str, close_ch: str) -> tuple[str | None, str]:
    if not text.startswith(open_ch):
        return None, text
    close = text.find(close_ch, 1)
    if close > 0 and open_ch not in text[1:close]:  # no nested block: the first close ends it
        return text[1:close], text[close + 1 :]
    return take_block_by_rule(text, open_ch, close_ch)


def take_block_by_rule(text: str, open_ch: str, close_ch: str) -> tuple[str | None, str]:
    """:func:`_take_block` one character at a time."""
    if not text.startswith(open_ch):
        return None, text
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == open_ch
        depth -= ch == close_ch
        if depth == 0:
            return text[1:i], text[i + 1 :]
    return text[1:], ""


def parse_endpoint(url: str) -> Endpoint:
    parts = url.split("/")
    kind = parts[0]
    if kind == "sofia" and len(parts) >= 4 and parts[1] == "gateway":
        return Endpoint(url, kind, parts[3].split("@")[0], gateway=parts[2])
    if kind == "sofia" and len(parts) >= 3:
        return Endpoint(url, kind, parts[2].split("@")[0], profile=parts[1])
    if kind == "loopback" and len(parts) >= 2:
        return Endpoint(url, kind, parts[1], context=parts[2] if len(parts) > 2 else "default")
    if kind in ("user", "error") and len(parts) >= 2:
        return Endpoint(url, kind, parts[1].split("@")[0])
    return Endpoint(url, kind, parts[-1])


def parse_dial_string(dial: str) -> tuple[dict[str, str], tuple[Leg, ...]]:
    """Global ``{}`` variables and the legs (``,`` simultaneous / ``|`` failover; the simulator dials the first)."""
    global_text, rest = _take_block(dial.strip(), "{", "}")
    _, rest = _take_block(rest, "<", ">")
    legs = []
    for leg_text in _split_top(rest, ",|"):
        leg_text = leg_text.strip()
        if not leg_text:
            continue
        leg_vars, url = _take_block(leg_text, "[", "]")
        legs.append(Leg(parse_vars(leg_vars or ""), parse_endpoint(url)))
    return parse_vars(global_text or ""), tuple(legs)


def parse_app(text: str) -> tuple[str, str]:
    """``&name(args)`` -> (name, args)."""
    body = text[1:]
    name, paren, rest = body.partition("(")
    arg = rest[: rest.rfind(")")] if paren and ")" in rest else rest
    return name.strip(), arg


def parse_originate(args_text: str, command: str = "api") -> OriginateRequest:
    args = split_args(args_text)
    if not 2 <= len(args) <= 7:
        raise UsageError(USAGE)
    variables, legs = parse_dial_string(args[0])
    app, app_arg, exten = None, "", None
    if args[1].startswith("&"):
        app, app_arg = parse_app(args[1])
    else:
        exten = args[1]
    extra = args[2:] + [""] * (7 - len(args))
    timeout = float(extra[4]) if extra[4].strip().isdigit() else None
    return OriginateRequest(
        dial_string=args[0],
        variables=variables,
        legs=legs,
        app=app,
        app_arg=app_arg,
        exten=exten,
        dialplan=extra[0] or "XML",
        context=extra[1] or "default",
        cid_name=extra[2] or None,
        cid_num=extra[3] or None,
        timeout=timeout,
        command=command,
        raw=args_text,
    )
