"""The dashboard's live model, pure: events in, calls, failures and rates out, and what changed since last asked.

Every event comes from the event log with its stream id, whose milliseconds are Redis's clock when the event was
published: that is the event's time here (no clock of this process enters the model, so a replay gives the same
state). Folding an event is O(1): a dict update, a bucket increment, a deque append; whatever changed is noted so
that the page gets deltas, not the whole state.

Folding is idempotent for a replayed suffix (each event *sets* a state): the feed may apply an event twice when the
snapshot of a call's stream and the firehose that follows it overlap, and the call ends in the same state. Only
``live`` events count in the rates and the recent failures (the snapshot's are history).

What the events cannot tell: FreeSWITCH's early media (Redswitch publishes no event for it), so a side is
``ringing`` from its dialling until it answers or hangs up.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

#: Seconds of per-second rates kept (the chart shows them all; the tables sum them).
WINDOW = 60
#: Milliseconds an ended call stays on the page (hung up, with its causes) before it is dropped.
LINGER_MS = 60_000
#: Recent failures and replies kept for the page.
RECENT = 100
#: Barger modes after each acknowledged verb (``unthreeway`` goes back to the mode before ``threeway``).
MODES = {"barge": "listen", "whisper": "whisper", "mute": "listen", "threeway": "threeway", "coach-callee": "coach"}


#: Characters kept of any text an event carries (a reason, a cause, a dial_id): valid ones are far shorter, and a
#: hostile entry written straight into the firehose must not make every page carry megabytes.
TEXT_MAX = 300


def _text(event: Mapping[str, Any], name: str) -> str:
    return str(event.get(name, ""))[:TEXT_MAX]


def stream_ms(entry_id: str) -> int:
    """The milliseconds of a stream id (``<ms>-<seq>``): when Redis appended the entry."""
    head = entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclasses.dataclass
class Side:
    state: str  # ringing, early media, answered, hungup
    since: int  # ms
    cause: str = ""
    sip_code: str = ""
    answered: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "cause": self.cause, "sip_code": self.sip_code}


@dataclasses.dataclass
class Call:
    """One call as the page shows it. ``status``: queued, dialling, live, ended, failed."""

    dial_id: str
    started: int
    status: str = "dialling"
    org_id: str = ""
    user_id: str = ""
    gateway: str = ""
    node: str = ""
    answered: int = 0
    ended: int = 0
    barger_mode: str = ""
    barger_prev: str = ""
    queue_reason: str = ""
    queue_position: int = 0
    failure: str = ""
    reason: str = ""
    reply: dict[str, Any] = dataclasses.field(default_factory=dict)
    sides: dict[str, Side] = dataclasses.field(default_factory=dict)
    #: Rate marks (kind, second, cause) waiting for the call's org and gateway (its record) to be known.
    pending: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    described: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dial_id": self.dial_id,
            "status": self.status,
            "org_id": self.org_id,
            "user_id": self.user_id,
            "gateway": self.gateway,
            "node": self.node,
            "started": self.started,
            "answered": self.answered,
            "ended": self.ended,
            "barger_mode": self.barger_mode,
            "queue": {"reason": self.queue_reason, "position": self.queue_position} if self.queue_reason else None,
            "failure": {"cause": self.failure, "reason": self.reason} if self.failure else None,
            "reply": self.reply or None,
            "sides": {name: side.to_json() for name, side in sorted(self.sides.items())},
        }


class Rates:
    """Per-second counts of starts, answers and failures (by cause), in all and per org and gateway, over the
    last :data:`WINDOW` seconds (a ring of buckets: O(1) per count)."""

    def __init__(self) -> None:
        self.buckets: collections.OrderedDict[int, collections.Counter[tuple[str, ...]]] = collections.OrderedDict()

    def count(self, second: int, *key: str) -> None:
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = collections.Counter()
            if len(self.buckets) > 1 and second < next(reversed(self.buckets)):
                self.buckets = collections.OrderedDict(sorted(self.buckets.items()))  # late: rare, keep order
        bucket[key] += 1

    def prune(self, now_s: int) -> None:
        while self.buckets and next(iter(self.buckets)) <= now_s - 2 * WINDOW:
            self.buckets.popitem(last=False)

    def summary(self, now_s: int) -> dict[str, Any]:
        """The last :data:`WINDOW` whole seconds up to ``now_s``: series for the chart, totals per cause, org and
        gateway for the tables."""
        seconds = range(now_s - WINDOW + 1, now_s + 1)
        series: dict[str, list[int]] = {"starts": [], "answers": [], "failures": []}
        causes: collections.Counter[str] = collections.Counter()
        dims: dict[str, dict[str, dict[str, int]]] = {"org": {}, "gateway": {}}
        for second in seconds:
            bucket = self.buckets.get(second, collections.Counter())
            for kind in series:
                series[kind].append(bucket[(kind,)])
            for key, n in bucket.items():
                if len(key) == 2:
                    causes[key[1]] += n
                elif len(key) == 3:
                    row = dims[key[0]].setdefault(key[1], {"starts": 0, "answers": 0, "failures": 0})
                    row[key[2]] += n
        return {"end": now_s, "window": WINDOW, "series": series, "causes": dict(causes), **dims}


class View:
    """Every call the dashboard knows, its recent failures and replies, the rates, and the slower state the feed
    reads (nodes, the dead list); with what changed since :meth:`drain` was last called."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.rates = Rates()
        self.failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self.replies: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self.nodes: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.dead_length = 0
        self._ended: collections.deque[tuple[int, str]] = collections.deque()
        #: Calls changed since the last drain, in the order they first changed (so new calls come oldest first).
        self._changed: dict[str, None] = {}
        self._removed: set[str] = set()
        self._new_failures: list[dict[str, Any]] = []
        self._new_replies: list[dict[str, Any]] = []
        self._slow_changed = False
        self._last_rates: dict[str, Any] = {}
        self.last_ms = 0

    # -- folding events ------------------------------------------------------------------------------------

    def apply(self, entry_id: str, dial_id: str, event: Mapping[str, Any], live: bool = True) -> None:
        """Fold one event of ``dial_id`` (appended at ``entry_id``) into the model."""
        at = stream_ms(entry_id)
        dial_id = dial_id[:TEXT_MAX]
        self.last_ms = max(self.last_ms, at)
        kind = _text(event, "type")
        if kind in ("ack", "error"):
            self._reply(dial_id, kind, event, at, live)
            return
        call = self.calls.get(dial_id)
        if call is None:
            if kind not in ("call-start", "queued", "early-media-event", "answer-event", "hangup-event", "failure"):
                return
            call = self.calls[dial_id] = Call(dial_id, at, sides={"0": Side("ringing", at)})
            self._removed.discard(dial_id)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, call, event, at, live)
            self._changed[dial_id] = None

    def describe(self, dial_id: str, record: Mapping[str, str]) -> None:
        """What the call record adds: org, user, gateway, node, barger mode; and the rates its marks waited for."""
        call = self.calls.get(dial_id)
        if call is None or not record:
            return
        call.org_id = _text(record, "org_id") or call.org_id
        call.user_id = _text(record, "user_id") or call.user_id
        call.gateway = _text(record, "call_provider") or call.gateway
        call.node = _text(record, "node") or call.node
        if record.get("barger_mode") and not call.barger_mode:
            call.barger_mode = _text(record, "barger_mode")
        if call.status == "queued" and record.get("state") in ("dialling", "sent"):
            call.status, call.queue_reason = "dialling", ""
        call.described = True
        for kind, second, _cause in call.pending:
            self._count_dims(call, second, kind)
        call.pending.clear()
        self._changed[dial_id] = None

    def needs_record(self, dial_id: str) -> bool:
        """Whether the feed should read this call's record: never read, or its node still unknown while it runs."""
        call = self.calls.get(dial_id)
        return call is not None and (not call.described or (not call.node and call.status in ("dialling", "live")))

    def queued(self) -> list[str]:
        return [dial_id for dial_id, call in self.calls.items() if call.status == "queued"]

    def _mark(self, call: Call, at: int, kind: str, cause: str = "") -> None:
        second = at // 1000
        self.rates.count(second, kind)
        if cause:
            self.rates.count(second, kind, cause)
        if call.described:
            self._count_dims(call, second, kind)
        else:
            call.pending.append((kind, second, cause))

    def _count_dims(self, call: Call, second: int, kind: str) -> None:
        if call.org_id:
            self.rates.count(second, "org", call.org_id, kind)
        if call.gateway:
            self.rates.count(second, "gateway", call.gateway, kind)

    def _start(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        call.started = min(call.started, at)
        if live:
            self._mark(call, at, "starts")

    def _queued(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        if call.status in ("dialling", "queued"):
            call.status = "queued"
            call.queue_reason = _text(event, "reason")
            position = event.get("position")
            call.queue_position = position if isinstance(position, int) else 0

    def _answer(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        name = _text(event, "side")
        side = call.sides.get(name)
        if side is not None and side.state == "hungup":
            return  # a replayed answer after its hangup
        call.sides[name] = Side("answered", at, answered=True)
        if name == "0":
            call.answered = call.answered or at
            call.queue_reason = ""
            if call.status in ("dialling", "queued"):
                call.status = "live"
            call.sides.setdefault("1", Side("ringing", at))
        if name == "1" and live:
            self._mark(call, at, "answers")

    def _early(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        """Early media on a side still ringing (a replayed one after its answer or hangup changes nothing)."""
        name = _text(event, "side")
        side = call.sides.get(name)
        if side is None or side.state == "ringing":
            call.sides[name] = Side("early media", at)

    def _hangup(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        name = _text(event, "side")
        cause = _text(event, "cause")
        before = call.sides.get(name)
        answered = before is not None and before.answered
        call.sides[name] = Side("hungup", at, cause, _text(event, "sip_code"), answered)
        if name == "2":
            call.barger_mode = call.barger_prev = ""
        if not answered and live and name in ("0", "1"):
            self._failed(call, at, cause, _text(event, "reason"), f"side {name}")
        if name == "0":
            self._end(call, at, "ended")

    def _failure(self, call: Call, event: Mapping[str, Any], at: int, live: bool) -> None:
        call.failure = _text(event, "cause")
        call.reason = _text(event, "reason")
        side = call.sides.get("0")
        if side is not None and side.state != "hungup":
            call.sides["0"] = Side("hungup", at, call.failure)
        if live:
            self._failed(call, at, call.failure, call.reason, "failure")
        self._end(call, at, "failed")

    def _failed(self, call: Call, at: int, cause: str, reason: str, what: str) -> None:
        self._mark(call, at, "failures", cause or "UNKNOWN")
        entry = {"dial_id": call.dial_id, "at": at, "what": what, "cause": cause, "reason": reason}
        self.failures.append(entry)
        self._new_failures.append(entry)

    def _end(self, call: Call, at: int, status: str) -> None:
        if call.ended:
            return
        call.status, call.ended, call.queue_reason = status, at, ""
        self._ended.append((at, call.dial_id))

    def _reply(self, dial_id: str, kind: str, event: Mapping[str, Any], at: int, live: bool) -> None:
        verb = _text(event, "event")
        reply = {"dial_id": dial_id, "type": kind, "event": verb, "reason": _text(event, "reason"), "at": at}
        call = self.calls.get(dial_id)
        if call is not None:
            call.reply = reply
            if kind == "ack":
                self._mode(call, verb, at)
            self._changed[dial_id] = None
        if live:
            self.replies.append(reply)
            self._new_replies.append(reply)

    @staticmethod
    def _mode(call: Call, verb: str, at: int) -> None:
        if verb == "barge":
            call.sides.setdefault("2", Side("ringing", at))
        if verb == "threeway":
            call.barger_prev = call.barger_mode
        if verb == "unthreeway":
            call.barger_mode = call.barger_prev or "listen"
        elif verb in MODES:
            call.barger_mode = MODES[verb]

    # -- the slower state -----------------------------------------------------------------------------------

    def set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        if nodes != self.nodes:
            self.nodes, self._slow_changed = nodes, True

    def set_dead(self, length: int, entries: list[dict[str, Any]]) -> None:
        if length != self.dead_length or entries != self.dead:
            self.dead_length, self.dead, self._slow_changed = length, entries, True

    # -- what the page gets ---------------------------------------------------------------------------------

    def prune(self, now_ms: int) -> None:
        """Drop calls that ended more than :data:`LINGER_MS` ago, and old rate buckets."""
        while self._ended and self._ended[0][0] <= now_ms - LINGER_MS:
            _, dial_id = self._ended.popleft()
            call = self.calls.get(dial_id)
            if call is not None and call.ended and call.ended <= now_ms - LINGER_MS:
                del self.calls[dial_id]
                self._changed.pop(dial_id, None)
                self._removed.add(dial_id)
        self.rates.prune(now_ms // 1000)

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """Everything, for a page that just connected."""
        return {
            "now": now_ms,
            "calls": [call.to_json() for call in sorted(self.calls.values(), key=lambda call: call.started)],
            "failures": list(self.failures),
            "replies": list(self.replies),
            "rates": self.rates.summary(now_ms // 1000 - 1),
            **self._slow(),
        }

    def drain(self, now_ms: int, rates: bool) -> dict[str, Any] | None:
        """What changed since the last drain (None: nothing), and the rates when ``rates`` (once a second)."""
        delta: dict[str, Any] = {}
        if self._changed:
            delta["calls"] = [self.calls[d].to_json() for d in self._changed if d in self.calls]
        if self._removed:
            delta["removed"] = sorted(self._removed)
        if self._new_failures:
            delta["failures"] = self._new_failures
        if self._new_replies:
            delta["replies"] = self._new_replies
        if self._slow_changed:
            delta.update(self._slow())
        if rates:
            summary = self.rates.summary(now_ms // 1000 - 1)
            if summary["series"] != self._last_rates.get("series") or summary["causes"] != self._last_rates.get(
                "causes"
            ):
                delta["rates"] = self._last_rates = summary
        self._changed, self._removed, self._new_failures, self._new_replies = {}, set(), [], []
        self._slow_changed = False
        if not delta:
            return None
        delta["now"] = now_ms
        return delta

    def _slow(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "dead": {"length": self.dead_length, "recent": self.dead}}


_HANDLERS = {
    "call-start": View._start,
    "queued": View._queued,
    "early-media-event": View._early,
    "answer-event": View._answer,
    "hangup-event": View._hangup,
    "failure": View._failure,
}
