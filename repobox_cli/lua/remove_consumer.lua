-- Remove a consumer only if its runner is gone (no heartbeat) and it holds nothing, atomically.
-- Returns 1 when removed, else 0.
local stream, heartbeat_key = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]

if redis.call('EXISTS', heartbeat_key) == 1 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == consumer then
    if tonumber(info['pending']) ~= 0 then return 0 end
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
    return 1
  end
end
return 0
