-- The listener's hot path: a whole batch of channel changes, in order, in one call. Each change's state writes
-- come before the PUBLISH that announces it (and, with the event log on, its entries in the call's stream and the
-- firehose, just before the PUBLISH). A batch number the listener already applied is skipped, so a retry after a
-- lost reply publishes (and logs) nothing twice.
-- KEYS: [1] the listener's applied-batch key, [2] active calls, [3] the firehose, then per call of the batch: its
--       record, active list, history, its node's call set, and with the event log on its event stream.
-- ARGV: [1] active TTL, [2] history TTL, [3] batch number (0: none), [4] lifecycle channel, [5] the lists' order
--       (L: newest first, as the original's LPUSH; R: appended), [6] event log ('1': on, '': off), [7] stream TTL,
--       [8] stream max length, [9] firehose max length, [10] the number of calls, then per call its dial_id, its
--       channel and its lifecycle end message, then per change: kind and side ('A0': S seen, A answered, H hung
--       up, R/T a recording started/stopped, E early media, r/t/e the same kept in the history too), the call's
--       index (from 0), the encoded event.
-- Fencing (listener hand-over): the last KEY is the node's listener lease, the last ARGV the token this listener
-- holds it with ('': unfenced); a batch from a listener that no longer holds the lease is refused whole (-1).
local fence_key, fence_token = table.remove(KEYS), table.remove(ARGV)
if fence_token ~= '' and redis.call('GET', fence_key) ~= fence_token then return -1 end
local active_ttl, history_ttl, batch, lifecycle = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local push = ARGV[5] == 'R' and 'RPUSH' or 'LPUSH'
local logged = ARGV[6] == '1'
local stream_ttl, stream_max, fire_max = ARGV[7], ARGV[8], ARGV[9]
if batch > 0 and batch <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
local live, firehose = KEYS[2], KEYS[3]
local cfg = {push = push, active_ttl = active_ttl, history_ttl = history_ttl, live = live, lifecycle = lifecycle,
             logged = logged, firehose = firehose, stream_ttl = stream_ttl, stream_max = stream_max,
             fire_max = fire_max}
local per = logged and 5 or 4
local calls = tonumber(ARGV[10])
for a = 11 + 3 * calls, #ARGV, 3 do
  local kind, side = string.sub(ARGV[a], 1, 1), string.sub(ARGV[a], 2)
  local slot, event = tonumber(ARGV[a + 1]), ARGV[a + 2]
  local dial, channel, ended = ARGV[11 + 3 * slot], ARGV[12 + 3 * slot], ARGV[13 + 3 * slot]
  local k = 4 + per * slot
  local call, active, history, node_calls = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if kind == 'S' then
    if redis.call('EXISTS', call) == 1 then redis.call('HSET', call, 'seen', '1') end
  elseif string.find('RTErte', kind, 1, true) then
    announce_change(kind, call, history, KEYS[k + 4], dial, channel, event, cfg)
  else
    apply_change(kind, side, call, active, history, node_calls, KEYS[k + 4], dial, channel, event, ended, cfg)
  end
end
if batch > 0 then redis.call('SET', KEYS[1], batch, 'EX', active_ttl) end
return 1
