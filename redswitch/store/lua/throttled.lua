-- A throttled originate of this attempt, side 0 never seen: note it, at most ARGV[2] times, and return
-- {count, job}. The state is left alone (the actor may still be writing 'sent'); the re-sent message takes the
-- retry with take_retry.lua.
-- KEYS: call record.  ARGV: the attempt's Job-UUID, the most retries.
local state, seen, job_uuid, count, job = unpack(
  redis.call('HMGET', KEYS[1], 'state', 'seen', 'job_uuid', 'throttled', 'job'))
if (state ~= 'sent' and state ~= 'dialling') or seen == '1' or job_uuid ~= ARGV[1] or not job then return false end
local n = (tonumber(count) or 0) + 1
if n > tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'throttled', n)
redis.call('HDEL', KEYS[1], 'job_result', 'admit_at')
return {n, job}
