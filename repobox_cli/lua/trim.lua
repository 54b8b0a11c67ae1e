-- Trim entries below the oldest one any group still needs (pending or not yet delivered).
-- Returns how many entries were trimmed.
local stream = KEYS[1]

local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local best_ms, best_seq = nil, nil
local function consider(ms, seq)
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then best_ms, best_seq = ms, seq end
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq = parse(info['last-delivered-id'])
  consider(ms, seq + 1)
  local summary = redis.call('XPENDING', stream, info['name'])
  if tonumber(summary[1]) > 0 then
    local pms, pseq = parse(summary[2])
    consider(pms, pseq)
  end
end
return redis.call('XTRIM', stream, 'MINID', string.format('%.0f-%.0f', best_ms, best_seq))
