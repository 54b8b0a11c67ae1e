-- Hand back entries this runner holds but never started (waiting, or read while stopping):
-- claimable at once by any runner, and marked as only waited on, so the takeover does not count
-- a delivery toward MAX_DELIVERIES. Returns the ids handed back.
local stream = KEYS[1]
local group, consumer, idle_ms, mark_prefix, mark_ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local FIRST_ID_ARG = 6

local handed = {}
for i = FIRST_ID_ARG, #ARGV do
  if owns(stream, group, ARGV[i], consumer) then
    redis.call('SET', mark_prefix .. ARGV[i], consumer, 'EX', mark_ttl_s)
    redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'IDLE', idle_ms, 'JUSTID')
    table.insert(handed, ARGV[i])
  end
end
return handed
