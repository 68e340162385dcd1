-- Cluster: the call record's part of claim.lua, the only step that decides (one key, so atomic).
-- KEYS: call record.  ARGV: TTL, then the record's field/value pairs.
local existing = create_record(KEYS[1], ARGV[1], 2)
if existing then return {0, existing} end
return {1}
