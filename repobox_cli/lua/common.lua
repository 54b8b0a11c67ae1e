-- Shared helpers, prepended to every lease script when it is loaded (after NO_KEY, see keys.py).
local function owns(stream, group, id, consumer)
  if id == '' then return true end  -- `repobox exec` runs without a stream entry
  local p = redis.call('XPENDING', stream, group, 'IDLE', 0, id, id, 1)
  return p[1] ~= nil and p[1][2] == consumer
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function is_final(s) return s == 'success' or s == 'failed' or s == 'cancelled' end
local FINISHED_SUFFIX = '#finished'
