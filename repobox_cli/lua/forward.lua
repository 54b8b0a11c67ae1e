-- Hand an entry this runner holds to the runner that owns its session's working copy, while that
-- runner is alive and not stopping (its heartbeat exists and says so; a stopping runner reads
-- nothing more): the entry moves to the owner's pending list (XCLAIM on its behalf, idle reset),
-- where the owner's consumer reads it, marked as waiting (its takeover, should the owner die
-- before it begins, counts no delivery). Returns 1 if forwarded, else 0.
local stream, owner_heartbeat, waiting_key = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, entry, owner, mark_ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if owner == consumer then return 0 end
local beat = redis.call('GET', owner_heartbeat)
if not beat then return 0 end
local ok, info = pcall(cjson.decode, beat)
if not ok or type(info) ~= 'table' or info['stopping'] then return 0 end
if not owns(stream, group, entry, consumer) then return 0 end
redis.call('XCLAIM', stream, group, owner, 0, entry, 'JUSTID')
redis.call('SET', waiting_key, owner, 'EX', mark_ttl_s)
return 1
