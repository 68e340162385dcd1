-- A background originate's result, noted on its call while the record lives; returns what the listener needs
-- to judge a refusal: {seen, org_id, user_id}, or false when the record is gone.
-- KEYS: call record.  ARGV: the result.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'job_result', ARGV[1])
local seen, org, user = unpack(redis.call('HMGET', KEYS[1], 'seen', 'org_id', 'user_id'))
return {seen or '', org or '', user or ''}
