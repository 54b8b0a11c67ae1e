-- Append output lines after a push whose outcome is unknown (its reply was lost to a connection
-- error): the first ARGV[2] lines may already be at the list's end; only the rest are appended then.
-- KEYS[1] the output list; ARGV[1] ttl seconds, ARGV[2] how many leading lines are uncertain, then
-- the lines. Returns the list's length, as RPUSH would.
local key = KEYS[1]
local uncertain = tonumber(ARGV[2])
local first = 3
if uncertain > 0 and redis.call('LLEN', key) >= uncertain then
  local tail = redis.call('LRANGE', key, -uncertain, -1)
  local same = true
  for i = 1, uncertain do
    if tail[i] ~= ARGV[2 + i] then
      same = false
      break
    end
  end
  if same then first = 3 + uncertain end
end
local length
if first <= #ARGV then
  length = redis.call('RPUSH', key, unpack(ARGV, first))
else
  length = redis.call('LLEN', key)
end
redis.call('EXPIRE', key, tonumber(ARGV[1]))
return length
