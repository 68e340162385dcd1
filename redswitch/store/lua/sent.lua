-- The originate was accepted: the node holds the call, unless the call ended meanwhile. Only from 'dialling':
-- the listener may already have taken the call back (a throttled originate to send again).
-- KEYS: call record, active calls, the node's call set.  ARGV: dial_id, node.
if redis.call('HGET', KEYS[1], 'state') ~= 'dialling' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent', 'node', ARGV[2])
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
