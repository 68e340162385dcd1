-- Only one run of a call's messages may start an attempt: the state it read must still be there.
-- KEYS: call record.  ARGV: the state read, its dialling_since, the new dialling_since.
local state, since = unpack(redis.call('HMGET', KEYS[1], 'state', 'dialling_since'))
if state ~= ARGV[1] or (since or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dialling', 'dialling_since', ARGV[3])
redis.call('HDEL', KEYS[1], 'uncertain')
return 1
