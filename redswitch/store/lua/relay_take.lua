-- Keep or take the ownership of a call's control messages: taken when nobody owns it, or when the owner is
-- the one the caller saw dead a moment ago (compare-and-set). Returns {1} when the caller owns it now, {0, owner}
-- when another bridge does, {-1} when the call is not active (KEYS[2] given: a single Redis checks it here).
-- KEYS: the relay owner key[, active calls].  ARGV: this bridge, the owner seen dead ('' for none), TTL, dial_id.
if KEYS[2] and redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 0 then return {-1} end
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return {1} end
if (owner or '') ~= ARGV[2] then return {0, owner} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return {1}
