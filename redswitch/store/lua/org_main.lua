-- Cluster: the org decision alone, in the org's slot. Which of the org's calls ended was read just before.
-- KEYS: org calls, waiting, seq, polled.  ARGV: dial_id, org max, stale waiter seconds, then the ended dial_ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gone = {}
for i = 4, #ARGV do gone[ARGV[i]] = true end
local function ended(m) return gone[m] == true end
local org = org_decide(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]), now, tonumber(ARGV[3]), ended)
if org[1] == 'queued' then return org end
return {'in', 0, 0}
