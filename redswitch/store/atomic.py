"""The call store on a single Redis: each change and its announcement in one script or one MULTI/EXEC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from redswitch.errors import LeaseLost
from redswitch.store import events
from redswitch.store.base import (
    GO,
    SESSIONS_PER_CALL,
    STALE_WAITER,
    WINDOW,
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
    owed_hangups,
)
from redswitch.store.connection import reply_text
from redswitch.store.keys import ACTIVE_TTL, CALL_TTL, HISTORY_TTL
from redswitch.store.lua import script

#: The events script's letter for each kind of change.
_KINDS = {"seen": "S", "answered": "A", "hung_up": "H"}


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
        args: list[str | int] = [dial_id, events.encode(events.call_start(dial_id)), k.channel(dial_id)]
        args += [CALL_TTL, HISTORY_TTL, k.lifecycle(), f"start:{dial_id}"]
        args += [item for pair in record.items() for item in pair]
        reply = script("claim").run(self.client, keys, args)
        if reply[0]:  # created from ``record`` alone: no need to read it back
            return True, dict(record)
        values = reply[1]
        return False, {reply_text(k): reply_text(v) for k, v in zip(values[::2], values[1::2], strict=True)}

    def apply(self, changes: Sequence[ChannelChange], batch: Batch, fence: Fence | None = None) -> None:
        """One script call for the whole batch: redis-py spends far more time packing commands than Redis spends
        running them. A batch number this listener already applied is skipped (a retry after a lost reply); a
        batch whose ``fence`` is no longer the node's lease is refused in the same script (nothing written)."""
        if not changes:
            return
        k = self.keys
        keys = [k.listener_batches(batch.listener), k.active_calls()]
        args: list[str | int] = [ACTIVE_TTL, HISTORY_TTL, batch.number, k.lifecycle(), self.push_flag]
        self._add_changes(changes, keys, args)
        keys.append(k.node_lease(fence.node) if fence else k.listener_batches(batch.listener))
        args.append(fence.token if fence else "")
        if script("events").run(self.client, keys, args) == -1:
            raise LeaseLost(f"listener lease on node {fence.node if fence else ''} is held by another listener")

    def _add_changes(self, changes: Sequence[ChannelChange], keys: list[str], args: list[str | int]) -> None:
        k = self.keys
        for change in changes:
            dial_id, org_id, user_id = change.dial_id, change.org_id, change.user_id
            keys += [k.call(dial_id), k.active(dial_id, org_id, user_id), k.history(org_id, user_id)]
            keys.append(k.node_calls(change.node))
            args += [_KINDS[change.kind], change.side, k.channel(dial_id), change.event, f"end:{dial_id}"]

    def recover(self, changes: Sequence[ChannelChange], fence: Fence) -> int:
        """One script: the lease checked, then each change announced only if Redis does not hold it yet."""
        k = self.keys
        keys = [k.node_lease(fence.node), k.active_calls()]
        args: list[str | int] = [fence.token, ACTIVE_TTL, HISTORY_TTL, k.lifecycle(), self.push_flag]
        self._add_changes(changes, keys, args)
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
        return sides

    def admit(self, dial_id: str, org_id: str, user_id: str, org_max: int, limits: Sequence[Limit]) -> Decision:
        """Every limit in one script, with the ``queued`` announcement of a first long wait."""
        if not limits and not org_max:
            return GO  # no limit applies: no round trip on the hot path
        k = self.keys
        keys = [k.call(dial_id), *(k.org(org_id, part) for part in ("calls", "waiting", "seq", "polled"))]
        keys += [k.active_calls(), k.history(org_id, user_id)]
        keys += [k.rate(limit.kind, limit.name, part) for limit in limits for part in ("sent", "next")]
        args: list[str | int | float] = [dial_id, org_max, SESSIONS_PER_CALL, WINDOW, STALE_WAITER]
        # the history's order, or '' when the history keeps the call's events only (``queued`` is published only)
        in_history = self.push_flag if self.in_history(events.queued("", 0)) else ""
        args += [k.channel(dial_id), HISTORY_TTL, in_history, events.queued_template("org_max_calls")]
        args += [limit.per_second for limit in limits] + [limit.reason for limit in limits]
        args += [events.queued_template(limit.reason) for limit in limits]
        verdict, number, first, reason = script("admit").run(self.client, keys, args)
        verdict, reason = reply_text(verdict), reply_text(reason)
        if verdict == "queued":
            return Decision("queued", 0.0, reason, int(number), bool(first))
        return Decision(verdict, int(number) / 1000, reason, 0, bool(first))
