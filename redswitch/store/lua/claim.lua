-- Create a call's record and announce call-start, unless the record exists: then return it.
-- KEYS: call record, active calls, user's history, Job-UUID map, the call's event stream, the firehose.
-- ARGV: dial_id, call-start event, call channel, record TTL, history TTL, lifecycle channel, lifecycle message,
--       event log ('1': on, '': off), stream TTL, stream max length, firehose max length,
--       then the record's field/value pairs.
local existing = create_record(KEYS[1], ARGV[4], 12)
if existing then return {0, existing} end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
if ARGV[8] == '1' then log_event(KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[9], ARGV[10], ARGV[11]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {1}
