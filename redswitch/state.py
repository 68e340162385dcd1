"""Redis key names, channel names and the state transitions Redswitch writes.

The names marked *contract* are the original Redswitch's and existing clients read them; the others are
Redswitch's own bookkeeping under the ``redswitch:`` prefix (a colon, so they can never collide with the
dotted contract names). Every state change that is also announced on pub/sub is written in the same
MULTI/EXEC as its PUBLISH: a consumer that reacts to an event and then reads the active list or the history
finds the change already there. On a Redis Cluster the same changes are applied in the same order but not
atomically (:mod:`redswitch.cluster_state`); :class:`CallState` picks that path itself when given a cluster client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis

from redswitch import metrics, scripts
from redswitch.ack_writes import ScriptWrite, write_with_ack
from redswitch.config import Settings
from redswitch.redis_client import is_cluster_client, reply_text

ACTIVE_TTL = 24 * 3600  # contract: active calls expire after 24 h
HISTORY_TTL = 4 * 3600  # contract: event histories expire after 4 h
CALL_TTL = 24 * 3600
#: What the original's history held: the events it published about the call. With ``HISTORY_EVENTS=call`` (the
#: default) the others (``ack``, ``error``, ``queued``) are published on the channel only.
CALL_EVENTS = frozenset({"call-start", "answer-event", "hangup-event", "failure"})

JsonDict = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Batch:
    """A listener's batch of events: the listener's own id (one per node it follows, per process) and the
    batch's number, increasing in the order the batches are applied."""

    listener: str
    number: int


class Keys:
    """Builds every Redis key and channel name from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.jobs = settings.jobs_key  # contract: the legacy list
        self.dead = settings.effective_dead_key
        self._org_first = settings.active_key_order == "org_user_dial"
        #: Contract (the original's code): the active list and the history are LPUSHed, newest entry first.
        self.newest_first = settings.list_order == "newest_first"
        self.history_all = settings.history_events == "all"

    def push(self, pipe: Any, key: str, value: str) -> None:
        """Add ``value`` as the list's newest entry: at the head (LPUSH, as the original) or, with
        ``LIST_ORDER=oldest_first``, at the tail."""
        if self.newest_first:
            pipe.lpush(key, value)
        else:
            pipe.rpush(key, value)

    @property
    def push_flag(self) -> str:
        """The list order for a Lua script: ``L`` (LPUSH) or ``R`` (RPUSH)."""
        return "L" if self.newest_first else "R"

    def in_history(self, event: JsonDict) -> bool:
        """Does ``event`` go into the user's history? The call's events always; the rest with HISTORY_EVENTS=all."""
        return self.history_all or event.get("type") in CALL_EVENTS

    def channel(self, dial_id: str) -> str:
        """Contract: events, control messages and acks of a call travel on a channel named after its dial_id."""
        return dial_id

    def active(self, dial_id: str, org_id: str, user_id: str) -> str:
        """Contract: the list of ``ACTIVE.<side>`` items of a call."""
        if self._org_first:
            return f"redswitch.{org_id}.{user_id}.{dial_id}"
        return f"redswitch.{dial_id}.{org_id}.{user_id}"

    def history(self, org_id: str, user_id: str) -> str:
        """Contract: every event of a user's current call."""
        return f"redswitch_history.{org_id}.{user_id}"

    def processing(self, bridge_id: str) -> str:
        """A bridge's in-flight jobs; the hash tag keeps it in the jobs list's cluster slot."""
        return f"{{{self.jobs}}}.processing.{bridge_id}"

    def processing_pattern(self) -> str:
        return f"{{{self.jobs}}}.processing.*"

    @staticmethod
    def bridge_alive(bridge_id: str) -> str:
        return f"redswitch:bridge:{bridge_id}"

    @staticmethod
    def dialled(dial_id: str) -> str:
        """Set when a bridge accepts a dial_id: the 24 h duplicate guard."""
        return f"redswitch:dialled:{dial_id}"

    @staticmethod
    def call(dial_id: str) -> str:
        """Hash describing a call Redswitch placed (ids, leg uuids, job uuid)."""
        return f"redswitch:call:{dial_id}"

    @staticmethod
    def listener_batches(listener: str) -> str:
        """The number of the last batch a listener applied: a retried batch is not applied twice."""
        return f"redswitch:listener:{listener}:applied"

    @staticmethod
    def job(job_uuid: str) -> str:
        """Maps a bgapi Job-UUID to its dial_id, so the listener can report a call FreeSWITCH refused."""
        return f"redswitch:job:{job_uuid}"

    @staticmethod
    def active_calls() -> str:
        """Set of dial_ids with a call in progress (for the control relay and the reconciler)."""
        return "redswitch:active"

    @staticmethod
    def lifecycle() -> str:
        """Pub/sub channel announcing ``start:<dial_id>`` and ``end:<dial_id>`` to the control relays."""
        return "redswitch:calls"

    @staticmethod
    def relay_owner(dial_id: str) -> str:
        """The bridge whose relay forwards this call's control messages (exactly one executes each)."""
        return f"redswitch:relay:{dial_id}"


_CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local record = {}
for i = 6, #ARGV do record[#record + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[2])
redis.call('PUBLISH', 'redswitch:calls', 'start:' .. ARGV[1])
return {1}
"""

# Owner of a call's control messages: the first relay to ask, until its bridge's liveness key expires.
_RELAY_OWNER_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return 1 end
if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


# The listener's hot path: one script call applies a whole batch of channel events, in order. Each event's state
# change comes before the PUBLISH that announces it, and the batch is one command on the wire: redis-py spends
# far more time packing commands than Redis spends running them. Records are "kind|dial|org|user|side" and, for
# a hangup, "|cause|sip_code|retryable" ("-" when absent; extensions beside the contract's cause)
# with ids that passed ID_PATTERN and causes of [A-Z0-9_], so the JSON is built here byte for byte as
# ``encode`` builds it. ARGV[5] is the lists' order: ``L`` pushes new entries at the head (the original's LPUSH),
# ``R`` at the tail. (Keys are derived inside the script, so this path is for a single Redis, not a cluster.)
_EVENTS_SCRIPT = """
local active_ttl, history_ttl, org_first = ARGV[1], ARGV[2], ARGV[3] == '1'
local batch = tonumber(ARGV[4])
local push = ARGV[5] == 'R' and 'RPUSH' or 'LPUSH'
if #KEYS == 1 and batch <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
for i = 6, #ARGV do
  local f = {}
  for part in string.gmatch(ARGV[i], '[^|]+') do f[#f + 1] = part end
  local kind, dial, org, user, side = f[1], f[2], f[3], f[4], f[5]
  local call = 'redswitch:call:' .. dial
  if kind == 'S' then
    if redis.call('EXISTS', call) == 1 then redis.call('HSET', call, 'seen', '1') end
  else
    local active = org_first and ('redswitch.' .. org .. '.' .. user .. '.' .. dial)
                   or ('redswitch.' .. dial .. '.' .. org .. '.' .. user)
    local history = 'redswitch_history.' .. org .. '.' .. user
    local item = 'ACTIVE.' .. side
    local event
    redis.call('LREM', active, 0, item)
    if kind == 'A' then
      redis.call(push, active, item)
      redis.call('EXPIRE', active, active_ttl)
      if side == '2' and redis.call('EXISTS', call) == 1 then redis.call('HSET', call, 'barger_answered', '1') end
      event = '{"type": "answer-event", "side": "' .. side .. '"}'
    else
      if redis.call('EXISTS', call) == 1 then
        redis.call('HSET', call, 'seen', '1')
        if side == '2' then
          redis.call('HDEL', call, 'barger_uuid', 'barger_mode', 'barger_prev_mode', 'barger_answered')
        end
      end
      event = '{"type": "hangup-event", "side": "' .. side .. '", "cause": "' .. f[6] .. '"'
      if f[7] and f[7] ~= '-' then event = event .. ', "sip_code": "' .. f[7] .. '"' end
      if f[8] and f[8] ~= '-' then event = event .. ', "retryable": ' .. (f[8] == '1' and 'true' or 'false') end
      event = event .. '}'
    end
    redis.call(push, history, event)
    redis.call('EXPIRE', history, history_ttl)
    redis.call('PUBLISH', dial, event)
    if kind == 'H' and side == '0' then
      redis.call('SREM', 'redswitch:active', dial)
      redis.call('PUBLISH', 'redswitch:calls', 'end:' .. dial)
      local node = redis.call('HGET', call, 'node')
      if node then redis.call('SREM', 'redswitch:node-calls:' .. node, dial) end
    end
  end
end
if #KEYS == 1 then redis.call('SET', KEYS[1], batch, 'EX', active_ttl) end
return 1
"""


# A background originate's result: note it on the call it belongs to (if any, and only while the record lives)
# and return what the listener needs to judge a refusal: {dial_id, seen, org_id, user_id}.
_JOB_RESULT_SCRIPT = """
local dial = redis.call('GET', KEYS[1])
if not dial then return false end
local call = 'redswitch:call:' .. dial
if redis.call('EXISTS', call) == 0 then return {dial, '', '', ''} end
redis.call('HSET', call, 'job_result', ARGV[1])
local seen, org, user = unpack(redis.call('HMGET', call, 'seen', 'org_id', 'user_id'))
return {dial, seen or '', org or '', user or ''}
"""


# A call is over: relays leave its channel, and its node holds one call fewer.
_END_SCRIPT = """
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', 'redswitch:calls', 'end:' .. ARGV[1])
local node = redis.call('HGET', KEYS[2], 'node')
if node then redis.call('SREM', 'redswitch:node-calls:' .. node, ARGV[1]) end
"""

# The originate was accepted: the node holds the call, unless the call already ended in the meantime. Only
# from ``dialling``: the listener may already have taken the call back (a throttled originate to send again).
_SENT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dialling' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent', 'node', ARGV[2])
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('SADD', 'redswitch:node-calls:' .. ARGV[2], ARGV[1])
end
"""


def encode(event: JsonDict) -> str:
    return json.dumps(event, separators=(", ", ": "))


class CallState:
    """The transitions of a call's Redis state, each one atomic with the event that announces it."""

    #: False on a Redis Cluster: changes are ordered (state, history, PUBLISH) but not one transaction.
    atomic = True

    def __new__(cls, client: redis.Redis, settings: Settings) -> CallState:
        """A :class:`~redswitch.cluster_state.ClusterCallState` for a cluster client: the one switch, decided by
        the client each process built at start, so that every module keeps constructing ``CallState``."""
        if cls is CallState and is_cluster_client(client):
            from redswitch.cluster_state import ClusterCallState

            cls = ClusterCallState
        return super().__new__(cls)

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys(settings)
        self._events = client.register_script(_EVENTS_SCRIPT)
        self._end_script = client.register_script(_END_SCRIPT)
        self._org_first = settings.active_key_order == "org_user_dial"

    def record_events(self, records: list[str], batch: Batch | None = None) -> None:
        """Apply listener records in order (see ``_EVENTS_SCRIPT``): ``A`` answered, ``H`` hung up, ``S`` seen.

        With ``batch`` (a listener's own id and the batch's number, increasing), a batch already applied is not
        applied again: a retry after a lost reply publishes nothing twice.
        """
        if not records:
            return
        keys = [Keys.listener_batches(batch.listener)] if batch is not None else []
        number = batch.number if batch is not None else 0
        org_first = "1" if self._org_first else "0"
        self._events(keys=keys, args=[ACTIVE_TTL, HISTORY_TTL, org_first, number, self.keys.push_flag, *records])

    def claim_call(
        self, dial_id: str, org_id: str, user_id: str, record: Mapping[str, str]
    ) -> tuple[bool, dict[str, str]]:
        """Record a new call and announce ``call-start`` unless the call exists; return (created, record).

        One script, so a worker killed at any instant leaves either no trace or the whole record: the user's
        history starts afresh (contract), the Job-UUID maps back to the dial_id, and call-start is published.
        """
        history = self.keys.history(org_id, user_id)
        event = encode({"type": "call-start", "dial_id": dial_id})
        flat = [item for pair in record.items() for item in pair]
        keys = [Keys.call(dial_id), Keys.active_calls(), history, Keys.job(record["job_uuid"])]
        args: list[str | int] = [dial_id, event, self.keys.channel(dial_id), CALL_TTL, HISTORY_TTL, *flat]
        reply = scripts.run(self.client, _CLAIM_SCRIPT, keys, args)
        if reply[0]:  # created from ``record`` alone: no need to read it back
            return True, dict(record)
        values = reply[1]
        return False, dict(zip(values[::2], values[1::2], strict=True))

    def side_answered(self, dial_id: str, org_id: str, user_id: str, side: str, pipe: Any = None) -> None:
        """Add ``ACTIVE.<side>`` and announce ``answer-event`` (staged on ``pipe`` when one is given)."""
        active = self.keys.active(dial_id, org_id, user_id)
        item = f"ACTIVE.{side}"
        with self._staging(pipe) as staged:
            staged.lrem(active, 0, item)
            self.keys.push(staged, active, item)
            staged.expire(active, ACTIVE_TTL)
            self._announce(staged, dial_id, org_id, user_id, {"type": "answer-event", "side": side})

    def side_hung_up(
        self, dial_id: str, org_id: str, user_id: str, side: str, extra: JsonDict, pipe: Any = None
    ) -> None:
        """Remove the side from the active list and announce ``hangup-event``."""
        active = self.keys.active(dial_id, org_id, user_id)
        with self._staging(pipe) as staged:
            staged.lrem(active, 0, f"ACTIVE.{side}")
            self._announce(staged, dial_id, org_id, user_id, {"type": "hangup-event", "side": side, **extra})

    @contextlib.contextmanager
    def _staging(self, pipe: Any) -> Iterator[Any]:
        """Stage commands on ``pipe``, or on a transaction of our own that is executed at the end."""
        if pipe is not None:
            yield pipe
            return
        own = self.transaction()
        yield own
        own.execute()

    def transaction(self) -> Any:
        """Where a change and its announcement are staged: a MULTI/EXEC (on a cluster, an ordered stage)."""
        return self.client.pipeline(transaction=True)

    def fail(
        self,
        dial_id: str,
        org_id: str | None,
        user_id: str | None,
        cause: str,
        *,
        reason: str = "",
        end_call: bool = True,
        retryable: bool | None = None,
    ) -> None:
        """Announce ``failure``: FreeSWITCH never attempted the call (or the job was refused).

        ``reason`` (an extension beside the contract's ``cause``) says why in words.
        """
        pipe = self.transaction()
        event: dict[str, Any] = {"type": "failure", "cause": cause, **({"reason": reason} if reason else {})}
        if retryable is not None:
            event["retryable"] = retryable
        if org_id is not None and user_id is not None:
            self._announce(pipe, dial_id, org_id, user_id, event)
        else:
            pipe.publish(self.keys.channel(dial_id), encode(event))
        if end_call:
            self._end(pipe, dial_id)
        pipe.execute()
        metrics.CALLS_FAILED.labels(metrics.cause_label(cause)).inc()

    def end_call(self, dial_id: str, pipe: Any = None) -> None:
        """The call is over: relays leave its channel."""
        with self._staging(pipe) as staged:
            self._end(staged, dial_id)

    def _end(self, pipe: Any, dial_id: str) -> None:
        self._end_script(keys=[Keys.active_calls(), Keys.call(dial_id)], args=[dial_id], client=pipe)

    def call_sent(self, dial_id: str, node: str) -> None:
        """FreeSWITCH node ``node`` accepted the originate: it holds the call until the call ends.

        Inside an actor, the write goes out with the message's ack when the broker can carry it (see
        :mod:`redswitch.ack_writes`): the run's last two writes share a round trip.
        """
        write = ScriptWrite(_SENT_SCRIPT, [Keys.call(dial_id), Keys.active_calls()], [dial_id, node])
        write_with_ack(self.client, write)

    def reply(self, dial_id: str, event: JsonDict, record: Mapping[str, str] | None = None, **fields: str) -> None:
        """Publish an ``ack`` or ``error`` on the call's channel (and, with ``HISTORY_EVENTS=all``, in its user's
        history when the call is known).

        ``record`` is the call record when the caller has it (saves reading it again); ``fields`` are written to
        it in the same transaction, before the announcement.
        """
        if not self.keys.in_history(event):
            record = {}  # published only: no need to know the call's user
        elif record is None:
            record = self.call_record(dial_id)
        pipe = self.transaction()
        if fields:
            self.update_call(dial_id, pipe, **fields)
        if "org_id" in record and "user_id" in record:
            self._announce(pipe, dial_id, record["org_id"], record["user_id"], event)
        else:
            pipe.publish(self.keys.channel(dial_id), encode(event))
        pipe.execute()

    def active_call_record(self, dial_id: str) -> dict[str, str] | None:
        """The call record if the call is still active (one round trip for both reads), else None."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(Keys.call(dial_id))
        pipe.sismember(Keys.active_calls(), dial_id)
        raw, active = pipe.execute()
        if not raw or not active:
            return None
        return {reply_text(k): reply_text(v) for k, v in raw.items()}

    def is_active(self, dial_id: str) -> bool:
        return bool(self.client.sismember(Keys.active_calls(), dial_id))

    def claim_relay(self, dial_id: str, bridge_id: str) -> bool:
        """True when this bridge's relay is (now) the one that executes ``dial_id``'s control messages."""
        alive_prefix = Keys.bridge_alive("")
        owned = scripts.run(
            self.client, _RELAY_OWNER_SCRIPT, [Keys.relay_owner(dial_id)], [bridge_id, alive_prefix, CALL_TTL]
        )
        return bool(owned)

    def job_result(self, job_uuid: str, result: str) -> dict[str, str] | None:
        """Note a bgapi originate's result on its call; the call's dial_id, seen, org_id and user_id (None: not ours).

        One round trip per BACKGROUND_JOB: the listener gets one for every call it follows.
        """
        reply = scripts.run(self.client, _JOB_RESULT_SCRIPT, [Keys.job(job_uuid)], [result])
        if not reply:
            return None
        return dict(zip(("dial_id", "seen", "org_id", "user_id"), map(reply_text, reply), strict=True))

    def update_call(self, dial_id: str, pipe: Any = None, **fields: str) -> None:
        with self._staging(pipe) as staged:
            staged.hset(Keys.call(dial_id), items=[item for pair in fields.items() for item in pair])

    def clear_call_fields(self, dial_id: str, *names: str, pipe: Any = None) -> None:
        with self._staging(pipe) as staged:
            staged.hdel(Keys.call(dial_id), *names)

    def call_record(self, dial_id: str) -> dict[str, str]:
        return {reply_text(k): reply_text(v) for k, v in self.client.hgetall(Keys.call(dial_id)).items()}

    def _announce(self, pipe: Any, dial_id: str, org_id: str, user_id: str, event: JsonDict) -> None:
        """Add to the user's history (when it keeps this event), then publish: one transaction with the state
        change before it."""
        payload = encode(event)
        if self.keys.in_history(event):
            history = self.keys.history(org_id, user_id)
            self.keys.push(pipe, history, payload)
            pipe.expire(history, HISTORY_TTL)
        pipe.publish(self.keys.channel(dial_id), payload)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
