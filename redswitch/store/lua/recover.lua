-- A listener that starts following a node announces what happened there while nobody followed it, as read from
-- the switch's channels: answers and hangups, each only when Redis does not hold it already (the previous owner
-- may have published it), so nothing is announced twice. Refused whole (-1) unless the listener holds the lease.
-- KEYS: [1] the node's listener lease, [2] active calls, [3] the firehose, then per change: call record, active
--       list, history, the node's call set, and with the event log on the call's event stream.
-- ARGV: [1] lease token, [2] active TTL, [3] history TTL, [4] lifecycle channel, [5] the lists' order (L or R),
--       [6] event log ('1': on, '': off), [7] stream TTL, [8] stream max length, [9] firehose max length,
--       then per change: kind (A answered, H hung up), side, dial_id (the call's channel is named after it),
--       event (encoded), lifecycle message.  Returns the number of changes announced.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local live, firehose, active_ttl, history_ttl, lifecycle = KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4]
local push = ARGV[5] == 'R' and 'RPUSH' or 'LPUSH'
local logged = ARGV[6] == '1'
local stream_ttl, stream_max, fire_max = ARGV[7], ARGV[8], ARGV[9]
local per = logged and 5 or 4
local cfg = {push = push, active_ttl = active_ttl, history_ttl = history_ttl, live = live, lifecycle = lifecycle,
             logged = logged, firehose = firehose, stream_ttl = stream_ttl, stream_max = stream_max,
             fire_max = fire_max}
local done = 0
for i = 0, (#ARGV - 9) / 5 - 1 do
  local k = 4 + per * i
  local call, active, history, node_calls = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local a = 10 + 5 * i
  local kind, side, dial, event, ended = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local item = 'ACTIVE.' .. side
  local listed = redis.call('LPOS', active, item) ~= false
  local owed
  if redis.call('SISMEMBER', live, dial) == 0 then
    owed = false
  elseif kind == 'A' then
    owed = not listed
  else
    owed = listed or side == '0'
  end
  if owed then
    apply_change(kind, side, call, active, history, node_calls, KEYS[k + 4], dial, dial, event, ended, cfg)
    done = done + 1
  end
end
return done
