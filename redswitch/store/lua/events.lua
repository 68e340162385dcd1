-- The listener's hot path: a whole batch of channel changes, in order, in one call. Each change's state writes
-- come before the PUBLISH that announces it. A batch number the listener already applied is skipped, so a retry
-- after a lost reply publishes nothing twice.
-- KEYS: [1] the listener's applied-batch key, [2] active calls, then per call of the batch: its record, active
--       list, history and its node's call set.
-- ARGV: [1] active TTL, [2] history TTL, [3] batch number (0: none), [4] lifecycle channel, [5] the lists' order
--       (L: newest first, as the original's LPUSH; R: appended), [6] the number of calls, then per call its dial_id,
--       its channel and its lifecycle end message, then per change: kind and side (S seen, A answered, H hung up: 'A0'), the call's index (from 0), the
--       encoded event.
local active_ttl, history_ttl, batch, lifecycle = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local push = ARGV[5] == 'R' and 'RPUSH' or 'LPUSH'
if batch > 0 and batch <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
local live = KEYS[2]
local calls = tonumber(ARGV[6])
for a = 7 + 3 * calls, #ARGV, 3 do
  local kind, side = string.sub(ARGV[a], 1, 1), string.sub(ARGV[a], 2)
  local slot, event = tonumber(ARGV[a + 1]), ARGV[a + 2]
  local dial, channel, ended = ARGV[7 + 3 * slot], ARGV[8 + 3 * slot], ARGV[9 + 3 * slot]
  local call, active, history = KEYS[3 + 4 * slot], KEYS[4 + 4 * slot], KEYS[5 + 4 * slot]
  local node_calls = KEYS[6 + 4 * slot]
  local known = redis.call('EXISTS', call) == 1
  if kind == 'S' then
    if known then redis.call('HSET', call, 'seen', '1') end
  else
    local item = 'ACTIVE.' .. side
    redis.call('LREM', active, 0, item)
    if kind == 'A' then
      redis.call(push, active, item)
      redis.call('EXPIRE', active, active_ttl)
      if side == '2' and known then redis.call('HSET', call, 'barger_answered', '1') end
    elseif known then
      redis.call('HSET', call, 'seen', '1')
      if side == '2' then
        redis.call('HDEL', call, 'barger_uuid', 'barger_mode', 'barger_prev_mode', 'barger_answered')
      end
    end
    redis.call(push, history, event)
    redis.call('EXPIRE', history, history_ttl)
    redis.call('PUBLISH', channel, event)
    if kind == 'H' and side == '0' then
      redis.call('SREM', live, dial)
      redis.call('SREM', node_calls, dial)
      redis.call('PUBLISH', lifecycle, ended)
    end
  end
end
if batch > 0 then redis.call('SET', KEYS[1], batch, 'EX', active_ttl) end
return 1
