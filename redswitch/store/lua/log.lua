-- The event log, shared by claim.lua, events.lua and admit.lua: every event published on a call's channel is also
-- appended to the call's stream (expiring `ttl` seconds after its last event, capped near `maxlen` entries) and to
-- the firehose, every call's stream (capped near `fire_maxlen` entries; '0': no firehose), in the same step.
local function log_event(stream, firehose, dial, event, ttl, maxlen, fire_maxlen)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', event)
  redis.call('EXPIRE', stream, ttl)
  if fire_maxlen ~= '0' then
    redis.call('XADD', firehose, 'MAXLEN', '~', fire_maxlen, '*', 'dial_id', dial, 'event', event)
  end
end
-- A call's stream, once the call is over: Redis preallocates about 4 KB for a new stream's first node and shrinks it
-- only when the node is full, which a call's handful of events never fills; DUMP and RESTORE (same entries, ids
-- and TTL) leave it sized to what it holds (about 1 KB instead of 4.7 KB for a whole call's five events).
local function compact_log(stream)
  local dumped = redis.call('DUMP', stream)
  if not dumped then return 0 end
  local ttl = redis.call('PTTL', stream)
  redis.call('RESTORE', stream, ttl > 0 and ttl or 0, dumped, 'REPLACE')
  return 1
end
