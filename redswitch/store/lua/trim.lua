-- Drop the oldest entries of a list beyond ARGV[1] (the bridge RPUSHes, so the oldest are on the left).
-- KEYS: the list.  ARGV: the most entries kept.
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  redis.call('LTRIM', KEYS[1], excess, -1)
  return excess
end
return 0
