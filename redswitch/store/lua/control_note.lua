-- A relay heard a control message on a call's channel: which of the call's messages is it? Every relay hears every
-- message, in the order they were published, and asks; the first to ask creates the entry, the others find it.
-- Entries are numbered per digest (the message's text): this relay's message is the first entry of that digest after
-- the last one it matched, skipping entries made before it subscribed (it may have missed those messages). Entries
-- older than the window are dropped. Returns {entry number, the execution that took it or ''}.
-- KEYS: the call's control log.  ARGV: digest, since (ms, Redis clock), window (ms), the last entry number of this
-- digest this relay matched (0: none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local log, d, since, window = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(redis.call('HGET', log, 'c:' .. d) or '0')
local lo = tonumber(redis.call('HGET', log, 'lo:' .. d) or '1')
while lo <= count do
  local at = tonumber(redis.call('HGET', log, 'm:' .. d .. ':' .. lo) or '0')
  if at >= now - window then break end
  redis.call('HDEL', log, 'm:' .. d .. ':' .. lo, 't:' .. d .. ':' .. lo)
  lo = lo + 1
end
redis.call('HSET', log, 'lo:' .. d, lo)
local k = math.max(tonumber(ARGV[4]) + 1, lo)
while k <= count do
  if tonumber(redis.call('HGET', log, 'm:' .. d .. ':' .. k) or '0') >= since then break end
  k = k + 1
end
if k > count then
  k = count + 1
  redis.call('HSET', log, 'c:' .. d, k, 'm:' .. d .. ':' .. k, now)
end
redis.call('PEXPIRE', log, window * 2)
return {k, redis.call('HGET', log, 't:' .. d .. ':' .. k) or ''}
