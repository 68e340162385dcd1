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
