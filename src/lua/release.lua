-- release: operator ARGV[4] lifts the account-takeover hold ([hold]) of wa_id ARGV[3]
-- for its newest identity change, for category ARGV[5] ('*': every category), because
-- ARGV[6].  A later change holds again.  Audited like an acknowledgement.
-- Returns { record, changed_at (ms), hash } or -1 when no identity change is recorded.
local w = canon(ARGV[3])
local k = ukey(w)
local v = redis.call('HMGET', k, 'id_changed_at', 'id_hash')
if not v[1] then return -1 end
redis.call('HSET', k, 'hold_released', v[1] .. ':' .. ARGV[5])
audit(w, v[2] or '', ARGV[4], 'hold_released:' .. ARGV[5], ARGV[6])
return { w, v[1], v[2] or '' }
