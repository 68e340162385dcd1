"""The call store on a single Redis: each change and its announcement in one script or one MULTI/EXEC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from redswitch.errors import LeaseLost
from redswitch.store import events
from redswitch.store.base import (
    ANNOUNCE_KINDS,
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
    ScriptWrite,
    StoreWrite,
    listed_sides,
    missed_answers,
    owed_hangups,
)
from redswitch.store.connection import reply_text
from redswitch.store.events import JsonDict
from redswitch.store.keys import ACTIVE_TTL, CALL_TTL, HISTORY_TTL
from redswitch.store.lua import script

#: The events script's letter for each kind of change.
_KINDS = {"seen": "S", "answered": "A", "hung_up": "H", "record_start": "R", "record_stop": "T", "early_media": "E"}


class AtomicStore(CallStore):
    """:class:`~redswitch.store.base.CallStore` on a single Redis: atomic."""

    atomic = True

    def transaction(self) -> Any:
        return self.client.pipeline(transaction=True)

    def claim(self, dial_id: str, org_id: str, user_id: str, record: Mapping[str, str]) -> tuple[bool, dict[str, str]]:
        """One script, so a worker killed at any instant leaves either no trace or the whole record: the user's
        history starts afresh (contract), the Job-UUID maps back to the dial_id, and call-start is published."""
        k = self.keys
        keys = [k.call(dial_id), k.active_calls(), k.history(org_id, user_id), k.job(record["job_uuid"])]
        keys += [k.events(dial_id), k.firehose()]
        args: list[str | int] = [dial_id, events.encode(events.call_start(dial_id)), k.channel(dial_id)]
        args += [CALL_TTL, HISTORY_TTL, k.lifecycle(), f"start:{dial_id}", *self.log_args()]
        args += [item for pair in record.items() for item in pair]
        reply = script("claim").run(self.client, keys, args)
        if reply[0]:  # created from ``record`` alone: no need to read it back
            return True, dict(record)
        values = reply[1]
        return False, {reply_text(k): reply_text(v) for k, v in zip(values[::2], values[1::2], strict=True)}

    def apply(self, changes: Sequence[ChannelChange], batch: Batch, fence: Fence | None = None) -> None:
        """One script call for the whole batch: redis-py spends far more time packing commands than Redis spends
        running them, so each call's keys go once per batch (a call's events mostly come together) and each change
        is three arguments. A batch number this listener already applied is skipped (a retry after a lost reply); a
        batch whose ``fence`` is no longer the node's lease is refused in the same script (nothing written). With
        the event log on, each call also names its stream."""
        if not changes:
            return
        k = self.keys
        logged = self.logged
        keys = [k.listener_batches(batch.listener), k.active_calls(), k.firehose()]
        calls: list[str | int] = []
        slots: dict[tuple[str, str, str, str], int] = {}
        steps: list[str | int] = []
        for change in changes:
            call = change[1:4] + (change.node,)  # dial_id, org_id, user_id, node
            slot = slots.get(call)
            if slot is None:
                slot = slots[call] = len(slots)
                dial_id, org_id, user_id, node = call
                keys += [k.call(dial_id), k.active(dial_id, org_id, user_id), k.history(org_id, user_id)]
                keys.append(k.node_calls(node))
                if logged:
                    keys.append(k.events(dial_id))
                calls += [dial_id, k.channel(dial_id), f"end:{dial_id}"]
            letter = _KINDS[change.kind]
            if change.kind in ANNOUNCE_KINDS and self.history_all:
                letter = letter.lower()  # a record-event or an early-media-event kept in the history too
            steps += [letter + change.side, slot, change.event]
        keys.append(k.node_lease(fence.node) if fence else k.listener_batches(batch.listener))
        args: list[str | int] = [ACTIVE_TTL, HISTORY_TTL, batch.number, k.lifecycle(), self.push_flag]
        args += [*self.log_args(), len(slots), *calls, *steps, fence.token if fence else ""]
        if script("events").run(self.client, keys, args) == -1:
            raise LeaseLost(f"listener lease on node {fence.node if fence else ''} is held by another listener")

    def recover(self, changes: Sequence[ChannelChange], fence: Fence) -> int:
        """One script: the lease checked, then each change announced only if Redis does not hold it yet."""
        k = self.keys
        logged = self.logged
        keys = [k.node_lease(fence.node), k.active_calls(), k.firehose()]
        args: list[str | int] = [fence.token, ACTIVE_TTL, HISTORY_TTL, k.lifecycle(), self.push_flag, *self.log_args()]
        for change in changes:
            dial_id, org_id, user_id = change.dial_id, change.org_id, change.user_id
            keys += [k.call(dial_id), k.active(dial_id, org_id, user_id), k.history(org_id, user_id)]
            keys.append(k.node_calls(change.node))
            if logged:
                keys.append(k.events(dial_id))
            args += [_KINDS[change.kind], change.side, k.channel(dial_id), change.event, f"end:{dial_id}"]
        done = int(script("recover").run(self.client, keys, args))
        if done == -1:
            raise LeaseLost(f"listener lease on node {fence.node} is held by another listener")
        return done

    def sent(self, dial_id: str, node: str) -> StoreWrite:
        k = self.keys
        return ScriptWrite("sent", [k.call(dial_id), k.active_calls(), k.node_calls(node)], [dial_id, node])

    def repair(
        self, dial_id: str, record: Mapping[str, str], lost: set[str], call_over: bool, hangup: HangupEvent
    ) -> list[str] | None:
        """Read the active list under WATCH: the listener touches the call's record and active list on every
        event of the call, so any event meanwhile aborts the repair (the next pass looks again)."""
        active = self.keys.active(dial_id, record["org_id"], record["user_id"])
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.call(dial_id), active)  # type: ignore[no-untyped-call]
            listed = listed_sides(pipe.lrange(active, 0, -1))
            if not pipe.sismember(self.keys.active_calls(), dial_id):
                return None
            sides = owed_hangups(lost, listed, call_over)
            if not (sides or call_over or "2" in lost):
                return None  # e.g. side 1 not dialled yet: nothing is owed
            pipe.multi()
            self.stage_repair(pipe, dial_id, record, sides, lost, call_over, hangup)
            try:
                pipe.execute()
            except redis.exceptions.WatchError:
                return None
        if call_over:
            self.compact_logs([dial_id])
        return sides

    def cancel(self, dial_id: str, record: Mapping[str, str], ack: JsonDict, hangup: JsonDict) -> bool:
        """Under WATCH of the record: the state read is still ``claimed`` when the change is applied."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.call(dial_id))  # type: ignore[no-untyped-call]
            if reply_text(pipe.hget(self.keys.call(dial_id), "state") or "") != "claimed":
                return False
            pipe.multi()
            self.stage_cancel(pipe, dial_id, record, ack, hangup)
            try:
                pipe.execute()
            except redis.exceptions.WatchError:
                return False
        return True

    def repair_answers(
        self, dial_id: str, record: Mapping[str, str], answered: set[str], answer: AnswerEvent
    ) -> list[str] | None:
        """Under WATCH of the record and the active list, as :meth:`repair`: a live event meanwhile aborts it."""
        active = self.keys.active(dial_id, record["org_id"], record["user_id"])
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.call(dial_id), active)  # type: ignore[no-untyped-call]
            sides = missed_answers(answered, listed_sides(pipe.lrange(active, 0, -1)))
            if not sides or not pipe.sismember(self.keys.active_calls(), dial_id):
                return None
            pipe.multi()
            self.stage_answers(pipe, dial_id, record, sides, answer)
            try:
                pipe.execute()
            except redis.exceptions.WatchError:
                return None
        return sides

    def admit(self, dial_id: str, org_id: str, user_id: str, org_max: int, limits: Sequence[Limit]) -> Decision:
        """Every limit in one script, with the ``queued`` announcement of a first long wait."""
        if not limits and not org_max:
            return GO  # no limit applies: no round trip on the hot path
        k = self.keys
        keys = [k.call(dial_id), *(k.org(org_id, part) for part in ("calls", "waiting", "seq", "polled"))]
        keys += [k.active_calls(), k.history(org_id, user_id), k.events(dial_id), k.firehose()]
        keys += [k.rate(limit.kind, limit.name, part) for limit in limits for part in ("sent", "next")]
        args: list[str | int | float] = [dial_id, org_max, SESSIONS_PER_CALL, WINDOW, STALE_WAITER]
        # the history's order, or '' when the history keeps the call's events only (``queued`` is published only)
        in_history = self.push_flag if self.in_history(events.queued("", 0)) else ""
        args += [k.channel(dial_id), HISTORY_TTL, in_history, events.queued_template("org_max_calls")]
        args += self.log_args()
        args += [limit.per_second for limit in limits] + [limit.reason for limit in limits]
        args += [events.queued_template(limit.reason) for limit in limits]
        verdict, number, first, reason = script("admit").run(self.client, keys, args)
        verdict, reason = reply_text(verdict), reply_text(reason)
        if verdict == "queued":
            return Decision("queued", 0.0, reason, int(number), bool(first))
        return Decision(verdict, int(number) / 1000, reason, 0, bool(first))
