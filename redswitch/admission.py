"""Admission control: pace originations to what the switch and the carriers accept, cap an org's concurrent calls.

FreeSWITCH refuses an originate past its ``sessions-per-second`` or ``max-sessions`` with
``-ERR DESTINATION_OUT_OF_ORDER`` and no channel at all, so a burst that is not paced here is throttled silently
by the switch. Every limit lives in Redis, shared by every worker process, and is checked by one script per
attempt (:data:`_ADMIT_SCRIPT`):

* **Org concurrency** (``ORG_MAX_CALLS``): a slot per call, held from the originate until the call ends. A slot
  counts only while its dial_id is in ``redswitch:active`` — the set every call-ending path (the listener's
  side-0 hangup, ``failure``, the reconciler) leaves — so a slot can never leak past its call. Jobs over the
  limit wait in a FIFO per org; the caller gets one ``queued`` event when its job first waits.
* **Sessions per second** to the switch (``SWITCH_CPS``) and per gateway (``GATEWAY_CPS``): a sliding log of
  the sessions really started, over a window a little longer than FreeSWITCH's second so that the jitter between
  our clock and the switch's cannot push two windows' worth into one. A click-to-call costs **two sessions**:
  side 0 at the originate and side 1 when side 0 answers; both are counted at the originate.
  Deferred jobs get a slot in a schedule (one per ``window * 2 / limit``) so that a burst goes out in order and
  evenly instead of retrying all at once.

A deferred job is not failed and not retried: its record goes back to ``claimed`` (FreeSWITCH surely does not
have it) and its message is sent again with a delay. A second copy of the message (a redelivery) is harmless:
only one run can move the record from ``claimed`` to ``dialling`` (:func:`begin_dial`).

Throttled originates (``-ERR`` with no side 0 ever seen, a retryable cause) are sent again by the listener
through :func:`retry_throttled`; a result after side 0 existed is reported and never retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis

from redswitch import scripts
from redswitch.config import Settings
from redswitch.messages import AspCall
from redswitch.redis_client import is_cluster_client, reply_text
from redswitch.state import HISTORY_TTL, Keys

logger = logging.getLogger(__name__)

#: A click-to-call starts two sessions (side 0 at the originate, side 1 when side 0 answers).
SESSIONS_PER_CALL = 2
#: FreeSWITCH counts sessions per second; our window is longer by this margin (clock jitter, side 1's delay).
WINDOW = 1.2
#: A waiting job asks again this often (it is the delay between a freed org slot and the next call going out).
POLL_MS = 250
#: A waiter that has not asked for this long is presumed gone (its message lost) and loses its place.
STALE_WAITER = 15.0
#: Waits up to this long are slept in the worker thread; longer ones give the thread back.
SHORT_WAIT = 0.05
#: Causes that mean "try again later" when the switch refused the originate before side 0 existed.
RETRYABLE_CAUSES = frozenset(
    {
        "DESTINATION_OUT_OF_ORDER",
        "NORMAL_TEMPORARY_FAILURE",
        "SWITCH_CONGESTION",
        "NETWORK_OUT_OF_ORDER",
        "RECOVERY_ON_TIMER_EXPIRE",
        "NORMAL_CIRCUIT_CONGESTION",
        "ESL_UNREACHABLE",
    }
)
#: Backoff of the listener's re-send of a throttled originate: first delay, cap.
THROTTLE_BACKOFF = (0.5, 10.0)


def is_retryable(cause: str) -> bool:
    """Whether a cause is transient (worth another attempt later), reported beside ``cause`` in events."""
    return cause in RETRYABLE_CAUSES


def org_slots(org_id: str) -> str:
    return f"redswitch:admission:org:{org_id}:calls"


def org_waiting(org_id: str) -> str:
    return f"redswitch:admission:org:{org_id}:waiting"


def rate_log(kind: str, name: str) -> str:
    return f"redswitch:admission:{kind}:{name}:sent"


_ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dial, org_max, cost, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stale = tonumber(ARGV[5])
local function announce(event)
  if ARGV[8] ~= '' then
    redis.call(ARGV[8] == 'R' and 'RPUSH' or 'LPUSH', KEYS[6], event)
    redis.call('EXPIRE', KEYS[6], ARGV[7])
  end
  redis.call('PUBLISH', ARGV[6], event)
end
if org_max > 0 and not redis.call('ZSCORE', KEYS[2], dial) then
  local count = redis.call('ZCARD', KEYS[2])
  if count >= org_max then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      if redis.call('SISMEMBER', KEYS[5], m) == 0 then redis.call('ZREM', KEYS[2], m) end
    end
    count = redis.call('ZCARD', KEYS[2])
  end
  local head
  while true do
    head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head or head == dial then break end
    local polled = tonumber(redis.call('HGET', 'redswitch:call:' .. head, 'polled_at') or '0')
    if now - polled <= stale and redis.call('SISMEMBER', KEYS[5], head) == 1 then break end
    redis.call('ZREM', KEYS[3], head)
  end
  if count >= org_max or (head and head ~= dial) then
    redis.call('HSET', KEYS[1], 'polled_at', string.format('%.3f', now))
    local rank = redis.call('ZRANK', KEYS[3], dial)
    if rank then return {'queued', rank + 1, 0, 'org_max_calls'} end
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), dial)
    redis.call('EXPIRE', KEYS[3], 86400)
    rank = redis.call('ZRANK', KEYS[3], dial)
    announce('{"type": "queued", "reason": "org_max_calls", "position": ' .. (rank + 1) .. '}')
    return {'queued', rank + 1, 1, 'org_max_calls'}
  end
  redis.call('ZREM', KEYS[3], dial)
  redis.call('ZADD', KEYS[2], now, dial)
  redis.call('EXPIRE', KEYS[2], 86400)
end
local limiters = (#KEYS - 6) / 2
local wait, reason, binding = 0, '', 1
for i = 1, limiters do
  local log, limit = KEYS[5 + 2 * i], tonumber(ARGV[8 + i])
  local c = math.min(cost, limit)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  local n = redis.call('ZCARD', log)
  if n + c > limit then
    local index = n + c - limit - 1
    local w = tonumber(redis.call('ZRANGE', log, index, index, 'WITHSCORES')[2]) + window - now
    if w > wait then wait, reason, binding = w, ARGV[8 + limiters + i], i end
  end
end
if wait <= 0 then
  for i = 1, limiters do
    local log = KEYS[5 + 2 * i]
    for j = 1, math.min(cost, tonumber(ARGV[8 + i])) do
      redis.call('ZADD', log, now, dial .. ':' .. j .. ':' .. string.format('%.6f', now))
    end
    redis.call('EXPIRE', log, 60)
  end
  redis.call('HDEL', KEYS[1], 'admit_at', 'polled_at')
  return {'go', 0, 0, ''}
end
local slot = tonumber(redis.call('HGET', KEYS[1], 'admit_at') or '')
if slot and slot > now then return {'wait', math.ceil((slot - now) * 1000), 0, reason} end
if slot then return {'wait', math.ceil(wait * 1000), 0, reason} end
slot = now + wait
for i = 1, limiters do
  local nxt = tonumber(redis.call('GET', KEYS[6 + 2 * i]) or '0')
  if nxt > slot then slot = nxt end
end
for i = 1, limiters do
  local limit = tonumber(ARGV[8 + i])
  local step = math.min(cost, limit) * window / limit
  redis.call('SET', KEYS[6 + 2 * i], string.format('%.6f', slot + step), 'EX', 60)
end
redis.call('HSET', KEYS[1], 'admit_at', string.format('%.6f', slot))
local blimit = tonumber(ARGV[8 + binding])
local ahead = math.floor((slot - now) * blimit / (math.min(cost, blimit) * window))
local first = 0
if slot - now >= 1 then
  first = 1
  announce('{"type": "queued", "reason": "' .. reason .. '", "position": ' .. (ahead + 1) .. '}')
end
return {'wait', math.ceil((slot - now) * 1000), first, reason}
"""

# Only one run of a call's messages may start an attempt: the state it read must still be there.
_BEGIN_DIAL_SCRIPT = """
local state, since = unpack(redis.call('HMGET', KEYS[1], 'state', 'dialling_since'))
if state ~= ARGV[1] or (since or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dialling', 'dialling_since', ARGV[3])
return 1
"""

# A throttled originate of this attempt, side 0 never seen: note it, at most ARGV[2] times. The state is left alone
# (the actor may still be writing ``sent``); the re-sent message takes the retry with _TAKE_RETRY_SCRIPT.
_THROTTLED_SCRIPT = """
local state, seen, job_uuid, count, job = unpack(
  redis.call('HMGET', KEYS[1], 'state', 'seen', 'job_uuid', 'throttled', 'job'))
if (state ~= 'sent' and state ~= 'dialling') or seen == '1' or job_uuid ~= ARGV[1] or not job then return false end
local n = (tonumber(count) or 0) + 1
if n > tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'throttled', n)
redis.call('HDEL', KEYS[1], 'job_result', 'admit_at')
return {n, job}
"""

# Exactly one copy of a throttle retry's message starts it: back to claimed, for the usual admission and dial.
_TAKE_RETRY_SCRIPT = """
local count, taken, seen = unpack(redis.call('HMGET', KEYS[1], 'throttled', 'retry_taken', 'seen'))
if count ~= ARGV[1] or taken == ARGV[1] or seen == '1' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'retry_taken', ARGV[1])
redis.call('HDEL', KEYS[1], 'dialling_since')
return 1
"""

#: The key a listener's re-sent job carries: which throttle retry it is.
RETRY_KEY = "throttle_retry"


@dataclasses.dataclass(frozen=True)
class Decision:
    """``go`` (dial now), ``wait`` (a rate limit: ask again after ``delay``) or ``queued`` (an org limit)."""

    verdict: str
    delay: float
    reason: str = ""
    position: int = 0
    announced: bool = False


class Admission:
    """Checks a call against every limit in one atomic script; see the module docstring."""

    def __new__(cls, client: redis.Redis, settings: Settings) -> Admission:
        """On a Redis Cluster, :class:`~redswitch.cluster_admission.ClusterAdmission` (its keys span slots)."""
        if cls is Admission and is_cluster_client(client):
            from redswitch.cluster_admission import ClusterAdmission

            cls = ClusterAdmission
        return super().__new__(cls)

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings)
        self._gateways = settings.gateway_cps_limits()
        self._orgs = settings.org_max_calls_limits()

    def check(self, call: AspCall, node: str) -> Decision:
        """Take the call's org slot and its sessions now, or say how long to wait."""
        limiters = self._limiters(call, node)
        org_max = self._orgs.get(call.org_id, self._orgs.get("*", 0))
        if not limiters and not org_max:
            return Decision("go", 0.0, "", 0, False)  # no limit applies: no round trip on the hot path
        keys = [
            Keys.call(call.dial_id),
            org_slots(call.org_id),
            org_waiting(call.org_id),
            "redswitch:admission:seq",
            Keys.active_calls(),
            self.keys.history(call.org_id, call.user_id),
        ]
        for kind, name, _limit in limiters:
            keys += [rate_log(kind, name), f"redswitch:admission:{kind}:{name}:next"]
        args: list[str | int | float] = [call.dial_id, org_max, SESSIONS_PER_CALL, WINDOW, STALE_WAITER]
        # ARGV[8]: the history's order, or '' when the history keeps call events only (``queued`` is published only)
        in_history = self.keys.in_history({"type": "queued"})
        args += [self.keys.channel(call.dial_id), HISTORY_TTL, self.keys.push_flag if in_history else ""]
        args += [limit for _kind, _name, limit in limiters] + [f"{kind}_cps" for kind, _name, _limit in limiters]
        verdict, number, first, reason = scripts.run(self.client, _ADMIT_SCRIPT, keys, args)
        verdict, reason = reply_text(verdict), reply_text(reason)
        if verdict == "queued":
            return Decision("queued", POLL_MS / 1000, reason, int(number), bool(first))
        return Decision(verdict, int(number) / 1000, reason, 0, bool(first))

    def _limiters(self, call: AspCall, node: str) -> list[tuple[str, str, int]]:
        limiters = [("switch", node, self.settings.switch_cps)] if self.settings.switch_cps > 0 else []
        gateway = self._gateways.get(call.call_provider, self._gateways.get("*", 0))
        return limiters + ([("gateway", call.call_provider, gateway)] if gateway > 0 else [])


def admit(admission: Admission, call: AspCall, node: str, resend: Callable[[int], object]) -> bool:
    """True: dial now. False: the job was deferred — its record is ``claimed`` again and ``resend(delay_ms)`` ran.

    Short waits (a few ms to the next free session) are slept; anything longer gives the worker thread back.
    """
    client, settings = admission.client, admission.settings
    node = node or f"{settings.esl_url}:{settings.esl_port}"
    decision = admission.check(call, node)
    while decision.verdict == "wait" and decision.delay <= SHORT_WAIT:
        time.sleep(decision.delay)
        decision = admission.check(call, node)
    if decision.verdict == "go":
        return True
    client.hset(Keys.call(call.dial_id), "state", "claimed")
    resend(max(1, math.ceil(decision.delay * 1000)))
    if decision.announced:
        logger.info("dial_id=%s queued (%s), position %d", call.dial_id, decision.reason, decision.position)
    return False


def begin_dial(client: redis.Redis, dial_id: str, record: dict[str, str]) -> bool:
    """Move the record from the state this run read to ``dialling``; False when another run got there first."""
    args = [record.get("state", ""), record.get("dialling_since", ""), f"{time.time():.3f}"]
    return bool(scripts.run(client, _BEGIN_DIAL_SCRIPT, [Keys.call(dial_id)], args))


def take_retry(client: redis.Redis, dial_id: str, job: dict[str, object]) -> dict[str, str] | None:
    """A listener's re-send of a throttled originate: the record to dial from, or None (stale, or taken)."""
    retry = job.pop(RETRY_KEY, None)
    if not isinstance(retry, int) or not client.eval(_TAKE_RETRY_SCRIPT, 1, Keys.call(dial_id), str(retry)):
        return None
    return {reply_text(k): reply_text(v) for k, v in client.hgetall(Keys.call(dial_id)).items()}


def job_field(call: AspCall) -> str:
    """The job as stored in the call record, so that the listener can send a throttled originate again."""
    return json.dumps({"type": "asp-call", **call.to_dict()})


class ThrottleRetry:
    """The listener's side: a refused originate whose side 0 never existed is sent again, with backoff."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._broker: dramatiq.Broker | None = None

    def retry(self, dial_id: str, job_uuid: str, cause: str) -> bool:
        """True when the attempt was put back and re-enqueued; False: report it (not retryable, or retried out)."""
        if not is_retryable(cause):
            return False
        found = self.client.eval(_THROTTLED_SCRIPT, 1, Keys.call(dial_id), job_uuid, self.settings.throttle_retries)
        if not found:
            return False
        attempt, job = int(found[0]), json.loads(reply_text(found[1]))
        job[RETRY_KEY] = attempt
        first, cap = THROTTLE_BACKOFF
        delay_ms = int(min(cap, first * 2 ** (attempt - 1)) * 1000)
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="redswitch-calls", actor_name="asp_call", args=(job,), kwargs={}, options={}
        )
        self.broker().enqueue(message, delay=delay_ms)
        logger.warning(
            "dial_id=%s originate refused (%s) before side 0 existed; retry %d in %d ms",
            dial_id,
            cause,
            attempt,
            delay_ms,
        )
        return True

    def broker(self) -> dramatiq.Broker:
        if self._broker is None:
            from redswitch.broker import build_broker

            self._broker = build_broker(self.settings)
        return self._broker
