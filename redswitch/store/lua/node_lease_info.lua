-- Who holds a node's lease, for how long yet, and the time now (to tell its age): read in one place.
-- KEYS: the node's lease.  Returns {token or '', PTTL in ms, now in ms}.
local now = redis.call('TIME')
return {redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1]), now[1] * 1000 + math.floor(now[2] / 1000)}
