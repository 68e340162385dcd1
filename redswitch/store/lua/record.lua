-- A call's record, shared by claim.lua and claim_record.lua: created from ARGV[first..] (field/value pairs) with
-- the TTL `ttl` unless it exists; returns nil when created, else the existing record's field/value pairs.
local function create_record(key, ttl, first)
  if redis.call('EXISTS', key) == 1 then return redis.call('HGETALL', key) end
  local record = {}
  for i = first, #ARGV do record[#record + 1] = ARGV[i] end
  redis.call('HSET', key, unpack(record))
  redis.call('EXPIRE', key, ttl)
  return nil
end
