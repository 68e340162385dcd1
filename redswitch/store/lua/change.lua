-- One answer ('A') or hangup ('H') of a call, shared by events.lua (the listener's batch) and recover.lua (a
-- take-over): what happens in Redis when a side answers or hangs up, in one place. The active list and the call
-- record first, then the history, the event log and the PUBLISH; side 0's hangup ends the call.
-- cfg: push (LPUSH or RPUSH), active_ttl, history_ttl, live (active calls), lifecycle, logged, firehose, stream_ttl,
-- stream_max, fire_max.
local function apply_change(kind, side, call, active, history, node_calls, stream, dial, channel, event, ended, cfg)
  local known = redis.call('EXISTS', call) == 1
  local item = 'ACTIVE.' .. side
  redis.call('LREM', active, 0, item)
  if kind == 'A' then
    redis.call(cfg.push, active, item)
    redis.call('EXPIRE', active, cfg.active_ttl)
    if side == '2' and known then redis.call('HSET', call, 'barger_answered', '1') end
  elseif known then
    redis.call('HSET', call, 'seen', '1')
    if side == '2' then
      redis.call('HDEL', call, 'barger_uuid', 'barger_mode', 'barger_prev_mode', 'barger_answered')
    end
  end
  redis.call(cfg.push, history, event)
  redis.call('EXPIRE', history, cfg.history_ttl)
  if cfg.logged then log_event(stream, cfg.firehose, dial, event, cfg.stream_ttl, cfg.stream_max, cfg.fire_max) end
  redis.call('PUBLISH', channel, event)
  if kind == 'H' and side == '0' then
    redis.call('SREM', cfg.live, dial)
    redis.call('SREM', node_calls, dial)
    redis.call('PUBLISH', cfg.lifecycle, ended)
    if cfg.logged then compact_log(stream) end
  end
end
-- An event that only announces: a recording of the call started ('R') or stopped ('T'), from FreeSWITCH's
-- RECORD_START / RECORD_STOP, or a side's early media ('E', CHANNEL_PROGRESS_MEDIA). A recording's stop clears the
-- record's `recording` when it names that file (a hangup closed it, or a transfer's replaced leg went), so that
-- `record` may start another. Lower case ('r', 't', 'e'): the history keeps it too (HISTORY_EVENTS=all).
local function announce_change(kind, call, history, stream, dial, channel, event, cfg)
  local lower = string.lower(kind)
  if lower == 't' and redis.call('EXISTS', call) == 1 then
    local file = cjson.decode(event)['file']
    if file and redis.call('HGET', call, 'recording') == file then redis.call('HDEL', call, 'recording') end
  end
  if lower == kind then
    redis.call(cfg.push, history, event)
    redis.call('EXPIRE', history, cfg.history_ttl)
  end
  if cfg.logged then log_event(stream, cfg.firehose, dial, event, cfg.stream_ttl, cfg.stream_max, cfg.fire_max) end
  redis.call('PUBLISH', channel, event)
end
