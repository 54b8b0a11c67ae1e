-- Settle an entry without running it: fail its job (when it exists and is not final) with the
-- reason, optionally file a dead letter, and ack. With NO_KEY for the job and the dead letters it
-- only acks (a job already final). Returns 1, or 0 when the entry is no longer ours.
local stream, dead_letters, job_key, waiting_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, entry, reason, finished_at, fields_json, deliveries =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

if not owns(stream, group, entry, consumer) then return 0 end
if dead_letters ~= NO_KEY then
  local fields = cjson.decode(fields_json)
  redis.call('XADD', dead_letters, '*', 'entry_id', entry, 'job_id', tostring(fields['job_id'] or ''),
    'reason', reason, 'deliveries', deliveries, 'consumer', consumer, 'dead_at', finished_at,
    'fields', fields_json)
end
if job_key ~= NO_KEY and redis.call('TYPE', job_key).ok == 'hash'
    and not is_final(redis.call('HGET', job_key, 'status')) then
  redis.call('HSET', job_key, 'status', 'failed', 'error_message', reason, 'finished_at', finished_at)
end
redis.call('XACK', stream, group, entry)
redis.call('DEL', waiting_key)
return 1
