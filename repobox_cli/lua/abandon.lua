-- Abandon an attempt that will not finish here (lost, or the runner is stopping): free its own
-- slot and, when asked, hand its entry back (claimable at once) if this runner still owns it.
-- Writes nothing the next attempt owns. A slots key of NO_KEY hands back only (the operator's
-- `pending --claim`). Returns 1 if the entry was handed back, else 0.
local slots_key, stream = KEYS[1], KEYS[2]
local group, consumer, entry, token, hand_back, idle_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if slots_key ~= NO_KEY then redis.call('ZREM', slots_key, token) end
if hand_back == '1' and entry ~= '' and owns(stream, group, entry, consumer) then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'IDLE', idle_ms, 'JUSTID')
  return 1
end
return 0
