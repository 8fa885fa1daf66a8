-- gate: what send decisions need, in one round trip.  [3] the business number the
-- sends go through ('-': On-Premises' one number, the plain fields; '': none named,
-- then the one number webhooks came for, and with several the strictest: the oldest
-- window, any block), [4..] one recipient each, as recipient_spec() writes it.
-- Returns, for each recipient, the number of users it names, then the GU values of each
-- (include/schema.h): the facts of the identity, the window and block for the number(s)
-- asked (a plain block applies to all of them), the number change, the contact check,
-- the hold, and the new id when the recipient named a retired user id.  The fields it
-- reads are GATE_FIELDS (include/schema.h); gate.c reads the same ones without this
-- function in the common case (no user id, no contact mapping).
local G = {}
for i = 1, #GATE_FIELDS do G[GATE_FIELDS[i]] = i end

-- The fields asked for one business number n: GATE_FIELDS, then n's window and block.
-- Made once a number (a handful of numbers; the cache is dropped if it ever grows past 64).
local number_fields, number_fields_n = {}, 0
local function fields_for(n)
  local f = number_fields[n]
  if f then return f end
  if number_fields_n >= 64 then number_fields, number_fields_n = {}, 0 end
  f = {}
  for i = 1, #GATE_FIELDS do f[i] = GATE_FIELDS[i] end
  f[#f + 1] = win_field(n)
  f[#f + 1] = blk_field(n)
  number_fields[n], number_fields_n = f, number_fields_n + 1
  return f
end

FN.gate = function(keys, args)
  begin(args, true)         -- the decision's time is the daemon's: no clock read here
  local numbers = { args[3] }
  if args[3] == '-' then
    numbers = { '' }
  elseif args[3] == '' then
    numbers = redis.call('SMEMBERS', NUMBERS)
    if #numbers == 0 then numbers = { '' } end
  end
  local one = #numbers == 1 and numbers[1] ~= '' and numbers[1] or nil
  local fields = one and fields_for(one) or GATE_FIELDS
  local out = {}
  for i = 4, #args do
    local list = users.of(args[i])
    out[#out + 1] = #list
    for _, e in ipairs(list) do
      local k = K.user(e.w)
      local v = redis.call('HMGET', k, unpack(fields))
      local known = false
      for j = 1, #fields do
        if v[j] then known = true break end
      end
      -- a record with none of these fields (a profile name alone) is known all the same
      if not known then known = redis.call('EXISTS', k) == 1 end
      local last_in, blocked = v[G[F.LAST_IN]], v[G[F.BLOCKED]] == '1'
      if one then
        last_in = v[#fields - 1]
        blocked = blocked or v[#fields] == '1'
      elseif numbers[1] ~= '' and known then
        last_in = nil
        for _, n in ipairs(numbers) do
          local nv = redis.call('HMGET', k, win_field(n), blk_field(n))
          local li = tonumber(nv[1]) or 0
          if last_in == nil or li < last_in then last_in = li end
          if nv[2] == '1' then blocked = true end
        end
        last_in = (last_in and last_in > 0) and tostring(last_in) or false
      end
      local u = {}
      u[GU.KEY], u[GU.EXISTS] = e.w, known and 1 or 0
      u[GU.HASH], u[GU.TS], u[GU.STATE] = v[G[F.HASH]], v[G[F.TS]], v[G[F.STATE]]
      u[GU.LAST_IN], u[GU.BLOCKED] = last_in, blocked and '1' or false
      u[GU.MOVED_TO], u[GU.CONTACT], u[GU.CONTACT_AT] = v[G[F.MOVED_TO]], v[G[F.CONTACT]], v[G[F.CONTACT_AT]]
      u[GU.CHANGED_AT], u[GU.HOLD_RELEASED] = v[G[F.CHANGED_AT]], v[G[F.HOLD_RELEASED]]
      u[GU.RETIRED_TO] = e.retired or false
      for j = 1, GU.N do out[#out + 1] = u[j] or false end
    end
  end
  return out
end
