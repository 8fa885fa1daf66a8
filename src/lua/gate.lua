-- gate: what send decisions need, in one round trip.  ARGV[3] the business number,
-- ARGV[4..] one recipient each, as the forms recipient_spec() writes (users_of() in
-- common.lua says what they name).
-- Returns, for each recipient, the number of users it names, then for each user 13
-- values: key, exists (1|0), id_hash, id_ts, id_ack, last_in, blocked (both for the
-- number), moved_to, contact (status of the last contact check), contact_at (ms),
-- id_changed_at (ms, when the newest change reached Redis), hold_released
-- ("CHANGED_AT:category|*"), id_state (hash_unknown: WhatsApp refused a send for an
-- identity change whose hash is not known yet).
-- ARGV[3] names the business number the sends go through; '-' is On-Premises' one
-- number (the plain fields); '' names none: then the one number webhooks came for, and
-- with several the strictest (the oldest window, any block); with none seen, the plain.
local numbers = { ARGV[3] }
if ARGV[3] == '-' then
  numbers = { '' }
elseif ARGV[3] == '' then
  numbers = redis.call('SMEMBERS', NUMBERS)
  if #numbers == 0 then numbers = { '' } end
end

local out = {}
-- One known user's values, the window and block taken for the number(s) asked (a plain
-- block applies to all of them).
local function facts(k)
  local v = redis.call('HMGET', k, 'id_hash', 'id_ts', 'id_ack', 'last_in', 'blocked',
                       'moved_to', 'contact', 'contact_at', 'id_changed_at', 'hold_released', 'id_state')
  local last_in, blocked = nil, v[5] == '1' and '1' or nil
  for _, n in ipairs(numbers) do
    local nv = redis.call('HMGET', k, win_field(n), blk_field(n))
    local li = tonumber(nv[1]) or 0
    if last_in == nil or li < last_in then last_in = li end
    if nv[2] == '1' then blocked = '1' end
  end
  v[4] = last_in and last_in > 0 and tostring(last_in) or false
  v[5] = blocked or false
  return v
end

for i = 4, #ARGV do
  local users = users_of(ARGV[i])
  out[#out + 1] = #users
  for _, w in ipairs(users) do
    local k = ukey(w)
    local known = redis.call('EXISTS', k) == 1
    out[#out + 1] = w
    out[#out + 1] = known and 1 or 0
    -- no record, nothing to read (most second forms of a bare-digit input)
    local v = known and facts(k) or {}
    for j = 1, 11 do out[#out + 1] = v[j] or false end
  end
end
return out
