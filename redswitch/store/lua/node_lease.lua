-- A listener's lease on a FreeSWITCH node: renew it with the token it holds, or take it when free. A take draws a
-- new epoch, so a token (listener/epoch/taken-at-ms) is never issued twice and a listener that lost the lease can
-- never write with it again (the events script compares tokens).
-- KEYS: [1] the node's lease, [2] the node's epoch counter.  ARGV: [1] listener, [2] TTL ms, [3] token held ('').
-- Returns the token held now, or '' when another listener holds the lease.
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return current
  end
  return ''
end
if ARGV[3] ~= '' then return '' end -- ours expired: a holder that lost its lease takes it afresh, never renews
local now = redis.call('TIME')
local token = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2]) .. '/' .. (now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
