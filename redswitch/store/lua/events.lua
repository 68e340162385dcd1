-- The listener's hot path: a whole batch of channel changes, in order, in one call. Each change's state writes
-- come before the PUBLISH that announces it. A batch number the listener already applied is skipped, so a retry
-- after a lost reply publishes nothing twice.
-- KEYS: [1] the listener's applied-batch key, [2] active calls, then per change: call record, active list,
--       history, the node's call set.
-- ARGV: [1] active TTL, [2] history TTL, [3] batch number (0: none), [4] lifecycle channel, [5] the lists' order
--       (L: newest first, as the original's LPUSH; R: appended), then per change: kind (S seen, A answered,
--       H hung up), side, dial_id, event (encoded), lifecycle message.
-- Fencing (listener hand-over): the last KEY is the node's listener lease, the last ARGV the token this listener
-- holds it with ('': unfenced); a batch from a listener that no longer holds the lease is refused whole (-1).
local fence_key, fence_token = table.remove(KEYS), table.remove(ARGV)
if fence_token ~= '' and redis.call('GET', fence_key) ~= fence_token then return -1 end
local active_ttl, history_ttl, batch, lifecycle = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local push = ARGV[5] == 'R' and 'RPUSH' or 'LPUSH'
if batch > 0 and batch <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
local live = KEYS[2]
local changes = (#ARGV - 5) / 5
for i = 0, changes - 1 do
  local call, active, history, node_calls = KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i], KEYS[6 + 4 * i]
  local a = 6 + 5 * i
  local kind, side, dial, event, ended = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
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
    redis.call('PUBLISH', dial, event)
    if kind == 'H' and side == '0' then
      redis.call('SREM', live, dial)
      redis.call('SREM', node_calls, dial)
      redis.call('PUBLISH', lifecycle, ended)
    end
  end
end
if batch > 0 then redis.call('SET', KEYS[1], batch, 'EX', active_ttl) end
return 1
