-- End an attempt, all or nothing: write the final fields (unless the web app cancelled the job:
-- then only finished_at), free the slot, mark the attempt finished and ack the entry.
-- With mode 'pending' the job instead goes back to `pending` untouched (exec --no-push).
-- Idempotent. Returns 'ok' | 'cancelled' | 'missing' | 'lost' | 'pending'.
-- A final job is also recorded in the recently-finished set (`<status>|<job>` scored by time,
-- pruned past an hour) that `repobox status` counts.
-- With an `also` hash (KEYS[6], not NO_KEY: a work session's), its fields (the ARGV after the
-- job's ARGV[7] field arguments) are written in the same step, if that hash exists and is not
-- `archived`, and its field ARGV[8] (unless '') is counted up by one: a step's end and its
-- session's move together.
local job_key, attempt_key, slots_key, stream, finished_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local also_key = KEYS[6] or NO_KEY
local group, consumer, entry, token, mode, finished_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local field_args, also_count = tonumber(ARGV[7]), ARGV[8]
local FIRST_FIELD_ARG = 9
local FINISHED_TTL_S = 3600
local RECENT_MS = 3600 * 1000

local done = token .. FINISHED_SUFFIX
if redis.call('GET', attempt_key) == done then return mode == 'pending' and 'pending' or 'ok' end
if not owns(stream, group, entry, consumer) then return 'lost' end
if redis.call('GET', attempt_key) ~= token then return 'lost' end
local result = 'ok'
if redis.call('TYPE', job_key).ok ~= 'hash' then
  result = 'missing'
elseif redis.call('HGET', job_key, 'status') == 'cancelled' then
  if redis.call('HEXISTS', job_key, 'finished_at') == 0 then
    redis.call('HSET', job_key, 'finished_at', finished_at)
  end
  result = 'cancelled'
elseif mode == 'pending' then
  redis.call('HDEL', job_key, 'started_at', 'finished_at')
  redis.call('HSET', job_key, 'status', 'pending')
  result = 'pending'
else
  redis.call('HSET', job_key, 'finished_at', finished_at, unpack(ARGV, FIRST_FIELD_ARG, FIRST_FIELD_ARG + field_args - 1))
end
-- A session the user deleted meanwhile (`archived`) stays so: its step's end is the job's alone.
if also_key ~= NO_KEY and result ~= 'pending' and redis.call('EXISTS', also_key) == 1
    and redis.call('HGET', also_key, 'status') ~= 'archived' then
  if #ARGV >= FIRST_FIELD_ARG + field_args then
    redis.call('HSET', also_key, unpack(ARGV, FIRST_FIELD_ARG + field_args))
  end
  if also_count ~= '' then redis.call('HINCRBY', also_key, also_count, 1) end
end
if result ~= 'pending' and result ~= 'missing' then
  local now = now_ms()
  redis.call('ZADD', finished_key, now, (redis.call('HGET', job_key, 'status') or '') .. '|' .. string.sub(job_key, 5))
  redis.call('ZREMRANGEBYSCORE', finished_key, '-inf', now - RECENT_MS)
end
redis.call('ZREM', slots_key, token)
redis.call('SET', attempt_key, done, 'EX', FINISHED_TTL_S)
if entry ~= '' then redis.call('XACK', stream, group, entry) end
return result
