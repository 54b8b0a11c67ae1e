-- Is the attempt still current (entry ours, fencing token unchanged)? 1 or 0.
local attempt_key, stream = KEYS[1], KEYS[2]
local group, consumer, entry, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if not owns(stream, group, entry, consumer) then return 0 end
if redis.call('GET', attempt_key) ~= token then return 0 end
return 1
