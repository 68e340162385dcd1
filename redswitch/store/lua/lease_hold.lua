-- Take the lease if free, or renew it if ours: one script, so two holders can never both have it.
-- KEYS: the lease.  ARGV: holder, TTL in ms.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
