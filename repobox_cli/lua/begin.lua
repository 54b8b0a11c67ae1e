-- Begin an attempt: the entry is still ours, the job exists and is not final, no other attempt
-- holds a live slot lease, and a user slot is free; then mark it running and make this attempt
-- the current one. Idempotent: a retried call for the same attempt answers 'ok:' again (while its
-- slot lives; once it lapsed, the retry begins anew under the limit).
-- With an expected user (ARGV[9], the user the stream entry names; '' for none) the caller has
-- not read the job: a job of another user is left alone ('user'), and 'ok', 'active' and 'busy'
-- carry the job's fields, so a pickup costs one round trip after the read.
-- Returns {'ok:<previous token or empty>', field, value, ...} | {'active', …} | {'busy', …} |
-- {'lost'} | {'missing'} | {'final:<status>'} | {'user'}.
local job_key, attempt_key, slots_key, stream, waiting_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, entry, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, lease_ms, started_at, attempt_ttl_s = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local expected_user = ARGV[9]

local function with_job(word)
  if expected_user == '' then return {word} end
  local reply = redis.call('HGETALL', job_key)
  table.insert(reply, 1, word)
  return reply
end

if not owns(stream, group, entry, consumer) then return {'lost'} end
if redis.call('TYPE', job_key).ok ~= 'hash' then return {'missing'} end
if expected_user ~= '' and redis.call('HGET', job_key, 'user_id') ~= expected_user then return {'user'} end
local status = redis.call('HGET', job_key, 'status')
if is_final(status) then return {'final:' .. status} end
local previous = redis.call('GET', attempt_key) or ''
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', slots_key, '-inf', now)
if previous == token then
  if redis.call('ZSCORE', slots_key, token) then
    -- The same attempt, its slot alive: the retry's runner counts its lease from this retry, so
    -- the slot and the entry's claim do too.
    redis.call('ZADD', slots_key, 'XX', now + lease_ms, token)
    if entry ~= '' then redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID') end
    return with_job('ok:')
  end
  -- A retry that came after this attempt's own slot lapsed: it takes a slot again, under the limit.
  previous = ''
end
-- Another attempt whose slot lease is still alive is running somewhere: never run beside it.
if previous ~= '' and redis.call('ZSCORE', slots_key, previous) then return with_job('active') end
if redis.call('ZCARD', slots_key) >= limit then return with_job('busy') end
redis.call('ZADD', slots_key, now + lease_ms, token)
keep_slots(slots_key, lease_ms)
redis.call('SET', attempt_key, token, 'EX', attempt_ttl_s)
redis.call('HSET', job_key, 'status', 'running', 'started_at', started_at)
if entry ~= '' then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
  redis.call('DEL', waiting_key)
end
if string.sub(previous, -#FINISHED_SUFFIX) == FINISHED_SUFFIX then previous = '' end
return with_job('ok:' .. previous)
