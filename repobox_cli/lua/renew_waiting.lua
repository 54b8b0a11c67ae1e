-- Keep the claims of entries waiting (not running) in this runner. Returns the ids no longer ours.
local stream = KEYS[1]
local group, consumer = ARGV[1], ARGV[2]
local FIRST_ID_ARG = 3

local lost = {}
for i = FIRST_ID_ARG, #ARGV do
  if owns(stream, group, ARGV[i], consumer) then
    redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
