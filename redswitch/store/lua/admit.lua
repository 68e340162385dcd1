-- Single Redis: every limit checked for one call in one atomic step (org.lua, then rate.lua), and the first long
-- wait announced with a `queued` event in the same step.
-- KEYS: [1] call record, [2..5] org calls, waiting, seq, polled, [6] active calls, [7] user's history,
--       [8] the call's event stream, [9] the firehose, then per rate limiter: its log, its next slot.
-- ARGV: [1] dial_id, [2] org max (0: none), [3] sessions per call, [4] window, [5] stale waiter seconds,
--       [6] call channel, [7] history TTL, [8] the history's order (L or R), or '' when `queued` stays out of it,
--       [9] the org's queued event template, [10] event log ('1': on, '': off), [11] stream TTL,
--       [12] stream max length, [13] firehose max length,
--       then per limiter: limit, then per limiter: reason, then per limiter: queued event template.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dial, org_max = ARGV[1], tonumber(ARGV[2])
local function announce(event)
  if ARGV[8] ~= '' then
    redis.call(ARGV[8] == 'R' and 'RPUSH' or 'LPUSH', KEYS[7], event)
    redis.call('EXPIRE', KEYS[7], ARGV[7])
  end
  if ARGV[10] == '1' then log_event(KEYS[8], KEYS[9], dial, event, ARGV[11], ARGV[12], ARGV[13]) end
  redis.call('PUBLISH', ARGV[6], event)
end
if org_max > 0 then
  local function ended(m) return redis.call('SISMEMBER', KEYS[6], m) == 0 end
  local org = org_decide(KEYS[2], KEYS[3], KEYS[4], KEYS[5], dial, org_max, now, tonumber(ARGV[5]), ended)
  if org[1] == 'queued' then
    if org[3] == 1 then announce(string.format(ARGV[9], org[2])) end
    return {'queued', org[2], org[3], 'org_max_calls'}
  end
end
local n = (#KEYS - 9) / 2
local logs, nexts, limits, reasons, templates = {}, {}, {}, {}, {}
for i = 1, n do
  logs[i], nexts[i] = KEYS[8 + 2 * i], KEYS[9 + 2 * i]
  limits[i], reasons[i], templates[i] = tonumber(ARGV[13 + i]), ARGV[13 + n + i], ARGV[13 + 2 * n + i]
end
local admit_at = tonumber(redis.call('HGET', KEYS[1], 'admit_at') or '')
local rate = rate_decide(dial, tonumber(ARGV[3]), tonumber(ARGV[4]), now, logs, nexts, limits, reasons, admit_at)
if rate.verdict == 'go' then
  redis.call('HDEL', KEYS[1], 'admit_at')
  return {'go', 0, 0, ''}
end
if rate.slot then redis.call('HSET', KEYS[1], 'admit_at', string.format('%.6f', rate.slot)) end
if rate.first then announce(string.format(templates[rate.binding], rate.position)) end
return {'wait', rate.ms, rate.first and 1 or 0, rate.reason}
