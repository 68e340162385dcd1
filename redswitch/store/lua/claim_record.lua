-- Cluster: the call record's part of claim.lua, the only step that decides (one key, so atomic).
-- KEYS: call record.  ARGV: TTL, then the record's field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local record = {}
for i = 2, #ARGV do record[#record + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {1}
