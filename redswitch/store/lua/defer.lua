-- A limit deferred the call: back to 'claimed' (FreeSWITCH surely does not have it), unless it was cancelled.
-- KEYS: call record.
if redis.call('HGET', KEYS[1], 'state') == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'claimed')
return 1
