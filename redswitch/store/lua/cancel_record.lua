-- Cancel a call that was never dialled: only from 'claimed' (waiting for admission, or a refused connection).
-- KEYS: call record.
if redis.call('HGET', KEYS[1], 'state') ~= 'claimed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
return 1
