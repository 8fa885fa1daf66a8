-- gate: what a send decision needs, for ARGV[3..] wa_ids, in one round trip (a batch;
-- one user is a plain HMGET of the same fields, see src/gate.c).
-- Returns 8 values a user: id_hash, id_ts, id_ack, last_in, blocked, moved_to,
-- contact (status of the last contact check), contact_at (ms).
local out = {}
for i = 3, #ARGV do
  local v = redis.call('HMGET', ukey(ARGV[i]), 'id_hash', 'id_ts', 'id_ack', 'last_in', 'blocked',
                       'moved_to', 'contact', 'contact_at')
  for j = 1, 8 do out[#out + 1] = v[j] end
end
return out
