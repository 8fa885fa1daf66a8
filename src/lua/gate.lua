-- gate: what a send decision needs, for ARGV[3..] wa_ids, in one round trip.
-- Returns 7 values a user: id_hash, id_ts, id_ack, last_in, blocked, moved_to, contact status.
local out = {}
for i = 3, #ARGV do
  local w = ARGV[i]
  local v = redis.call('HMGET', ukey(w), 'id_hash', 'id_ts', 'id_ack', 'last_in', 'blocked', 'moved_to')
  for j = 1, 6 do out[#out + 1] = v[j] end
  out[#out + 1] = redis.call('HGET', ckey(w), 'status')
end
return out
