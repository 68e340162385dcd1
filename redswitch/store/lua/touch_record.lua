-- Cluster: the call record's part of events.lua for one change (it never creates a record).
-- KEYS: call record.  ARGV: kind (S, A, H), side.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local kind, side = ARGV[1], ARGV[2]
if kind == 'A' then
  if side == '2' then redis.call('HSET', KEYS[1], 'barger_answered', '1') end
else
  redis.call('HSET', KEYS[1], 'seen', '1')
  if kind == 'H' and side == '2' then
    redis.call('HDEL', KEYS[1], 'barger_uuid', 'barger_mode', 'barger_prev_mode', 'barger_answered')
  end
end
return 1
