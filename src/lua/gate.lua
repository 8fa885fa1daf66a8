-- gate: what send decisions need, in one round trip.  ARGV[3..] one recipient each, as
-- the forms recipient_spec() writes (users_of() in common.lua says what they name).
-- Returns, for each recipient, the number of users it names, then for each user 12
-- values: key, exists (1|0), id_hash, id_ts, id_ack, last_in, blocked, moved_to,
-- contact (status of the last contact check), contact_at (ms), id_changed_at (ms,
-- when the newest change reached Redis), hold_released ("CHANGED_AT:category|*").
local out = {}
for i = 3, #ARGV do
  local users = users_of(ARGV[i])
  out[#out + 1] = #users
  for _, w in ipairs(users) do
    local k = ukey(w)
    local v = redis.call('HMGET', k, 'id_hash', 'id_ts', 'id_ack', 'last_in', 'blocked',
                         'moved_to', 'contact', 'contact_at', 'id_changed_at', 'hold_released')
    out[#out + 1] = w
    out[#out + 1] = redis.call('EXISTS', k)
    for j = 1, 10 do out[#out + 1] = v[j] end
  end
end
return out
