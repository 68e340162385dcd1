"""The call store on a Redis Cluster: the same changes as :mod:`redswitch.store.atomic`, as ordered commands.

A cluster refuses a script or a MULTI/EXEC whose keys live in different slots, and a call's keys do (the contract
names carry no hash tag: ``redswitch.<dial_id>.<org_id>.<user_id>``, ``redswitch_history.<org_id>.<user_id>``,
``redswitch:call:...``). So each change is applied as commands in a fixed order: state writes first (each key's own
writes in order, guarded per key by a one-key script where the single-Redis script decides), then the user's
history, then the event log's entries (the call's stream, the firehose), then the PUBLISHes, in the order the
single-Redis path publishes them. A consumer that reacts to an event, from the channel or a stream, still finds
the state it announces; what is lost is atomicity: a process killed half-way leaves part of a change written
and nothing announced (docs/operations.md, "Redis Cluster"). The events are the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redswitch.errors import LeaseLost
from redswitch.store import events
from redswitch.store.base import (
    ANNOUNCE_KINDS,
    BARGER_FIELDS,
    GO,
    SESSIONS_PER_CALL,
    STALE_WAITER,
    WINDOW,
    AnswerEvent,
    Batch,
    CallStore,
    ChannelChange,
    Decision,
    Fence,
    HangupEvent,
    Limit,
    StoreWrite,
    listed_sides,
    missed_answers,
    owed_hangups,
)
from redswitch.store.connection import reply_text
from redswitch.store.keys import ACTIVE_TTL, CALL_TTL, HISTORY_TTL
from redswitch.store.lua import script

#: Waiters at the head of an org's line whose calls are checked for an end before each decision.
HEADS = 16
_KINDS = {"seen": "S", "answered": "A", "hung_up": "H"}


class OrderedStage:
    """Stands in for a MULTI/EXEC on a cluster: stages commands, then runs writes, follow-ups, log, publishes.

    Writes go out in one cluster pipeline (each key's commands in order, on its node); ``later`` steps run once
    they are applied (they may read what was written); then the event log's entries, in one more pipeline (each
    stream's entries in the order staged); PUBLISHes go last, one by one in the order staged, so a subscriber
    never hears of a change before it is in Redis and in the streams. Not atomic: see the module docstring. It
    offers exactly the commands the store stages, each by name, so a typo is a type error.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._writes: list[Callable[[Any], object]] = []
        self._later: list[Callable[[], object]] = []
        self._logs: list[Callable[[Any], object]] = []
        self._publishes: list[tuple[str, str]] = []

    def _stage(self, write: Callable[[Any], object]) -> OrderedStage:
        self._writes.append(write)
        return self

    def rpush(self, key: str, *values: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.rpush(key, *values))

    def lpush(self, key: str, *values: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.lpush(key, *values))

    def lrem(self, key: str, count: int, value: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.lrem(key, count, value))

    def expire(self, key: str, seconds: int) -> OrderedStage:
        return self._stage(lambda pipe: pipe.expire(key, seconds))

    def delete(self, key: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.delete(key))

    def set(self, key: str, value: str, ex: int) -> OrderedStage:
        return self._stage(lambda pipe: pipe.set(key, value, ex=ex))

    def hset(self, key: str, mapping: Mapping[str, str]) -> OrderedStage:
        return self._stage(lambda pipe: pipe.hset(key, mapping=dict(mapping)))

    def hdel(self, key: str, *fields: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.hdel(key, *fields))

    def sadd(self, key: str, member: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.sadd(key, member))

    def srem(self, key: str, member: str) -> OrderedStage:
        return self._stage(lambda pipe: pipe.srem(key, member))

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> OrderedStage:
        """A one-key script (cluster pipelines cannot stage EVALSHA reliably: it goes as EVAL)."""
        text = script(name).text
        return self._stage(lambda pipe: pipe.execute_command("EVAL", text, len(keys), *keys, *args))

    def __len__(self) -> int:
        """Writes staged so far: the index of the next write's result in what ``execute`` returns."""
        return len(self._writes)

    def log(self, stream: str, fields: Mapping[str, str], maxlen: int, ttl: int) -> OrderedStage:
        """An event log entry (XADD capped near ``maxlen``, then the stream's TTL when ``ttl``): after every write,
        before every PUBLISH."""

        def append(pipe: Any) -> None:
            pipe.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)
            if ttl:
                pipe.expire(stream, ttl)

        self._logs.append(append)
        return self

    def publish(self, channel: str, message: str) -> OrderedStage:
        self._publishes.append((channel, message))
        return self

    def later(self, step: Callable[[], object]) -> OrderedStage:
        self._later.append(step)
        return self

    def execute(self) -> list[Any]:
        results: list[Any] = []
        if self._writes:
            pipe = self._client.pipeline(transaction=False)
            for write in self._writes:
                write(pipe)
            results = pipe.execute()
        for step in self._later:
            step()
        if self._logs:
            pipe = self._client.pipeline(transaction=False)
            for append in self._logs:
                append(pipe)
            pipe.execute()
        for channel, message in self._publishes:
            self._client.publish(channel, message)
        self._writes, self._later, self._logs, self._publishes = [], [], [], []
        return results


class _SentWrite(StoreWrite):
    """``sent`` in steps: the record (atomic, one key), then the node's set while the call is still active."""

    def __init__(self, store: ClusterStore, dial_id: str, node: str) -> None:
        self.store, self.dial_id, self.node = store, dial_id, node

    def run(self, client: Any) -> object:
        keys = self.store.keys
        if not script("sent_record").run(client, [keys.call(self.dial_id)], [self.node]):
            return 0
        if self.store.is_active(self.dial_id):
            client.sadd(keys.node_calls(self.node), self.dial_id)
            if not self.store.is_active(self.dial_id):  # ended meanwhile; its end may have missed the node's set
                client.srem(keys.node_calls(self.node), self.dial_id)
        return 1


class ClusterStore(CallStore):
    """:class:`~redswitch.store.base.CallStore` on a Redis Cluster: the same effects, ordered, not atomic."""

    atomic = False

    def transaction(self) -> OrderedStage:
        return OrderedStage(self.client)

    def stage_log(self, stage: Any, stream: str, fields: Mapping[str, str], maxlen: int, ttl: int) -> None:
        """On a cluster the log's entries follow every write of the change (a stream's own commands in order)."""
        stage.log(stream, fields, maxlen, ttl)

    def claim(self, dial_id: str, org_id: str, user_id: str, record: Mapping[str, str]) -> tuple[bool, dict[str, str]]:
        """The record decides (one key, atomic); then active set, fresh history, job key; then the events.

        A worker killed between the record and the announcement leaves a record without ``call-start``; the
        redelivered message finds the record and goes on dialling, as it does after any crash past the claim.
        """
        k = self.keys
        flat = [item for pair in record.items() for item in pair]
        reply = script("claim_record").run(self.client, [k.call(dial_id)], [CALL_TTL, *flat])
        if not reply[0]:
            values = reply[1]
            return False, {reply_text(a): reply_text(b) for a, b in zip(values[::2], values[1::2], strict=True)}
        event = events.encode(events.call_start(dial_id))
        history = k.history(org_id, user_id)
        stage = OrderedStage(self.client)
        stage.sadd(k.active_calls(), dial_id)
        stage.delete(history)
        stage.rpush(history, event)
        stage.expire(history, HISTORY_TTL)
        stage.set(k.job(record["job_uuid"]), dial_id, ex=CALL_TTL)
        self.publish_event(stage, dial_id, event)
        stage.publish(k.lifecycle(), f"start:{dial_id}")
        stage.execute()
        return True, dict(record)

    def apply(self, changes: Sequence[ChannelChange], batch: Batch, fence: Fence | None = None) -> None:
        """Every change's writes in order, then the events in order. ``batch`` is not used: the steps span slots
        and are not one transaction, so a retried batch may be applied twice here (docs/operations.md). ``fence``
        is checked just before the writes, not with them: a listener paused between the check and its writes can
        still land one batch after another listener took the node over (docs/operations.md)."""
        if not changes:
            return
        if fence is not None:
            self._check_fence(fence)
        k = self.keys
        stage = OrderedStage(self.client)
        for change in changes:
            if change.kind in ANNOUNCE_KINDS:
                if change.kind == "record_stop":
                    file = str(json.loads(change.event).get("file", ""))
                    stage.script("record_stop", [k.call(change.dial_id)], [file])
                if self.history_all:
                    self.push(stage, k.history(change.org_id, change.user_id), change.event)
                    stage.expire(k.history(change.org_id, change.user_id), HISTORY_TTL)
                self.publish_event(stage, change.dial_id, change.event)
                continue
            stage.script("touch_record", [k.call(change.dial_id)], [_KINDS[change.kind], change.side])
            if change.kind == "seen":
                continue
            active, item = k.active(change.dial_id, change.org_id, change.user_id), f"ACTIVE.{change.side}"
            stage.lrem(active, 0, item)
            if change.kind == "answered":
                self.push(stage, active, item)
                stage.expire(active, ACTIVE_TTL)
            history = k.history(change.org_id, change.user_id)
            self.push(stage, history, change.event)
            stage.expire(history, HISTORY_TTL)
            self.publish_event(stage, change.dial_id, change.event)
            if change.ends_call:
                stage.srem(k.active_calls(), change.dial_id)
                stage.srem(k.node_calls(change.node), change.dial_id)
                stage.publish(k.lifecycle(), f"end:{change.dial_id}")
        stage.execute()
        self.compact_logs([change.dial_id for change in changes if change.ends_call])

    def _check_fence(self, fence: Fence) -> None:
        if reply_text(self.client.get(self.keys.node_lease(fence.node)) or "") != fence.token:
            raise LeaseLost(f"listener lease on node {fence.node} is held by another listener")

    def recover(self, changes: Sequence[ChannelChange], fence: Fence) -> int:
        """Per change: the lease checked, what Redis holds read, then the change applied in order (not atomic: an
        event of the call landing between the read and the writes may be announced twice, as with ``repair``)."""
        k = self.keys
        done = 0
        for change in changes:
            self._check_fence(fence)
            dial_id, side = change.dial_id, change.side
            active = k.active(dial_id, change.org_id, change.user_id)
            if not self.is_active(dial_id):
                continue
            listed = side in listed_sides(self.client.lrange(active, 0, -1))
            if (change.kind == "answered" and listed) or (change.kind == "hung_up" and not listed and side != "0"):
                continue
            stage = OrderedStage(self.client)
            if change.kind == "answered":
                self.push(stage, active, f"ACTIVE.{side}")
                stage.expire(active, ACTIVE_TTL)
                if side == "2":
                    stage.hset(k.call(dial_id), {"barger_answered": "1"})
            else:
                stage.lrem(active, 0, f"ACTIVE.{side}")
                if side == "2":
                    stage.hdel(k.call(dial_id), *BARGER_FIELDS)
            history = k.history(change.org_id, change.user_id)
            self.push(stage, history, change.event)
            stage.expire(history, HISTORY_TTL)
            self.publish_event(stage, dial_id, change.event)
            if change.ends_call:
                stage.srem(k.active_calls(), dial_id)
                stage.srem(k.node_calls(change.node), dial_id)
                stage.publish(k.lifecycle(), f"end:{dial_id}")
            stage.execute()
            if change.ends_call:
                self.compact_logs([dial_id])
            done += 1
        return done

    def sent(self, dial_id: str, node: str) -> StoreWrite:
        return _SentWrite(self, dial_id, node)

    def repair(
        self, dial_id: str, record: Mapping[str, str], lost: set[str], call_over: bool, hangup: HangupEvent
    ) -> list[str] | None:
        """No WATCH spans the call's keys here: read, then apply in order. A listener event of the call landing
        between the read and the writes is not noticed; at worst a side's hangup-event is published twice (the
        reconciler only acts on legs FreeSWITCH lost RECONCILE_GRACE ago)."""
        active = self.keys.active(dial_id, record["org_id"], record["user_id"])
        listed = listed_sides(self.client.lrange(active, 0, -1))
        if not self.is_active(dial_id):
            return None
        sides = owed_hangups(lost, listed, call_over)
        if not (sides or call_over or "2" in lost):
            return None
        stage = OrderedStage(self.client)
        self.stage_repair(stage, dial_id, record, sides, lost, call_over, hangup)
        stage.execute()
        if call_over:
            self.compact_logs([dial_id])
        return sides

    def cancel(self, dial_id: str, record: Mapping[str, str], ack: events.JsonDict, hangup: events.JsonDict) -> bool:
        """The record decides (one key, atomic: ``claimed`` → ``cancelled``); then the active set, the lists and the
        announcements, in order."""
        if not script("cancel_record").run(self.client, [self.keys.call(dial_id)], []):
            return False
        stage = OrderedStage(self.client)
        self.stage_cancel(stage, dial_id, record, ack, hangup)
        stage.execute()
        return True

    def repair_answers(
        self, dial_id: str, record: Mapping[str, str], answered: set[str], answer: AnswerEvent
    ) -> list[str] | None:
        """Read, then apply in order (no WATCH spans the call's keys here; see :meth:`repair`)."""
        active = self.keys.active(dial_id, record["org_id"], record["user_id"])
        sides = missed_answers(answered, listed_sides(self.client.lrange(active, 0, -1)))
        if not sides or not self.is_active(dial_id):
            return None
        stage = OrderedStage(self.client)
        self.stage_answers(stage, dial_id, record, sides, answer)
        stage.execute()
        return sides

    def admit(self, dial_id: str, org_id: str, user_id: str, org_max: int, limits: Sequence[Limit]) -> Decision:
        """The org decision in the org's slot, then the rate decision in the rates' slot (each atomic there); what
        they need from other slots is read just before, what they change there written just after, then
        announced: record first, then the user's history, then the PUBLISH."""
        if org_max > 0:
            verdict, position, first = self._org(dial_id, org_id, org_max)
            if reply_text(verdict) == "queued":
                if first:
                    self._announce_queued(dial_id, org_id, user_id, events.queued("org_max_calls", int(position)))
                return Decision("queued", 0.0, "org_max_calls", int(position), bool(first))
        if not limits:
            return GO
        return self._rates(dial_id, org_id, user_id, limits)

    def _org(self, dial_id: str, org_id: str, org_max: int) -> list[Any]:
        """Read which of the org's calls and first waiters ended, then decide in the org's slot."""
        k = self.keys
        slots, waiting = k.org(org_id, "calls"), k.org(org_id, "waiting")
        members = [reply_text(m) for m in self.client.zrange(slots, 0, -1)]
        heads = [reply_text(m) for m in self.client.zrange(waiting, 0, HEADS - 1)]
        candidates = [m for m in dict.fromkeys(members + heads) if m != dial_id]
        ended: list[str] = []
        if candidates:
            live = self.client.smismember(k.active_calls(), candidates)
            ended = [m for m, is_live in zip(candidates, live, strict=True) if not is_live]
        keys = [k.org(org_id, part) for part in ("calls", "waiting", "seq", "polled")]
        return list(script("org_main").run(self.client, keys, [dial_id, org_max, STALE_WAITER, *ended]))

    def _rates(self, dial_id: str, org_id: str, user_id: str, limits: Sequence[Limit]) -> Decision:
        k = self.keys
        record = k.call(dial_id)
        keys = [k.rate(limit.kind, limit.name, part) for limit in limits for part in ("sent", "next")]
        admit_at = reply_text(self.client.hget(record, "admit_at") or "")
        args: list[str | int | float] = [dial_id, SESSIONS_PER_CALL, WINDOW, admit_at]
        args += [limit.per_second for limit in limits] + [limit.reason for limit in limits]
        verdict, ms, first, reason, slot, position = script("rate_main").run(self.client, keys, args)
        if reply_text(verdict) == "go":
            self.client.hdel(record, "admit_at")
            return GO
        if reply_text(slot):
            self.client.hset(record, "admit_at", reply_text(slot))
        if first:
            self._announce_queued(dial_id, org_id, user_id, events.queued(reply_text(reason), int(position)))
        return Decision("wait", int(ms) / 1000, reply_text(reason), 0, bool(first))

    def _announce_queued(self, dial_id: str, org_id: str, user_id: str, event: events.JsonDict) -> None:
        stage = OrderedStage(self.client)
        self.announce(stage, dial_id, org_id, user_id, event)
        stage.execute()
