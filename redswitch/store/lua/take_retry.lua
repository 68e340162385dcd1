-- Exactly one copy of a throttle retry's message starts it: back to 'claimed', for the usual admission and dial.
-- KEYS: call record.  ARGV: the retry's number.
local count, taken, seen, state = unpack(redis.call('HMGET', KEYS[1], 'throttled', 'retry_taken', 'seen', 'state'))
if count ~= ARGV[1] or taken == ARGV[1] or seen == '1' or state == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'retry_taken', ARGV[1])
redis.call('HDEL', KEYS[1], 'dialling_since', 'uncertain')
return 1
