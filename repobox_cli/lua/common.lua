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

-- A user's slots key lives a day past its last write (twice the lease, for a lease over half a
-- day): runners with different leases share it, and one with a shorter lease must not expire
-- another's slot with it. Expired slots are removed by score; the key's own expiry only tidies.
local SLOTS_KEY_MIN_TTL_MS = 86400000
local function keep_slots(key, lease_ms)
  redis.call('PEXPIRE', key, math.max(2 * lease_ms, SLOTS_KEY_MIN_TTL_MS))
end
