"""Call state on a Redis Cluster: the effects of :class:`~redswitch.state.CallState`'s scripts, as ordered commands.

On a single Redis every state change and the PUBLISH announcing it run in one script or MULTI/EXEC. A cluster
refuses that whenever the keys live in different slots, and a call's keys do (the contract names carry no hash
tag: ``redswitch.<dial_id>.<org_id>.<user_id>``, ``redswitch_history.<org_id>.<user_id>``, ``redswitch:call:...``).
So here each change is applied as single-key commands in a fixed order: state writes first (each key's own
writes in order, guarded per key by a one-key script where the original checked a key first), then the user's
history, then the PUBLISHes, in the order the single-Redis path publishes them. A consumer that reacts to an
event still finds the state it announces; what is lost is atomicity: a process killed half-way leaves part of
a change written and nothing announced (see docs/operations.md, "Redis Cluster").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from redswitch.nodes import calls_key
from redswitch.redis_client import reply_text
from redswitch.state import ACTIVE_TTL, CALL_TTL, HISTORY_TTL, Batch, CallState, Keys, encode

# The call record's part of _CLAIM_SCRIPT: the only step that decides, so it stays atomic (one key).
_CLAIM_RECORD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local record = {}
for i = 2, #ARGV do record[#record + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# The call record's part of _EVENTS_SCRIPT for one record (never creates a record); returns the node on a
# side-0 hangup, so that the node's set of calls can be updated next.
_TOUCH_RECORD_SCRIPT = """
local kind, side = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  if kind == 'A' then
    if side == '2' then redis.call('HSET', KEYS[1], 'barger_answered', '1') end
  else
    redis.call('HSET', KEYS[1], 'seen', '1')
    if kind == 'H' and side == '2' then
      redis.call('HDEL', KEYS[1], 'barger_uuid', 'barger_mode', 'barger_prev_mode', 'barger_answered')
    end
  end
end
if kind == 'H' and side == '0' then return redis.call('HGET', KEYS[1], 'node') end
return false
"""

# The record's part of _SENT_SCRIPT.
_SENT_RECORD_SCRIPT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dialling' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent', 'node', ARGV[1])
return 1
"""

# The owner key's part of _RELAY_OWNER_SCRIPT: compare-and-set against the owner seen dead a moment ago.
_RELAY_TAKE_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return 1 end
if (owner or '') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class OrderedStage:
    """Stands in for a MULTI/EXEC on a cluster: stages commands, then runs writes, follow-ups, publishes.

    Writes go out in one cluster pipeline (each key's commands in order, on its node); ``later`` steps run once
    they are applied (they may read what was written); PUBLISHes go last, one by one in the order staged, so a
    subscriber never hears of a change before it is in Redis. Not atomic: see the module docstring.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._later: list[Callable[[], object]] = []
        self._publishes: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Callable[..., OrderedStage]:
        def stage(*args: Any, **kwargs: Any) -> OrderedStage:
            self._writes.append((name, args, kwargs))
            return self

        return stage

    def __len__(self) -> int:
        """Writes staged so far: the index of the next write's result in what ``execute`` returns."""
        return len(self._writes)

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
            for name, args, kwargs in self._writes:
                getattr(pipe, name)(*args, **kwargs)
            results = pipe.execute()
        for step in self._later:
            step()
        for channel, message in self._publishes:
            self._client.publish(channel, message)
        self._writes, self._later, self._publishes = [], [], []
        return results


class ClusterCallState(CallState):
    """:class:`CallState` on a Redis Cluster: the same effects, ordered (state, history, publish), not atomic."""

    atomic = False

    def transaction(self) -> Any:
        return OrderedStage(self.client)

    def record_events(self, records: list[str], batch: Batch | None = None) -> None:
        """The listener's batch: every record's state writes, then side-0 hangups' node sets, then the events.

        ``batch`` is not used: the steps span slots and are not one transaction, so a retried batch may be
        applied twice here (see docs/operations.md on clusters).
        """
        if not records:
            return
        stage = OrderedStage(self.client)
        touched: list[int] = []  # index in the writes of each side-0 hangup's record script
        ended: list[str] = []
        for record in records:
            fields = record.split("|")
            kind, dial_id, side = fields[0], fields[1], fields[4]
            stage.execute_command("EVAL", _TOUCH_RECORD_SCRIPT, 1, Keys.call(dial_id), kind, side)
            if kind == "H" and side == "0":
                touched.append(len(stage) - 1)
                ended.append(dial_id)
            if kind != "S":
                self._stage_event(stage, fields)
        results = stage.execute()
        self._leave_nodes([(dial_id, results[index]) for index, dial_id in zip(touched, ended, strict=True)])

    def _stage_event(self, stage: OrderedStage, fields: list[str]) -> None:
        """One answer or hangup: active list, history, PUBLISH (and the end of the call on a side-0 hangup)."""
        kind, dial_id, org_id, user_id, side = fields[:5]
        active, item = self.keys.active(dial_id, org_id, user_id), f"ACTIVE.{side}"
        stage.lrem(active, 0, item)
        if kind == "A":
            self.keys.push(stage, active, item)
            stage.expire(active, ACTIVE_TTL)
            event = encode({"type": "answer-event", "side": side})
        else:
            event = encode({"type": "hangup-event", "side": side, "cause": fields[5]})
        history = self.keys.history(org_id, user_id)
        self.keys.push(stage, history, event)
        stage.expire(history, HISTORY_TTL)
        stage.publish(self.keys.channel(dial_id), event)
        if kind == "H" and side == "0":
            stage.srem(Keys.active_calls(), dial_id)
            stage.publish(Keys.lifecycle(), f"end:{dial_id}")

    def _leave_nodes(self, ended: list[tuple[str, Any]]) -> None:
        """Ended calls leave the set of the node that held them (published after: see ``record_events``)."""
        pipe = self.client.pipeline(transaction=False)
        for dial_id, node in ended:
            if node:
                pipe.srem(calls_key(reply_text(node)), dial_id)
        pipe.execute()

    def claim_call(
        self, dial_id: str, org_id: str, user_id: str, record: Mapping[str, str]
    ) -> tuple[bool, dict[str, str]]:
        """The record decides (one key, atomic); then active set, fresh history, job key; then the events.

        A worker killed between the record and the announcement leaves a record without ``call-start``; the
        redelivered message finds the record and goes on dialling, as it does after any crash past the claim.
        """
        flat = [item for pair in record.items() for item in pair]
        created, values = self.client.eval(_CLAIM_RECORD_SCRIPT, 1, Keys.call(dial_id), CALL_TTL, *flat)
        if created:
            event = encode({"type": "call-start", "dial_id": dial_id})
            history = self.keys.history(org_id, user_id)
            stage = OrderedStage(self.client)
            stage.sadd(Keys.active_calls(), dial_id)
            stage.delete(history)
            stage.rpush(history, event)
            stage.expire(history, HISTORY_TTL)
            stage.set(Keys.job(record["job_uuid"]), dial_id, ex=CALL_TTL)
            stage.publish(self.keys.channel(dial_id), event)
            stage.publish(Keys.lifecycle(), f"start:{dial_id}")
            stage.execute()
        return bool(created), {reply_text(k): reply_text(v) for k, v in zip(values[::2], values[1::2], strict=True)}

    def _end(self, pipe: Any, dial_id: str) -> None:
        """Leave the active set and the node's set, then announce ``end:`` to the relays."""
        pipe.srem(Keys.active_calls(), dial_id)
        pipe.later(lambda: self._leave_nodes([(dial_id, self.client.hget(Keys.call(dial_id), "node"))]))
        pipe.publish(Keys.lifecycle(), f"end:{dial_id}")

    def job_result(self, job_uuid: str, result: str) -> dict[str, str] | None:
        """As :meth:`CallState.job_result`, in steps: the job's key and the call's live in different slots."""
        dial_id = reply_text(self.client.get(Keys.job(job_uuid)) or "")
        if not dial_id:
            return None
        found = {"dial_id": dial_id, "seen": "", "org_id": "", "user_id": ""}
        record = self.call_record(dial_id)
        if record:
            self.update_call(dial_id, job_result=result)
            found.update({name: record.get(name, "") for name in ("seen", "org_id", "user_id")})
        return found

    def call_sent(self, dial_id: str, node: str) -> None:
        """Record the node (only from ``dialling``, atomic on the record); count the call on it only while it is
        active (checked again after, undone if it ended meanwhile)."""
        if not self.client.eval(_SENT_RECORD_SCRIPT, 1, Keys.call(dial_id), node):
            return
        if self.is_active(dial_id):
            self.client.sadd(calls_key(node), dial_id)
            if not self.is_active(dial_id):  # ended meanwhile; its end may have missed the node's set
                self.client.srem(calls_key(node), dial_id)

    def claim_relay(self, dial_id: str, bridge_id: str) -> bool:
        """Keep or take ownership: the owner's liveness is read first, then the owner key is compare-and-set."""
        owner = reply_text(self.client.get(Keys.relay_owner(dial_id)) or "")
        if owner == bridge_id:
            return True
        if owner and self.client.exists(Keys.bridge_alive(owner)):
            return False
        return bool(self.client.eval(_RELAY_TAKE_SCRIPT, 1, Keys.relay_owner(dial_id), bridge_id, owner, CALL_TTL))
