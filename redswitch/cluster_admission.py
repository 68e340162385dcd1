"""Admission control on a Redis Cluster: :data:`~redswitch.admission._ADMIT_SCRIPT` split where slots part.

The single-Redis script reads and writes the call record, ``redswitch:active``, the user's history and the limit
keys at once. On a cluster the decisions stay atomic, each in a script over keys of one slot: an org's slots,
waiting line and counter share the hash tag ``{<org_id>}``, and every sessions-per-second log shares the tag
``{rates}`` (one clock: the TIME of the node holding them). What the decisions need from other slots is read
just before (which of the org's calls are still active, when each waiter last asked), and what they change
elsewhere is written just after, then announced: record first, then the user's history, then the PUBLISH.
"""

from __future__ import annotations

import time
from typing import Any

from redswitch.admission import POLL_MS, SESSIONS_PER_CALL, STALE_WAITER, WINDOW, Admission, Decision
from redswitch.cluster_state import OrderedStage
from redswitch.messages import AspCall
from redswitch.redis_client import reply_text
from redswitch.state import HISTORY_TTL, Keys, encode

#: Waiters at the head of an org's line whose liveness is read before each decision (stale ones are dropped).
HEADS = 16

# An org's concurrency: ARGV[4..] are (dial_id, gone) pairs for the org's calls and first waiters, gone being 1
# when the call ended or the waiter stopped asking STALE_WAITER seconds ago (read before this script runs).
_ORG_SCRIPT = """
local dial, org_max = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], dial) then return {'in', 0, 0} end
local gone = {}
for i = 3, #ARGV, 2 do gone[ARGV[i]] = ARGV[i + 1] == '1' end
local count = redis.call('ZCARD', KEYS[1])
if count >= org_max then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if gone[m] then redis.call('ZREM', KEYS[1], m) end
  end
  count = redis.call('ZCARD', KEYS[1])
end
local head
while true do
  head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head or head == dial or not gone[head] then break end
  redis.call('ZREM', KEYS[2], head)
end
if count >= org_max or (head and head ~= dial) then
  local rank = redis.call('ZRANK', KEYS[2], dial)
  if rank then return {'queued', rank + 1, 0} end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), dial)
  redis.call('EXPIRE', KEYS[2], 86400)
  return {'queued', redis.call('ZRANK', KEYS[2], dial) + 1, 1}
end
local t = redis.call('TIME')
redis.call('ZREM', KEYS[2], dial)
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, dial)
redis.call('EXPIRE', KEYS[1], 86400)
return {'in', 0, 0}
"""

# The sessions-per-second part of _ADMIT_SCRIPT over (log, next) key pairs; ARGV[4] is the record's admit_at
# (read before). Returns verdict, ms, first, reason, the new admit_at ('' when unchanged), the queue position.
_RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dial, cost, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limiters = #KEYS / 2
local wait, reason, binding = 0, '', 1
for i = 1, limiters do
  local log, limit = KEYS[2 * i - 1], tonumber(ARGV[4 + i])
  local c = math.min(cost, limit)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  local n = redis.call('ZCARD', log)
  if n + c > limit then
    local index = n + c - limit - 1
    local w = tonumber(redis.call('ZRANGE', log, index, index, 'WITHSCORES')[2]) + window - now
    if w > wait then wait, reason, binding = w, ARGV[4 + limiters + i], i end
  end
end
if wait <= 0 then
  for i = 1, limiters do
    for j = 1, math.min(cost, tonumber(ARGV[4 + i])) do
      redis.call('ZADD', KEYS[2 * i - 1], now, dial .. ':' .. j .. ':' .. string.format('%.6f', now))
    end
    redis.call('EXPIRE', KEYS[2 * i - 1], 60)
  end
  return {'go', 0, 0, '', '', 0}
end
local slot = tonumber(ARGV[4])
if slot and slot > now then return {'wait', math.ceil((slot - now) * 1000), 0, reason, '', 0} end
if slot then return {'wait', math.ceil(wait * 1000), 0, reason, '', 0} end
slot = now + wait
for i = 1, limiters do
  local nxt = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if nxt > slot then slot = nxt end
end
for i = 1, limiters do
  local limit = tonumber(ARGV[4 + i])
  redis.call('SET', KEYS[2 * i], string.format('%.6f', slot + math.min(cost, limit) * window / limit), 'EX', 60)
end
local blimit = tonumber(ARGV[4 + binding])
local ahead = math.floor((slot - now) * blimit / (math.min(cost, blimit) * window))
local first = (slot - now >= 1) and 1 or 0
return {'wait', math.ceil((slot - now) * 1000), first, reason, string.format('%.6f', slot), ahead + 1}
"""


def org_key(org_id: str, part: str) -> str:
    """An org's admission key on a cluster: ``calls``, ``waiting`` and ``seq`` share the org's slot."""
    return f"redswitch:admission:org:{{{org_id}}}:{part}"


def rate_key(kind: str, name: str, part: str) -> str:
    """A sessions-per-second key on a cluster: every ``sent`` log and ``next`` slot shares one slot."""
    return f"redswitch:admission:{{rates}}:{kind}:{name}:{part}"


class ClusterAdmission(Admission):
    """:class:`Admission` on a Redis Cluster: the org decision, then the rate decision, each atomic in its slot."""

    def check(self, call: AspCall, node: str) -> Decision:
        org_max = self._orgs.get(call.org_id, self._orgs.get("*", 0))
        if org_max > 0:
            verdict, number, first = self._org(call, org_max)
            if reply_text(verdict) == "queued":
                self.client.hset(Keys.call(call.dial_id), "polled_at", f"{self._now():.3f}")
                if first:
                    self._announce(call, {"type": "queued", "reason": "org_max_calls", "position": int(number)})
                return Decision("queued", POLL_MS / 1000, "org_max_calls", int(number), bool(first))
        return self._rates(call, node)

    def _org(self, call: AspCall, org_max: int) -> list[Any]:
        """Read who of the org's calls and first waiters is gone, then decide in the org's slot."""
        slots, waiting = org_key(call.org_id, "calls"), org_key(call.org_id, "waiting")
        members = [reply_text(m) for m in self.client.zrange(slots, 0, -1)]
        heads = [reply_text(m) for m in self.client.zrange(waiting, 0, HEADS - 1)]
        candidates = [m for m in dict.fromkeys(members + heads) if m != call.dial_id]
        pairs: list[str] = []
        if candidates:
            active = self.client.smismember(Keys.active_calls(), candidates)
            pipe = self.client.pipeline(transaction=False)
            for dial_id in candidates:
                pipe.hget(Keys.call(dial_id), "polled_at")
            polled = pipe.execute()
            now = self._now()
            for dial_id, is_active, at in zip(candidates, active, polled, strict=True):
                waiter_stale = dial_id in heads and now - float(reply_text(at or 0)) > STALE_WAITER
                pairs += [dial_id, "1" if not is_active or (waiter_stale and dial_id not in members) else "0"]
        keys = [slots, waiting, org_key(call.org_id, "seq")]
        return list(self.client.eval(_ORG_SCRIPT, len(keys), *keys, call.dial_id, org_max, *pairs))

    def _rates(self, call: AspCall, node: str) -> Decision:
        """Decide in the rates' slot; then update the record (admit_at) and announce a first long wait."""
        limiters = self._limiters(call, node)
        record = Keys.call(call.dial_id)
        if not limiters:
            return Decision("go", 0)  # as on a single Redis: no round trip when no rate limit applies
        keys = [rate_key(kind, name, part) for kind, name, _ in limiters for part in ("sent", "next")]
        admit_at = reply_text(self.client.hget(record, "admit_at") or "")
        args: list[str | int | float] = [call.dial_id, SESSIONS_PER_CALL, WINDOW, admit_at]
        args += [limit for _kind, _name, limit in limiters] + [f"{kind}_cps" for kind, _name, _limit in limiters]
        verdict, ms, first, reason, slot, position = self.client.eval(_RATE_SCRIPT, len(keys), *keys, *args)
        if reply_text(verdict) == "go":
            self.client.hdel(record, "admit_at", "polled_at")
            return Decision("go", 0)
        if reply_text(slot):
            self.client.hset(record, "admit_at", reply_text(slot))
        if first:
            self._announce(call, {"type": "queued", "reason": reply_text(reason), "position": int(position)})
        return Decision("wait", int(ms) / 1000, reply_text(reason), 0, bool(first))

    def _announce(self, call: AspCall, event: dict[str, Any]) -> None:
        """History first (with ``HISTORY_EVENTS=all``), then the PUBLISH, as everywhere on a cluster."""
        history, payload = self.keys.history(call.org_id, call.user_id), encode(event)
        stage = OrderedStage(self.client)
        if self.keys.in_history(event):
            self.keys.push(stage, history, payload)
            stage.expire(history, HISTORY_TTL)
        stage.publish(self.keys.channel(call.dial_id), payload)
        stage.execute()

    def _now(self) -> float:
        """This host's clock, for waiters' ``polled_at``: compared with STALE_WAITER (15 s), far above NTP skew."""
        return time.time()
