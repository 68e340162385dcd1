-- Sessions per second (SWITCH_CPS, GATEWAY_CPS), shared by admit.lua and rate_main.lua: per limiter a sliding
-- log of the sessions really started (`logs[i]`) over `window` seconds, and the next free slot for deferred
-- calls (`nexts[i]`), so that a burst goes out in order and evenly. `admit_at` is the slot this call already
-- holds (nil: none). Returns {verdict = 'go'} or {verdict = 'wait', ms, reason, binding, first, slot, position}
-- (slot and position only when a new slot was taken).
local function rate_decide(dial, cost, window, now, logs, nexts, limits, reasons, admit_at)
  local wait, reason, binding = 0, '', 1
  for i = 1, #logs do
    local c = math.min(cost, limits[i])
    redis.call('ZREMRANGEBYSCORE', logs[i], '-inf', now - window)
    local n = redis.call('ZCARD', logs[i])
    if n + c > limits[i] then
      local index = n + c - limits[i] - 1
      local w = tonumber(redis.call('ZRANGE', logs[i], index, index, 'WITHSCORES')[2]) + window - now
      if w > wait then wait, reason, binding = w, reasons[i], i end
    end
  end
  if wait <= 0 then
    for i = 1, #logs do
      for j = 1, math.min(cost, limits[i]) do
        redis.call('ZADD', logs[i], now, dial .. ':' .. j .. ':' .. string.format('%.6f', now))
      end
      redis.call('EXPIRE', logs[i], 60)
    end
    return {verdict = 'go'}
  end
  if admit_at and admit_at > now then
    return {verdict = 'wait', ms = math.ceil((admit_at - now) * 1000), reason = reason, binding = binding}
  end
  if admit_at then return {verdict = 'wait', ms = math.ceil(wait * 1000), reason = reason, binding = binding} end
  local slot = now + wait
  for i = 1, #nexts do
    local nxt = tonumber(redis.call('GET', nexts[i]) or '0')
    if nxt > slot then slot = nxt end
  end
  for i = 1, #nexts do
    redis.call('SET', nexts[i], string.format('%.6f', slot + math.min(cost, limits[i]) * window / limits[i]), 'EX', 60)
  end
  local b = limits[binding]
  local ahead = math.floor((slot - now) * b / (math.min(cost, b) * window))
  return {verdict = 'wait', ms = math.ceil((slot - now) * 1000), reason = reason, binding = binding,
          first = slot - now >= 1, slot = slot, position = ahead + 1}
end
