-- Hand an entry this runner holds to the runner that owns its session's working copy, while that
-- runner is alive (its heartbeat exists): the entry moves to the owner's pending list (XCLAIM
-- on its behalf, idle reset), where the owner's consumer reads it. Returns 1 if forwarded, else 0.
local stream, owner_heartbeat = KEYS[1], KEYS[2]
local group, consumer, entry, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if owner == consumer or redis.call('EXISTS', owner_heartbeat) == 0 then return 0 end
if not owns(stream, group, entry, consumer) then return 0 end
redis.call('XCLAIM', stream, group, owner, 0, entry, 'JUSTID')
return 1
