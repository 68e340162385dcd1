-- Cluster: the record's part of sent.lua.
-- KEYS: call record.  ARGV: node.
if redis.call('HGET', KEYS[1], 'state') ~= 'dialling' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent', 'node', ARGV[1])
return 1
