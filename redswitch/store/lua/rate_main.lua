-- Cluster: the sessions-per-second decision alone, in the rates' slot (one clock for every limiter). The call's
-- admit_at was read just before; the caller writes the new one and announces a first long wait.
-- KEYS: per limiter its log and its next slot.
-- ARGV: dial_id, sessions per call, window, admit_at ('' for none), then per limiter: limit, then reason.
-- Returns {verdict, ms, first, reason, new admit_at ('' when unchanged), position}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS / 2
local logs, nexts, limits, reasons = {}, {}, {}, {}
for i = 1, n do
  logs[i], nexts[i], limits[i], reasons[i] = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[4 + i]), ARGV[4 + n + i]
end
local rate = rate_decide(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now, logs, nexts, limits, reasons,
                         tonumber(ARGV[4]))
if rate.verdict == 'go' then return {'go', 0, 0, '', '', 0} end
local slot = rate.slot and string.format('%.6f', rate.slot) or ''
return {'wait', rate.ms, rate.first and 1 or 0, rate.reason, slot, rate.position or 0}
