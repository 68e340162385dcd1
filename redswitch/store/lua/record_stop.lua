-- Cluster: the call record's part of a RECORD_STOP (change.lua's announce_change): `recording` is cleared when it
-- names the file that stopped.  KEYS: call record.  ARGV: the file's name.
if redis.call('HGET', KEYS[1], 'recording') == ARGV[1] then return redis.call('HDEL', KEYS[1], 'recording') end
return 0
