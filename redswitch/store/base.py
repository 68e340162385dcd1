"""The call store's interface: every change Redswitch makes to Redis, and what it announces with each.

One :class:`CallStore`, two implementations chosen by :func:`redswitch.store.open_store`:

* :class:`~redswitch.store.atomic.AtomicStore` (a single Redis): every state change and the PUBLISH that
  announces it run in one script or one MULTI/EXEC, so a consumer that reacts to an event and then reads the
  active list or the history finds the change already there, and a process killed at any instant leaves all of
  a change or none of it;
* :class:`~redswitch.store.cluster.ClusterStore` (a Redis Cluster): the same changes in the same order, as
  commands a cluster accepts (a call's keys live in different slots): state first, then the history, then the
  PUBLISH. Ordered, not atomic (docs/operations.md, "Redis Cluster").

What both do the same way lives here: single-key steps, reads, and the staging of a change with its
announcement on whatever :meth:`CallStore.transaction` gives. Events arrive built and encoded
(:mod:`redswitch.store.events`); key names come from :class:`~redswitch.store.keys.Keys`.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import redis

from redswitch.config import Settings
from redswitch.store.connection import reply_map, reply_text
from redswitch.store.events import CALL_EVENTS, JsonDict, encode
from redswitch.store.keys import ACTIVE_TTL, CALL_TTL, HISTORY_TTL, Keys
from redswitch.store.lua import script

#: Record fields of a barger; cleared when the barger's leg is gone.
BARGER_FIELDS = ("barger_uuid", "barger_mode", "barger_prev_mode", "barger_answered")
#: Record fields naming each side's leg (the uuids Redswitch gave FreeSWITCH's channels).
LEG_FIELDS = {"0": "uuid0", "1": "uuid1", "2": "barger_uuid"}


def leg_uuids(record: Mapping[str, str]) -> dict[str, str]:
    """The call's leg uuids by side, for the sides the record names one."""
    return {side: record[field] for side, field in LEG_FIELDS.items() if record.get(field)}


@dataclasses.dataclass(frozen=True)
class Batch:
    """A listener's batch of changes: the listener's own id (one per node it follows, per process) and the
    batch's number, increasing in the order the batches are applied."""

    listener: str
    number: int


@dataclasses.dataclass(frozen=True)
class Fence:
    """A listener's lease on a FreeSWITCH node: the writes it makes for that node are refused (``LeaseLost``) once
    another listener holds the lease. ``token`` is the lease's value when this listener took it."""

    node: str
    token: str


@dataclasses.dataclass(frozen=True)
class NodeLease:
    """Who follows a node: the lease's token (``<listener>/<epoch>/<taken at, ms>``; empty when nobody does), its age
    and the milliseconds before it expires unless renewed."""

    node: str
    token: str
    age_ms: int
    expires_ms: int

    @property
    def listener(self) -> str:
        return self.token.rsplit("/", 2)[0] if self.token else ""


#: The changes a recording's RECORD_START / RECORD_STOP make (a ``record-event``; a stop clears ``recording``).
RECORD_KINDS = frozenset(("record_start", "record_stop"))
#: The changes that only announce their event (in the history too with ``HISTORY_EVENTS=all``): the recordings'
#: and a side's early media (``early-media-event``); the call's state is the same before and after.
ANNOUNCE_KINDS = RECORD_KINDS | {"early_media"}


class ChannelChange(NamedTuple):
    """What one FreeSWITCH channel event changes for its call: the listener's input to :meth:`CallStore.apply`.

    ``kind``: ``seen`` (a leg of the call exists), ``answered``, ``hung_up``, ``record_start`` or ``record_stop``
    (:data:`RECORD_KINDS`), ``early_media``; ``event`` is the encoded protocol
    event announcing it (empty for ``seen``, which announces nothing); ``node`` the FreeSWITCH node it came from.
    A tuple: the listener makes one per event, tens of thousands a second.
    """

    kind: str
    dial_id: str
    org_id: str
    user_id: str
    side: str
    node: str
    event: str = ""  # encoded (see redswitch.store.events)

    @property
    def ends_call(self) -> bool:
        """Side 0's hangup ends the call (the contract: side 1 and a barger follow it)."""
        return self.kind == "hung_up" and self.side == "0"


@dataclasses.dataclass(frozen=True)
class JobCall:
    """The call a background originate's result belongs to, as the listener needs it to judge a refusal."""

    dial_id: str
    seen: bool
    org_id: str
    user_id: str


@dataclasses.dataclass(frozen=True)
class Limit:
    """One sessions-per-second limiter: ``kind`` ``switch`` (a FreeSWITCH node) or ``gateway``, its name, its
    sessions a second."""

    kind: str
    name: str
    per_second: int

    @property
    def reason(self) -> str:
        return f"{self.kind}_cps"


@dataclasses.dataclass(frozen=True)
class Decision:
    """``go`` (dial now), ``wait`` (a rate limit: ask again after ``delay`` seconds) or ``queued`` (an org limit).
    ``announced``: this check published the call's ``queued`` event."""

    verdict: str
    delay: float
    reason: str = ""
    position: int = 0
    announced: bool = False


GO = Decision("go", 0.0)
#: A click-to-call starts two sessions (side 0 at the originate, side 1 when side 0 answers); both are counted
#: at the originate.
SESSIONS_PER_CALL = 2
#: FreeSWITCH counts sessions per second; our window is longer by this margin (clock jitter, side 1's delay).
WINDOW = 1.2
#: A waiter that has not asked for this long is presumed gone (its message lost) and loses its place.
STALE_WAITER = 15.0
#: Builds the reconciler's ``hangup-event`` of a side.
HangupEvent = Callable[[str], JsonDict]
#: Builds the reconciler's ``answer-event`` of a side.
AnswerEvent = Callable[[str], JsonDict]


class StoreWrite(abc.ABC):
    """A write that may ride on another round trip (the message's ack): run now, or staged on a pipeline."""

    @abc.abstractmethod
    def run(self, client: Any) -> object: ...

    def stage(self, pipe: Any) -> None:
        """Queue on ``pipe`` (only writes that are one script can be staged; see ``stageable``)."""
        raise NotImplementedError

    stageable = False


@dataclasses.dataclass(frozen=True)
class ScriptWrite(StoreWrite):
    """One idempotent Lua script call (the ack may be sent again after a connection error)."""

    name: str
    keys: Sequence[str]
    args: Sequence[Any]
    stageable = True

    def run(self, client: Any) -> object:
        return script(self.name).run(client, self.keys, self.args)

    def stage(self, pipe: Any) -> None:
        script(self.name).stage(pipe, self.keys, self.args)


class CallStore(abc.ABC):
    """Every Redis change of a call, each with the events that announce it; see the module docstring."""

    #: False on a Redis Cluster: changes are ordered (state, history, PUBLISH) but not one transaction.
    atomic = True

    def __init__(self, client: redis.Redis, settings: Settings, keys: Keys) -> None:
        self.client = client
        self.settings = settings
        self.keys = keys
        #: Contract (the original's code): the active list and the history are LPUSHed, newest entry first;
        #: ``LIST_ORDER=oldest_first`` appends instead.
        self.newest_first = settings.list_order == "newest_first"
        #: ``HISTORY_EVENTS=all`` also keeps ``ack``, ``error`` and ``queued`` in the history.
        self.history_all = settings.history_events == "all"
        #: ``EVENT_STREAMS`` (on by default): every event published on a call's channel is also appended, in the
        #: same step, to the call's stream and to the firehose (docs/protocol.md, "Event streams").
        self.logged = settings.event_streams

    def log_args(self) -> list[str | int]:
        """The event log's arguments of a Lua script (log.lua): on/off, the call stream's TTL and length, the
        firehose's length."""
        s = self.settings
        return ["1" if self.logged else "", s.event_stream_ttl, s.event_stream_maxlen, s.firehose_maxlen]

    @property
    def push_flag(self) -> str:
        """The lists' order for a Lua script: ``L`` (LPUSH, newest first) or ``R`` (RPUSH)."""
        return "L" if self.newest_first else "R"

    def push(self, stage: Any, key: str, value: str) -> None:
        """Add ``value`` as the list's newest entry, where :attr:`newest_first` says."""
        if self.newest_first:
            stage.lpush(key, value)
        else:
            stage.rpush(key, value)

    def in_history(self, event: JsonDict) -> bool:
        """Does ``event`` go into the user's history? The call's events always; the rest with HISTORY_EVENTS=all."""
        return self.history_all or event.get("type") in CALL_EVENTS

    # -- what differs between a single Redis and a cluster ---------------------------------------------------

    @abc.abstractmethod
    def transaction(self) -> Any:
        """Where a change and its announcement are staged: a MULTI/EXEC, or on a cluster an ordered stage."""

    @abc.abstractmethod
    def claim(self, dial_id: str, org_id: str, user_id: str, record: Mapping[str, str]) -> tuple[bool, dict[str, str]]:
        """Record a new call and announce ``call-start`` unless the record exists; return (created, record)."""

    @abc.abstractmethod
    def apply(self, changes: Sequence[ChannelChange], batch: Batch, fence: Fence | None = None) -> None:
        """The listener's changes, in order, each announced after its state is written. With ``batch`` (a listener's
        id and the batch's number, increasing), a batch already applied is skipped where the store can tell. With
        ``fence``, a batch is refused (:class:`~redswitch.errors.LeaseLost`) when another listener holds the node's
        lease: atomically on a single Redis, checked just before the writes on a cluster."""

    @abc.abstractmethod
    def recover(self, changes: Sequence[ChannelChange], fence: Fence) -> int:
        """A listener that starts following a node announces the answers and hangups it finds missing (read from
        the switch's channels), each only when Redis does not hold it yet: an answer whose side is not listed, a
        hangup of a listed side or of side 0 (which ends the call), of active calls only. How many were announced;
        :class:`~redswitch.errors.LeaseLost` when the listener does not hold the lease."""

    @abc.abstractmethod
    def sent(self, dial_id: str, node: str) -> StoreWrite:
        """FreeSWITCH node ``node`` accepted the originate: the write recording that it holds the call (only from
        ``dialling``, and the node counts the call only while the call is active)."""

    @abc.abstractmethod
    def repair(
        self, dial_id: str, record: Mapping[str, str], lost: set[str], call_over: bool, hangup: HangupEvent
    ) -> list[str] | None:
        """The reconciler's repair: announce ``hangup(side)`` for each side FreeSWITCH lost whose hangup consumers
        still wait for (:func:`owed_hangups`, side 0 last: it ends the call), with the change it describes; the
        sides announced, or None when nothing was done (the call changed meanwhile, or nothing was owed)."""

    @abc.abstractmethod
    def cancel(self, dial_id: str, record: Mapping[str, str], ack: JsonDict, hangup: JsonDict) -> bool:
        """A hangup of a call never dialled (``claimed``: waiting for admission): the call becomes ``cancelled`` (it
        is never dialled), ``ack`` then ``hangup`` (side 0) are announced and the call ends, releasing its org slot
        and its place in line. False, changing nothing, when the call is not ``claimed`` any more."""

    @abc.abstractmethod
    def repair_answers(
        self, dial_id: str, record: Mapping[str, str], answered: set[str], answer: AnswerEvent
    ) -> list[str] | None:
        """The reconciler's repair of missed answers: for each side of ``answered`` (FreeSWITCH shows its channel
        answered) that the active list lacks, add ``ACTIVE.<side>`` and announce ``answer(side)``, sides in order;
        the sides announced, or None when nothing was done (the call changed meanwhile, or nothing was missing)."""

    @abc.abstractmethod
    def admit(self, dial_id: str, org_id: str, user_id: str, org_max: int, limits: Sequence[Limit]) -> Decision:
        """Take the call's org slot and its sessions now, or say how long to wait (see redswitch/admission.py)."""

    # -- announcements --------------------------------------------------------------------------------------

    def announce(self, stage: Any, dial_id: str, org_id: str, user_id: str, event: JsonDict) -> None:
        """Add the event to the user's history (when the history keeps it), then publish it (and log it)."""
        payload = encode(event)
        if self.in_history(event):
            history = self.keys.history(org_id, user_id)
            self.push(stage, history, payload)
            stage.expire(history, HISTORY_TTL)
        self.publish_event(stage, dial_id, payload)

    def publish_event(self, stage: Any, dial_id: str, payload: str) -> None:
        """Append the encoded event to the call's stream and the firehose (with the event log on), then publish it
        on the call's channel: every event Redswitch publishes about a call goes through here or a script that
        does the same (log.lua)."""
        if self.logged:
            s, k = self.settings, self.keys
            self.stage_log(stage, k.events(dial_id), {"event": payload}, s.event_stream_maxlen, s.event_stream_ttl)
            if s.firehose_maxlen:
                self.stage_log(stage, k.firehose(), {"dial_id": dial_id, "event": payload}, s.firehose_maxlen, 0)
        stage.publish(self.keys.channel(dial_id), payload)

    def compact_logs(self, dial_ids: Sequence[str]) -> None:
        """Shrink the streams of calls that just ended to what they hold (``lua/log.lua``: a new stream's node is
        preallocated at about 4 KB). Content, ids and TTL are unchanged, so it may follow the change in a round trip
        of its own (one per batch); the listener's script does it in the same step."""
        if not self.logged or not dial_ids:
            return
        text = script("compact_log").text
        pipe = self.client.pipeline(transaction=False)
        for dial_id in dial_ids:
            pipe.execute_command("EVAL", text, 1, self.keys.events(dial_id))  # type: ignore[no-untyped-call]
        pipe.execute()

    def stage_log(self, stage: Any, stream: str, fields: Mapping[str, str], maxlen: int, ttl: int) -> None:
        """Stage one stream entry (XADD, capped near ``maxlen``), then the stream's TTL when ``ttl``."""
        stage.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)
        if ttl:
            stage.expire(stream, ttl)

    def side_answered(self, stage: Any, dial_id: str, org_id: str, user_id: str, side: str, event: JsonDict) -> None:
        """Add ``ACTIVE.<side>`` and announce ``event`` (an ``answer-event``)."""
        active, item = self.keys.active(dial_id, org_id, user_id), f"ACTIVE.{side}"
        stage.lrem(active, 0, item)
        self.push(stage, active, item)
        stage.expire(active, ACTIVE_TTL)
        self.announce(stage, dial_id, org_id, user_id, event)

    def side_hung_up(self, stage: Any, dial_id: str, org_id: str, user_id: str, side: str, event: JsonDict) -> None:
        """Remove the side from the active list and announce ``event`` (a ``hangup-event``)."""
        stage.lrem(self.keys.active(dial_id, org_id, user_id), 0, f"ACTIVE.{side}")
        self.announce(stage, dial_id, org_id, user_id, event)

    def stage_end(self, stage: Any, dial_id: str, node: str) -> None:
        """The call is over: it leaves the active calls and its node's set; the relays leave its channel."""
        stage.srem(self.keys.active_calls(), dial_id)
        if node:
            stage.srem(self.keys.node_calls(node), dial_id)
        stage.publish(self.keys.lifecycle(), f"end:{dial_id}")

    def end_call(self, dial_id: str, node: str) -> None:
        stage = self.transaction()
        self.stage_end(stage, dial_id, node)
        stage.execute()

    def fail(
        self,
        dial_id: str,
        org_id: str | None,
        user_id: str | None,
        event: JsonDict,
        *,
        end_call: bool = True,
        node: str = "",
    ) -> None:
        """Announce ``event`` (a ``failure``) and, unless told otherwise, end the call."""
        stage = self.transaction()
        if org_id is not None and user_id is not None:
            self.announce(stage, dial_id, org_id, user_id, event)
        else:
            self.publish_event(stage, dial_id, encode(event))
        if end_call:
            self.stage_end(stage, dial_id, node)
        stage.execute()
        if end_call:
            self.compact_logs([dial_id])
        # imported here: the worker's broker must put prometheus_client in multiprocess mode before anything
        # imports it, and the broker imports the store (its Redis connection)
        from redswitch import metrics

        metrics.CALLS_FAILED.labels(metrics.cause_label(str(event.get("cause", "")))).inc()

    def reply(self, dial_id: str, event: JsonDict, record: Mapping[str, str] | None = None, **fields: str) -> None:
        """Publish an ``ack`` or ``error`` on the call's channel (and, with ``HISTORY_EVENTS=all``, in its user's
        history when the call is known).

        ``record`` is the call record when the caller has it (saves reading it again); ``fields`` are written to
        it in the same transaction, before the announcement.
        """
        if not self.in_history(event):
            record = {}  # published only: no need to know the call's user
        elif record is None:
            record = self.call_record(dial_id)
        stage = self.transaction()
        if fields:
            stage.hset(self.keys.call(dial_id), mapping=fields)
        if "org_id" in record and "user_id" in record:
            self.announce(stage, dial_id, record["org_id"], record["user_id"], event)
        else:
            self.publish_event(stage, dial_id, encode(event))
        stage.execute()

    # -- the call record ------------------------------------------------------------------------------------

    def call_record(self, dial_id: str) -> dict[str, str]:
        return reply_map(self.client.hgetall(self.keys.call(dial_id)))

    def active_call_record(self, dial_id: str) -> dict[str, str] | None:
        """The call record if the call is still active (one round trip for both reads), else None."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.call(dial_id))
        pipe.sismember(self.keys.active_calls(), dial_id)
        raw, active = pipe.execute()
        if not raw or not active:
            return None
        return reply_map(raw)

    def is_active(self, dial_id: str) -> bool:
        return bool(self.client.sismember(self.keys.active_calls(), dial_id))

    def active_calls(self) -> list[str]:
        return sorted(reply_text(m) for m in self.client.smembers(self.keys.active_calls()))

    def update_call(self, dial_id: str, **fields: str) -> None:
        self.client.hset(self.keys.call(dial_id), items=[item for pair in fields.items() for item in pair])

    def clear_call_fields(self, dial_id: str, *names: str) -> None:
        self.client.hdel(self.keys.call(dial_id), *names)

    def use_signature(self, sig: str, taker: str, ttl_ms: int) -> bool:
        """Note that execution ``taker`` used control signature ``sig``; False if another execution used it (a
        replay). The same execution may use it again (a Dramatiq retry)."""
        key = self.keys.signature(sig)
        if self.client.set(key, taker, nx=True, px=ttl_ms):
            return True
        return reply_text(self.client.get(key) or b"") == taker

    def claim_relay(self, dial_id: str, bridge_id: str) -> bool:
        """True when this bridge's relay is (now) the one that executes ``dial_id``'s control messages."""
        return self.relay_owner(dial_id, bridge_id) == "mine"

    def relay_owner(self, dial_id: str, bridge_id: str) -> str:
        """Who forwards ``dial_id``'s control messages at once: ``mine`` (nobody owned the active call, this bridge
        did, or the owner's bridge stopped heartbeating), ``other`` (a live bridge owns it), or ``''`` (no active
        call). One round trip unless another bridge owns the call (then its liveness is read and the owner key
        compared-and-set); on a cluster the call's activity is read first."""
        owner_key = self.keys.relay_owner(dial_id)
        if self.atomic:
            keys = [owner_key, self.keys.active_calls()]
        elif self.is_active(dial_id):
            keys = [owner_key]
        else:
            return ""
        mine, *owner = script("relay_take").run(self.client, keys, [bridge_id, "", CALL_TTL, dial_id])
        if int(mine) < 0:
            return ""
        if mine:
            return "mine"
        current = reply_text(owner[0])
        if self.client.exists(self.keys.bridge_alive(current)):
            return "other"
        taken = script("relay_take").run(self.client, keys, [bridge_id, current, CALL_TTL, dial_id])[0]
        return "mine" if int(taken) > 0 else ("other" if int(taken) == 0 else "")

    # -- control messages: each executed once, whichever relay forwards it -----------------------------------

    def control_note(self, dial_id: str, digest: str, since_ms: int, window_ms: int, last: int) -> tuple[int, str]:
        """Which of the call's recent control messages with this ``digest`` a relay just heard (see
        ``control_note.lua``; ``last``: the entry of that digest the relay matched before, 0 for none): the entry's
        number, and the execution that took it (``''``: none yet). Its id is ``<digest>:<number>``."""
        found = script("control_note").run(
            self.client, [self.keys.control_log(dial_id)], [digest, since_ms, window_ms, last]
        )
        return int(found[0]), reply_text(found[1])

    def control_taken(self, dial_id: str, control_id: str) -> bool:
        """Has an execution taken control message ``control_id`` of the call?"""
        return bool(self.client.hexists(self.keys.control_log(dial_id), f"t:{control_id}"))

    def control_record(
        self, dial_id: str, control_id: str, taker: str, window_ms: int
    ) -> tuple[dict[str, str] | None, bool]:
        """An execution of control message ``control_id`` starts: take it for ``taker`` (unless another took it)
        and read the call record if the call is active, in one round trip. (record or None, taken by ``taker``)."""
        log = self.keys.control_log(dial_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.call(dial_id))
        pipe.sismember(self.keys.active_calls(), dial_id)
        pipe.hsetnx(log, f"t:{control_id}", taker)
        pipe.hget(log, f"t:{control_id}")
        pipe.pexpire(log, window_ms * 2)
        raw, active, _, holder, _ = pipe.execute()
        record = reply_map(raw) if raw and active else None
        return record, reply_text(holder or "") == taker

    def listed(self, dial_id: str, org_id: str, user_id: str) -> set[str]:
        """The sides the call's active list names (answered and not hung up)."""
        return listed_sides(self.client.lrange(self.keys.active(dial_id, org_id, user_id), 0, -1))

    def claim_transfer(self, dial_id: str, new_uuid: str, now_ms: int, stale_ms: int) -> bool:
        """Reserve the call's one transfer under way for ``new_uuid`` (``transfer`` = ``<uuid>/<ms>``); False when
        another is under way. A reservation older than ``stale_ms`` (its worker was killed) is taken over."""
        key, value = self.keys.call(dial_id), f"{new_uuid}/{now_ms}"
        if self.client.hsetnx(key, "transfer", value):
            return True
        held = reply_text(self.client.hget(key, "transfer") or b"")
        since = held.rpartition("/")[2]
        if held and since.isdigit() and now_ms - int(since) < stale_ms:
            return False
        self.client.hset(key, "transfer", value)
        return True

    def transferred(self, dial_id: str, record: Mapping[str, str], side: str, new_uuid: str, event: JsonDict) -> None:
        """A transfer bridged ``side``'s new leg in: the record learns its uuid (and that it is not on hold),
        ``ACTIVE.<side>`` stays listed (as the newest entry) and ``event`` (its ``answer-event``) is announced."""
        stage = self.transaction()
        stage.hset(self.keys.call(dial_id), mapping={f"uuid{side}": new_uuid})
        stage.hdel(self.keys.call(dial_id), f"held{side}")
        self.side_answered(stage, dial_id, record["org_id"], record["user_id"], side, event)
        stage.execute()

    def claim_barger(self, dial_id: str, barger_uuid: str) -> bool:
        """Reserve the call's one barge for ``barger_uuid``; False when a barge is already up."""
        return bool(self.client.hsetnx(self.keys.call(dial_id), "barger_uuid", barger_uuid))

    # -- the originate's life -------------------------------------------------------------------------------

    def begin_dial(self, dial_id: str, state: str, since: str, now: str) -> bool:
        """Move the record from the state a run read to ``dialling``; False when another run got there first."""
        return bool(script("begin_dial").run(self.client, [self.keys.call(dial_id)], [state, since, now]))

    def defer(self, dial_id: str) -> bool:
        """A limit deferred the call: FreeSWITCH surely does not have it (``claimed``); False when it was cancelled
        meanwhile (then it stays so, and is never dialled)."""
        return bool(script("defer").run(self.client, [self.keys.call(dial_id)], []))

    def job_result(self, job_uuid: str, result: str) -> JobCall | None:
        """Note a bgapi originate's result on its call; the call (None: not one of ours, or long gone)."""
        dial_id = reply_text(self.client.get(self.keys.job(job_uuid)) or "")
        if not dial_id:
            return None
        found = script("job_result").run(self.client, [self.keys.call(dial_id)], [result])
        if not found:
            return JobCall(dial_id, False, "", "")
        seen, org_id, user_id = map(reply_text, found)
        return JobCall(dial_id, seen == "1", org_id, user_id)

    def note_throttled(self, dial_id: str, job_uuid: str, most: int) -> tuple[int, dict[str, Any]] | None:
        """The switch throttled this attempt before side 0 existed: the retry's number and the job to send again,
        or None (not this attempt any more, side 0 was seen, or ``most`` retries were spent)."""
        found = script("throttled").run(self.client, [self.keys.call(dial_id)], [job_uuid, most])
        if not found:
            return None
        return int(found[0]), json.loads(reply_text(found[1]))

    def take_retry(self, dial_id: str, retry: int) -> dict[str, str] | None:
        """A throttle retry's message: the record to dial from, or None (stale, or another copy took it)."""
        if not script("take_retry").run(self.client, [self.keys.call(dial_id)], [str(retry)]):
            return None
        return self.call_record(dial_id)

    # -- FreeSWITCH nodes -----------------------------------------------------------------------------------

    def node_load(self, names: Sequence[str]) -> tuple[list[int], list[bool], int]:
        """Each node's calls and whether it is marked down, and the next turn (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.scard(self.keys.node_calls(name))
            pipe.exists(self.keys.node_down(name))
        pipe.incr(self.keys.node_turn())
        *answers, turn = pipe.execute()
        return [int(n) for n in answers[::2]], [bool(d) for d in answers[1::2]], int(turn)

    def mark_node_down(self, name: str, for_ms: int) -> None:
        self.client.set(self.keys.node_down(name), "1", px=for_ms)

    def node_calls(self, name: str) -> set[str]:
        return {reply_text(m) for m in self.client.smembers(self.keys.node_calls(name))}

    # -- housekeeping ---------------------------------------------------------------------------------------

    def hold_lease(self, key: str, holder: str, ttl_ms: int) -> bool:
        """Take the lease ``key`` if free, or renew it if ``holder`` has it; True when ``holder`` has it now."""
        return bool(script("lease_hold").run(self.client, [key], [holder, ttl_ms]))

    def release_lease(self, key: str, holder: str) -> None:
        script("lease_release").run(self.client, [key], [holder])

    # -- listeners and their nodes --------------------------------------------------------------------------

    def hold_node(self, node: str, listener: str, ttl_ms: int, token: str = "") -> str:
        """Renew the node's lease with ``token``, or (``token`` empty) take it if free: the token held now, or ''
        when another listener holds it (or ``token``'s lease expired: a lost lease is taken afresh, never renewed)."""
        keys = [self.keys.node_lease(node), self.keys.node_epoch(node)]
        return reply_text(script("node_lease").run(self.client, keys, [listener, ttl_ms, token]))

    def release_node(self, node: str, token: str) -> None:
        script("lease_release").run(self.client, [self.keys.node_lease(node)], [token])

    def listeners_alive(self, listener: str, ttl_ms: int, leaving: bool = False) -> list[str]:
        """Say ``listener`` is alive (or leaving); the live listeners (seen within ``ttl_ms``), sorted."""
        args = [listener, ttl_ms, "1" if leaving else ""]
        reply = script("listeners").run(self.client, [self.keys.listeners()], args)
        return sorted(reply_text(member) for member in reply[1])

    def node_leases(self, nodes: Sequence[str]) -> list[NodeLease]:
        """Who follows each node, since when, for how long yet (a script per node; for ``check``)."""
        leases = []
        for node in nodes:
            raw, pttl, now_ms = script("node_lease_info").run(self.client, [self.keys.node_lease(node)], [])
            token = reply_text(raw)
            taken = token.rsplit("/", 1)[-1] if token else ""
            age = int(now_ms) - int(taken) if taken.isdigit() else 0
            leases.append(NodeLease(node, token, max(0, age), max(0, int(pttl))))
        return leases

    def trim_dead(self, most: int) -> int:
        """Keep the dead list within ``most`` entries, dropping the oldest; how many were dropped."""
        return int(script("trim").run(self.client, [self.keys.dead], [most]))

    # -- helpers for the implementations --------------------------------------------------------------------

    def stage_cancel(
        self, stage: Any, dial_id: str, record: Mapping[str, str], ack: JsonDict, hangup: JsonDict
    ) -> None:
        org_id, user_id = record["org_id"], record["user_id"]
        stage.hset(self.keys.call(dial_id), mapping={"state": "cancelled"})
        self.announce(stage, dial_id, org_id, user_id, ack)
        self.side_hung_up(stage, dial_id, org_id, user_id, "0", hangup)
        stage.delete(self.keys.active(dial_id, org_id, user_id))
        self.stage_end(stage, dial_id, record.get("node", ""))

    def stage_answers(
        self, stage: Any, dial_id: str, record: Mapping[str, str], sides: list[str], answer: AnswerEvent
    ) -> None:
        for side in sides:
            self.side_answered(stage, dial_id, record["org_id"], record["user_id"], side, answer(side))
            if side == "2":
                stage.hset(self.keys.call(dial_id), mapping={"barger_answered": "1"})

    def stage_repair(
        self,
        stage: Any,
        dial_id: str,
        record: Mapping[str, str],
        sides: list[str],
        lost: set[str],
        call_over: bool,
        hangup: HangupEvent,
    ) -> None:
        org_id, user_id = record["org_id"], record["user_id"]
        for side in sides:
            self.side_hung_up(stage, dial_id, org_id, user_id, side, hangup(side))
        if "2" in lost:
            stage.hdel(self.keys.call(dial_id), *BARGER_FIELDS)
        if call_over:
            self.stage_end(stage, dial_id, record.get("node", ""))


def missed_answers(answered: set[str], listed: set[str]) -> list[str]:
    """Sides FreeSWITCH shows answered that the active list lacks, in order (side 0 first)."""
    return sorted(answered - listed)


def owed_hangups(lost: set[str], listed: set[str], call_over: bool) -> list[str]:
    """Lost sides whose hangup consumers still wait for, side 0 last.

    Answered sides are listed; side 0's hangup is owed while the call is active (it ends the call); the barger's
    leg has a hangup owed whenever it existed. A side 1 never answered and never listed may never have been
    dialled, so nothing is invented for it.
    """
    owed = {side for side in lost if side in listed or side in ("0", "2")}
    if call_over:
        owed |= listed | {"0"}
    return sorted(owed, key=lambda side: (side == "0", side))


def listed_sides(items: Sequence[Any]) -> set[str]:
    """The sides an active list names (``ACTIVE.<side>`` items)."""
    return {reply_text(item).partition(".")[2] for item in items}
