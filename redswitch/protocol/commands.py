"""Pure builders of the ESL command lines Redswitch sends: the last gate before FreeSWITCH.

Every value is checked against the alphabet its position allows, and a value that cannot be made safe is
refused with :class:`~redswitch.errors.PayloadError` rather than passed on. Positions and their hazards:

* channel variables ``{k=v,...}``: ``,`` separates pairs (escaped as ``\\,``), ``}`` ends the block;
* endpoints: ``,`` and ``|`` separate legs, ``[``/``{`` open variable blocks;
* app arguments ``&app(arg)``: ``)`` ends the argument;
* anywhere: a space splits originate's arguments, ``'`` groups them, and a newline ends the ESL command
  (``\\n\\napi ...`` would run a second command).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from redswitch.errors import PayloadError

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_VAR_VALUE = re.compile(r"[A-Za-z0-9_\-.+@:/=,]{0,256}")
#: Every name and every value of a block at once, each followed by a newline (which neither alphabet admits):
#: one regex pass instead of two per variable; a block that fails is checked again variable by variable, to say
#: which one is unsafe. The pass counts only if the text holds no newline but the separators: a value such as
#: ``"b\nc\nd"`` would otherwise read as two safe variables and carry its newlines into the command line.
_VAR_BLOCK = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_\-]{0,63}\n[A-Za-z0-9_\-.+@:/=,]{0,256}\n)*")
_ENDPOINT = re.compile(r"[A-Za-z0-9_\-.+@:/=]{1,300}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DTMF = re.compile(r"[0-9*#A-D]{1,32}")
_CAUSE = re.compile(r"[A-Z_]{1,40}|[0-9]{1,3}")
_APP = re.compile(r"[a-z_]{1,32}")
_ESCAPED_COMMA = "\\,"


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise PayloadError(f"unsafe {what} for an ESL command: {value[:60]!r}")
    return value


def check_uuid(value: str) -> str:
    return _check(_UUID, value, "uuid")


def variables(values: Mapping[str, str]) -> str:
    """``{k=v,...}`` with commas in values escaped; empty string for no variables."""
    if not values:
        return ""
    block = "".join(f"{name}\n{value}\n" for name, value in values.items())
    if block.count("\n") != 2 * len(values) or not _VAR_BLOCK.fullmatch(block):
        for name, value in values.items():
            _check(_VAR_NAME, name, "channel variable name")
            _check(_VAR_VALUE, value, f"value of channel variable {name}")
        raise PayloadError("unsafe channel variables for an ESL command")  # unreachable: the two checks agree
    return "{" + ",".join(f"{name}={value.replace(',', _ESCAPED_COMMA)}" for name, value in values.items()) + "}"


def dial_string(endpoint: str, values: Mapping[str, str]) -> str:
    """One leg: its variables, then its endpoint (``{k=v}sofia/gateway/gw/123``)."""
    return variables(values) + _check(_ENDPOINT, endpoint, "endpoint")


def app(name: str, argument: str = "") -> str:
    """``&name(argument)``; the argument may not hold a space, a quote, a newline or a closing parenthesis."""
    _check(_APP, name, "application name")
    if re.search(r"[\s')]", argument) or "(" in argument:
        raise PayloadError(f"unsafe argument for application {name}: {argument[:60]!r}")
    return f"&{name}({argument})"


def originate(leg: str, application: str) -> str:
    """``originate <leg> <&app(...)>``; ``leg`` and ``application`` come from :func:`dial_string` and :func:`app`."""
    if re.search(r"\s|'", leg + application):
        raise PayloadError("originate arguments may not hold white space or quotes")
    return f"originate {leg} {application}"


def uuid_kill(uuid: str, cause: str = "NORMAL_CLEARING") -> str:
    return f"uuid_kill {check_uuid(uuid)} {_check(_CAUSE, cause, 'hangup cause')}"


def uuid_recv_dtmf(uuid: str, digits: str) -> str:
    return f"uuid_recv_dtmf {check_uuid(uuid)} {_check(_DTMF, digits, 'DTMF digits')}"


def uuid_send_dtmf(uuid: str, digits: str) -> str:
    """DTMF out to the endpoint of ``uuid``; only digits (no ``@duration``, no ``w``/``W`` pauses)."""
    return f"uuid_send_dtmf {check_uuid(uuid)} {_check(_DTMF, digits, 'DTMF digits')}"


def uuid_hold(uuid: str, hold: bool = True) -> str:
    """``uuid_hold <uuid>`` or ``uuid_hold off <uuid>`` (no display text: nothing from a message reaches it)."""
    return f"uuid_hold {check_uuid(uuid)}" if hold else f"uuid_hold off {check_uuid(uuid)}"


#: A file the server names under a configured directory: absolute, no ``..`` component, no white space.
_FILE_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_\-.]{1,64}){2,17}")


def check_file_path(path: str) -> str:
    return _check(_FILE_PATH, path, "file path")


def uuid_record(uuid: str, path: str, start: bool = True) -> str:
    """``uuid_record <uuid> start|stop <path>`` (no limit, no recording variables)."""
    return f"uuid_record {check_uuid(uuid)} {'start' if start else 'stop'} {check_file_path(path)}"


_LEGS = ("aleg", "both")


def uuid_broadcast(uuid: str, path: str, legs: str = "aleg") -> str:
    """``uuid_broadcast <uuid> <path> aleg|both``: play a file (``playback``) to the channel, or to it and its
    partner."""
    if legs not in _LEGS:
        raise PayloadError(f"unsafe legs for uuid_broadcast: {legs[:20]!r}")
    return f"uuid_broadcast {check_uuid(uuid)} {check_file_path(path)} {legs}"


def uuid_break(uuid: str, both: bool = False) -> str:
    """``uuid_break <uuid> [both]``: stop what plays on the channel (and on its partner)."""
    return f"uuid_break {check_uuid(uuid)} both" if both else f"uuid_break {check_uuid(uuid)}"


def uuid_bridge(uuid: str, other: str) -> str:
    """``uuid_bridge <uuid> <other>``: bridge two live channels (each leaves whatever bridge it was in)."""
    return f"uuid_bridge {check_uuid(uuid)} {check_uuid(other)}"


_SETVAR_VALUE = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def uuid_setvar(uuid: str, name: str, value: str = "") -> str:
    """``uuid_setvar <uuid> <name> [<value>]``; no value unsets the variable. Values: ids and uuids only."""
    command = f"uuid_setvar {check_uuid(uuid)} {_check(_VAR_NAME, name, 'channel variable name')}"
    return f"{command} {_check(_SETVAR_VALUE, value, 'channel variable value')}" if value else command


def uuid_exists(uuid: str) -> str:
    return f"uuid_exists {check_uuid(uuid)}"


def uuid_getvar(uuid: str, name: str) -> str:
    return f"uuid_getvar {check_uuid(uuid)} {_check(_VAR_NAME, name, 'channel variable name')}"


def bgapi(command: str, job_uuid: str) -> str:
    """A ``bgapi`` request choosing its own Job-UUID, so the result can be matched before it is even sent."""
    _single_line(command)
    return f"bgapi {command}\nJob-UUID: {check_uuid(job_uuid)}"


def api(command: str) -> str:
    _single_line(command)
    return f"api {command}"


def _single_line(command: str) -> None:
    if any(char in command for char in "\r\n\0"):
        raise PayloadError("an ESL command may not hold a line break")
