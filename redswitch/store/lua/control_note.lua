-- A relay heard a control message on a call's channel: which of the call's messages is it? Every relay hears every
-- message and asks; the first to ask creates the entry, the others find it: the oldest entry with the same digest
-- that this relay has not matched yet, created since this relay subscribed (it may have missed older ones).
-- Entries older than the window are dropped. Returns {id, taker or ''}.
-- KEYS: the call's control log.  ARGV: digest, since (ms, Redis clock), window (ms), ids this relay matched.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local digest, since, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mine = {}
for i = 4, #ARGV do mine[ARGV[i]] = true end
local best
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field = all[i]
  if string.sub(field, 1, 2) == 'm:' then
    local id = string.sub(field, 3)
    local at, d = string.match(all[i + 1], '^(%d+):(.*)$')
    at = tonumber(at)
    if at < now - window then
      redis.call('HDEL', KEYS[1], field, 't:' .. id)
    elseif d == digest and at >= since and not mine[id] and (not best or tonumber(id) < tonumber(best)) then
      best = id
    end
  end
end
if not best then
  best = tostring(redis.call('HINCRBY', KEYS[1], 'seq', 1))
  redis.call('HSET', KEYS[1], 'm:' .. best, now .. ':' .. digest)
end
redis.call('PEXPIRE', KEYS[1], window * 2)
return {best, redis.call('HGET', KEYS[1], 't:' .. best) or ''}
