"""What the simulated far end does with each dialled number, plus switch-wide limits and timings.

A scenario is plain data so that tests can build one inline and the CLI can load one from a JSON file
(format in docs/simulator.md). Rules are tried in order; the first match wins; otherwise ``default`` applies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "Rule", "Scenario"]

ANSWER = "answer"
FAIL = "fail"
NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class Outcome:
    """``kind``: ``answer`` (after ``ring`` s), ``fail`` (hang up with ``cause`` after ``ring`` s) or ``no_answer``
    (ring until ``originate_timeout``). ``hangup_after``: far end hangs up an answered call after N s (None: never).
    ``progress``: emit CHANNEL_PROGRESS (SIP 180) when ringing starts. ``early_media``: the far end sends early
    media (SIP 183 with ringback or an announcement, CHANNEL_PROGRESS_MEDIA) as soon as it rings, for this many
    seconds before its outcome (the answer, or the failure); a ``no_answer`` plays it until the originate timeout.
    None: no early media."""

    kind: str = ANSWER
    cause: str = "NORMAL_CLEARING"
    ring: float = 0.05
    hangup_after: float | None = None
    progress: bool = True
    early_media: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Outcome | None = None) -> Outcome:
        base = base or cls()
        kind = str(data.get("outcome", data.get("kind", base.kind)))
        cause = str(data.get("cause", base.cause))
        if kind not in (ANSWER, FAIL, NO_ANSWER):  # shorthand: "outcome": "USER_BUSY"
            kind, cause = FAIL, kind.upper()
        ring = float(data.get("ring", base.ring if kind == base.kind else (0.02 if kind == FAIL else base.ring)))
        after = data.get("hangup_after", base.hangup_after)
        early = data.get("early_media", base.early_media if kind == base.kind else None)
        return cls(
            kind,
            cause,
            ring,
            None if after is None else float(after),
            bool(data.get("progress", base.progress)),
            None if early is None else float(early),
        )


@dataclass(frozen=True)
class Rule:
    """Match on a regex (``match``, full match of the number) or a suffix (``suffix``)."""

    outcome: Outcome
    suffix: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, number: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(number) is not None
        return self.suffix is not None and number.endswith(self.suffix)


def _fail(cause: str) -> Outcome:
    return Outcome(kind=FAIL, cause=cause, ring=0.02, progress=False)


DEFAULT_RULES = (
    Rule(_fail("USER_BUSY"), suffix="0486"),
    Rule(Outcome(kind=NO_ANSWER), suffix="0408"),
    Rule(_fail("UNALLOCATED_NUMBER"), suffix="0404"),
    Rule(_fail("NORMAL_TEMPORARY_FAILURE"), suffix="0503"),
    # Mobile carriers: 183 with ringback long before the person picks up (or never does).
    Rule(Outcome(kind=ANSWER, early_media=1.5), suffix="0183"),
    Rule(Outcome(kind=NO_ANSWER, early_media=0.0), suffix="0187"),
)


@dataclass(frozen=True)
class Scenario:
    """Switch behaviour. ``gateways`` empty means every gateway exists; limits ``None`` mean unlimited."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    default_outcome: Outcome = field(default_factory=Outcome)
    gateways: tuple[str, ...] = ()
    sessions_per_second: int | None = None
    max_sessions: int | None = None
    heartbeat_interval: float = 20.0
    originate_timeout: float = 60.0
    hostname: str = "sim"
    profile: str = "internal"
    #: How far ``show channels`` lags the live channels, in seconds. FreeSWITCH lists channels from its core
    #: database, which its SQL thread fills behind the channels' events (about 0.15 s on an idle switch, more
    #: under load): a channel younger than this is not listed yet, and one answered more recently is listed
    #: still ringing. 0 (the default): the listing is current.
    channels_lag: float = 0.0

    @classmethod
    def default(cls) -> Scenario:
        """Magic numbers 0486 busy, 0408 no answer, 0404 unallocated, 0503 temporary failure, 0183 early media for
        1.5 s then answer, 0187 early media and never an answer; others answer."""
        return cls()

    def outcome_for(self, number: str) -> Outcome:
        for rule in self.rules:
            if rule.matches(number):
                return rule.outcome
        return self.default_outcome

    def with_changes(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        default = Outcome.from_dict(data.get("default", {}))
        rules = tuple(_rule(item, default) for item in data.get("numbers", []))
        if data.get("include_default_numbers", True):
            rules += DEFAULT_RULES
        limits = {k: data.get(k) for k in ("sessions_per_second", "max_sessions")}
        return cls(
            rules=rules,
            default_outcome=default,
            gateways=tuple(str(g) for g in data.get("gateways", ())),
            sessions_per_second=None if limits["sessions_per_second"] is None else int(limits["sessions_per_second"]),
            max_sessions=None if limits["max_sessions"] is None else int(limits["max_sessions"]),
            heartbeat_interval=float(data.get("heartbeat_interval", 20.0)),
            originate_timeout=float(data.get("originate_timeout", 60.0)),
            hostname=str(data.get("hostname", "sim")),
            profile=str(data.get("profile", "internal")),
            channels_lag=float(data.get("channels_lag", 0.0)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _rule(item: dict[str, Any], default: Outcome) -> Rule:
    outcome = Outcome.from_dict(item, default)
    if "match" in item:
        return Rule(outcome, regex=re.compile(str(item["match"])))
    return Rule(outcome, suffix=str(item["suffix"]))
