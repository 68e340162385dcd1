"""Settings: the one place that reads the environment.

Every process builds a :class:`Settings` at start with :meth:`Settings.from_env`; a bad value fails there with
a :class:`~redswitch.errors.ConfigError` that names the variable, instead of surfacing later as a confusing
runtime error in the middle of a call.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from redswitch.errors import ConfigError
from redswitch.messages import CONTROL_TYPES

T = TypeVar("T")

#: The original code wrote ``redswitch.<org_id>.<user_id>.<dial_id>`` although its README documents
#: ``redswitch.<dial_id>.<org_id>.<user_id>``; ``ACTIVE_KEY_ORDER`` chooses.
ACTIVE_KEY_ORDERS = ("dial_org_user", "org_user_dial")
#: ``newest_first``: LPUSH, as the original did (``LINDEX key 0`` is the latest entry); ``oldest_first``: RPUSH.
LIST_ORDERS = ("newest_first", "oldest_first")
#: ``call``: the history holds the call's events only, as the original's did; ``all``: also ack, error, queued.
HISTORY_EVENT_SETS = ("call", "all")
#: Which SIP headers the legs carry: the original's ``Accuvit-*`` set, the ``X-`` set, both, or none.
SIP_HEADER_SETS = ("original", "x", "both", "none")


@dataclasses.dataclass(frozen=True)
class EslNode:
    """One FreeSWITCH: its name (stored with each call it holds) and how to reach its event socket."""

    name: str
    host: str
    port: int
    password: str


_NODE = re.compile(r"(?:(?P<name>[A-Za-z0-9_.:\-]{1,64})=)?(?P<host>[A-Za-z0-9.\-\[\]:_]{1,253}):(?P<port>[0-9]{1,5})")


def _node(item: str, password: str) -> EslNode:
    match = _NODE.fullmatch(item.strip())
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"ESL_NODES entries must be [name=]host:port: {item.strip()!r}")
    host, port = match["host"], int(match["port"])
    return EslNode(match["name"] or f"{host}:{port}", host, port, password)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting Redswitch knows, with the original Redswitch's defaults where it had one."""

    esl_password: str = "ClueCon"
    esl_port: int = 8021
    esl_url: str = "127.0.0.1"
    esl_timeout: float = 5.0
    esl_nodes: str = ""
    node_retry_after: float = 10.0
    node_lost_after: float = 30.0
    pubsub_redis_timeout: float = 10.0
    pubsub_redis_url: str = "redis://127.0.0.1:6379"
    broker_url: str = ""
    jobs_key: str = "talkiq-asp.calls"
    dead_key: str = ""
    endpoint_template: str = "sofia/gateway/{call_provider}/{number}"
    sip_endpoint_template: str = "sofia/external/{address}"
    originate_timeout: int = 60
    redial_guard: float = 15.0
    sip_headers: str = "original"
    active_key_order: str = "dial_org_user"
    list_order: str = "newest_first"
    history_events: str = "call"
    dedup_ttl: int = 86400
    bridge_heartbeat: float = 2.0
    bridge_dead_after: float = 10.0
    broker_heartbeat_timeout: int = 60_000
    broker_maintenance_chance: int = 1000
    log_format: str = "text"
    log_level: str = "INFO"
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    reconcile_interval: float = 30.0
    reconcile_grace: float = 10.0
    dead_max: int = 10_000
    scheduler_lease: float = 15.0
    listener_lease: float = 5.0
    switch_cps: int = 30
    gateway_cps: str = ""
    org_max_calls: str = ""
    throttle_retries: int = 8
    event_streams: bool = True
    event_stream_ttl: int = 4 * 3600
    event_stream_maxlen: int = 1000
    firehose_maxlen: int = 1_000_000
    control_secret: str = ""
    control_sig_window: int = 60
    control_signed_verbs: str = ""
    recordings_dir: str = ""
    sounds_dir: str = ""
    dashboard_token: str = ""

    def signed_verbs(self) -> frozenset[str]:
        """The control verbs that need a signature when ``CONTROL_SECRET`` is set (all of them when unlisted)."""
        if not self.control_secret:
            return frozenset()
        listed = [v.strip() for v in self.control_signed_verbs.split(",") if v.strip()]
        return frozenset(listed or CONTROL_TYPES)

    def nodes(self) -> list[EslNode]:
        """Every FreeSWITCH node: ``ESL_NODES`` (``[name=]host:port,...``), else the one ESL_URL/ESL_PORT node."""
        if not self.esl_nodes:
            return [EslNode(f"{self.esl_url}:{self.esl_port}", self.esl_url, self.esl_port, self.esl_password)]
        return [_node(item, self.esl_password) for item in self.esl_nodes.split(",")]

    def node(self, name: str) -> EslNode:
        """The node called ``name``; an unknown name (a record from an older configuration) is an error."""
        for node in self.nodes():
            if node.name == name:
                return node
        raise ConfigError(f"ESL_NODES has no node named {name!r}")

    def gateway_cps_limits(self) -> dict[str, int]:
        """``GATEWAY_CPS`` as {gateway: sessions per second}; the key ``*`` is the default for other gateways."""
        return limit_map(self.gateway_cps)

    def org_max_calls_limits(self) -> dict[str, int]:
        """``ORG_MAX_CALLS`` as {org_id: concurrent calls}; the key ``*`` is the default for other orgs."""
        return limit_map(self.org_max_calls)

    @property
    def effective_broker_url(self) -> str:
        """The Dramatiq broker's URL: ``BROKER_URL`` or, when unset, the pub/sub Redis."""
        return self.broker_url or self.pubsub_redis_url

    @property
    def effective_dead_key(self) -> str:
        return self.dead_key or f"{self.jobs_key}.dead"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise ConfigError naming a bad variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            if name in env:
                values[field.name] = _PARSERS[field.name](name, env[name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the cross-field rules that single-value parsers cannot."""
        if self.active_key_order not in ACTIVE_KEY_ORDERS:
            raise ConfigError(
                f"ACTIVE_KEY_ORDER must be one of {', '.join(ACTIVE_KEY_ORDERS)}: {self.active_key_order!r}"
            )
        _check_template("ENDPOINT_TEMPLATE", self.endpoint_template, {"call_provider", "number"}, required={"number"})
        _check_template("SIP_ENDPOINT_TEMPLATE", self.sip_endpoint_template, {"address"}, required={"address"})
        names = [node.name for node in self.nodes()]
        if len(set(names)) != len(names):
            raise ConfigError(f"ESL_NODES names must be unique: {', '.join(names)}")
        _check_choice("LIST_ORDER", self.list_order, LIST_ORDERS)
        _check_choice("HISTORY_EVENTS", self.history_events, HISTORY_EVENT_SETS)
        _check_choice("SIP_HEADERS", self.sip_headers, SIP_HEADER_SETS)
        for verb in (v.strip() for v in self.control_signed_verbs.split(",") if v.strip()):
            if verb not in CONTROL_TYPES:
                raise ConfigError(f"CONTROL_SIGNED_VERBS lists {verb!r}: not one of {', '.join(CONTROL_TYPES)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be 'text' or 'json': {self.log_format!r}")

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for starting child processes with the same configuration."""
        out: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out


def setting_names() -> set[str]:
    """Every environment variable :meth:`Settings.from_env` reads."""
    return {field.name.upper() for field in dataclasses.fields(Settings)}


def limit_map(raw: str) -> dict[str, int]:
    """Parse ``name=N,...`` (a bare ``N`` or ``*=N`` is the default for every other name)."""
    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, value = item.rpartition("=")
        limits[name.strip() or "*"] = int(value)
    return limits


def _limits(name: str, raw: str) -> str:
    """Validate a ``name=N,...`` list of positive limits now, so a typo fails at start and not mid-burst."""
    for item in filter(None, (part.strip() for part in raw.split(","))):
        match = re.fullmatch(r"(?:([A-Za-z0-9_.:\-*]{1,128})\s*=\s*)?([0-9]{1,6})", item)
        if match is None or int(match[2]) < 1:
            raise ConfigError(f"{name} must be name=N,... with N >= 1 (a bare N or *=N is the default): {item!r}")
    return ",".join(part.strip() for part in raw.split(",") if part.strip())


_KIND_NAMES: dict[object, str] = {int: "a whole number", float: "a number"}


def _number(kind: Callable[[str], T], low: float, high: float) -> Callable[[str, str], T]:
    def parse(name: str, raw: str) -> T:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be {_KIND_NAMES.get(kind, 'a number')}: {raw!r}") from None
        if not low <= value <= high:  # type: ignore[operator]
            raise ConfigError(f"{name} must be between {low:g} and {high:g}: {raw!r}")
        return value

    return parse


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{name} must not be empty")
    return raw.strip()


def _optional_text(name: str, raw: str) -> str:
    return raw.strip()


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false: {raw!r}")


def _redis_url(name: str, raw: str) -> str:
    url = raw.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix") or (parsed.scheme != "unix" and not parsed.hostname):
        raise ConfigError(f"{name} must be a redis://host:port URL: {raw!r}")
    try:
        parsed.port  # noqa: B018 - urlparse validates the port lazily
    except ValueError:
        raise ConfigError(f"{name} has a bad port: {raw!r}") from None
    return url


def _broker_url(name: str, raw: str) -> str:
    if not raw.strip():
        return ""
    if raw.strip().startswith(("amqp://", "amqps://", "stub://")):
        return raw.strip()
    return _redis_url(name, raw)


def _host(name: str, raw: str) -> str:
    host = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]_]{1,253}", host):
        raise ConfigError(f"{name} must be a host name or address: {raw!r}")
    return host


def _key(name: str, raw: str) -> str:
    key = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9._:\-{}]{1,200}", key):
        raise ConfigError(f"{name} must be a Redis key of letters, digits and . _ : - {{ }}: {raw!r}")
    return key


#: A directory on the FreeSWITCH host: absolute, letters, digits and ``_ - .`` per component, no ``..`` (it
#: reaches ESL command lines).
DIRECTORY_PATTERN = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_\-.]{1,64}){1,16}")


def _directory(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not DIRECTORY_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name} must be an absolute directory of letters, digits, _ - . (no '..', no spaces): {raw[:80]!r}"
        )
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}: {value!r}")


def _sip_headers(name: str, raw: str) -> str:
    """A header set; the old boolean still works: ``true`` is the default set, ``false`` none."""
    lowered = raw.strip().lower()
    if lowered in SIP_HEADER_SETS:
        return lowered
    try:
        return "original" if _boolean(name, raw) else "none"
    except ConfigError:
        raise ConfigError(f"{name} must be one of {', '.join(SIP_HEADER_SETS)} (or true/false): {raw!r}") from None


def _check_template(name: str, template: str, allowed: set[str], required: set[str]) -> None:
    fields = set(re.findall(r"{(\w*)}", template))
    if fields - allowed or not required <= fields:
        raise ConfigError(f"{name} may use {sorted(allowed)} and must use {sorted(required)}: {template!r}")
    if re.search(r"[\s,{}\[\]&'()]", re.sub(r"{\w+}", "", template)):
        raise ConfigError(f"{name} must not hold spaces or any of , {{ }} [ ] & ' ( ): {template!r}")


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "esl_password": _text,
    "esl_port": _number(int, 1, 65535),
    "esl_url": _host,
    "esl_timeout": _number(float, 0.1, 600),
    "esl_nodes": _optional_text,
    "node_retry_after": _number(float, 0.1, 3600),
    "node_lost_after": _number(float, 0.5, 86400),
    "pubsub_redis_timeout": _number(float, 0.1, 600),
    "pubsub_redis_url": _redis_url,
    "broker_url": _broker_url,
    "jobs_key": _key,
    "dead_key": lambda name, raw: _key(name, raw) if raw.strip() else "",
    "endpoint_template": _text,
    "sip_endpoint_template": _text,
    "originate_timeout": _number(int, 1, 3600),
    "redial_guard": _number(float, 0.5, 3600),
    "sip_headers": _sip_headers,
    "active_key_order": _text,
    "list_order": lambda name, raw: raw.strip().lower(),
    "history_events": lambda name, raw: raw.strip().lower(),
    "dedup_ttl": _number(int, 1, 30 * 86400),
    "bridge_heartbeat": _number(float, 0.05, 60),
    "bridge_dead_after": _number(float, 0.2, 600),
    "broker_heartbeat_timeout": _number(int, 1000, 3_600_000),
    "broker_maintenance_chance": _number(int, 0, 1_000_000),
    "log_format": _text,
    "log_level": _text,
    "metrics_port": _number(int, 0, 65535),
    "metrics_host": _host,
    "reconcile_interval": _number(float, 0.1, 86400),
    "reconcile_grace": _number(float, 0, 3600),
    "dead_max": _number(int, 0, 100_000_000),
    "scheduler_lease": _number(float, 0.5, 600),
    "listener_lease": _number(float, 0.5, 600),
    "switch_cps": _number(int, 0, 100_000),
    "gateway_cps": _limits,
    "org_max_calls": _limits,
    "throttle_retries": _number(int, 0, 100),
    "event_streams": _boolean,
    "event_stream_ttl": _number(int, 1, 30 * 86400),
    "event_stream_maxlen": _number(int, 10, 1_000_000),
    "firehose_maxlen": _number(int, 0, 1_000_000_000),
    "control_secret": _optional_text,
    "control_sig_window": _number(int, 1, 3600),
    "control_signed_verbs": _optional_text,
    "recordings_dir": lambda name, raw: _directory(name, raw) if raw.strip() else "",
    "sounds_dir": lambda name, raw: _directory(name, raw) if raw.strip() else "",
    "dashboard_token": _optional_text,
}
