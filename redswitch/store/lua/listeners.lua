-- Listener membership: note this listener alive now (or gone), drop the silent, return the live ones, sorted.
-- KEYS: [1] the live listeners (sorted set, scored by Redis time in ms).  ARGV: [1] listener, [2] TTL ms,
-- [3] '1' when it is leaving.
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ms, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
return {ms, redis.call('ZRANGE', KEYS[1], 0, -1)}
