-- An org's concurrency (ORG_MAX_CALLS), shared by admit.lua and org_main.lua. A slot per call, counted only
-- while ended(dial_id) is false; beyond the limit, a FIFO line in which a waiter keeps its place while it asks
-- again within `stale` seconds (polled: when each waiter last asked). Returns {'in'} or
-- {'queued', position, 1 when the waiter just joined the line else 0}.
local function org_decide(slots, waiting, seq, polled, dial, org_max, now, stale, ended)
  if redis.call('ZSCORE', slots, dial) then return {'in'} end
  local count = redis.call('ZCARD', slots)
  if count >= org_max then
    for _, m in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
      if ended(m) then redis.call('ZREM', slots, m) end
    end
    count = redis.call('ZCARD', slots)
  end
  local head
  while true do
    head = redis.call('ZRANGE', waiting, 0, 0)[1]
    if not head or head == dial then break end
    local asked = tonumber(redis.call('HGET', polled, head) or '0')
    if now - asked <= stale and not ended(head) then break end
    redis.call('ZREM', waiting, head)
    redis.call('HDEL', polled, head)
  end
  if count >= org_max or (head and head ~= dial) then
    redis.call('HSET', polled, dial, string.format('%.3f', now))
    redis.call('EXPIRE', polled, 86400)
    local rank = redis.call('ZRANK', waiting, dial)
    if rank then return {'queued', rank + 1, 0} end
    redis.call('ZADD', waiting, redis.call('INCR', seq), dial)
    redis.call('EXPIRE', waiting, 86400)
    return {'queued', redis.call('ZRANK', waiting, dial) + 1, 1}
  end
  redis.call('ZREM', waiting, dial)
  redis.call('HDEL', polled, dial)
  redis.call('ZADD', slots, now, dial)
  redis.call('EXPIRE', slots, 86400)
  return {'in'}
end
