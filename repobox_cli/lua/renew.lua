-- Renew a running attempt: the entry's claim (XCLAIM JUSTID resets idle without counting a
-- delivery) and the user slot's lease. Returns 1, or 0 when the attempt is no longer current or
-- its slot is gone: removed as expired, it may already count for another job of the user, so
-- adding it back could exceed the user's limit; the attempt's lease has run out.
local attempt_key, slots_key, stream = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, entry, token, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

if not owns(stream, group, entry, consumer) then return 0 end
if redis.call('GET', attempt_key) ~= token then return 0 end
if not redis.call('ZSCORE', slots_key, token) then return 0 end
if entry ~= '' then redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID') end
redis.call('ZADD', slots_key, now_ms() + lease_ms, token)
keep_slots(slots_key, lease_ms)
return 1
