-- release: operator [4] lifts the account-takeover hold ([hold]) of the user [3] names
-- (recipient forms, resolved as the gate resolves them) for its newest identity change,
-- for category [5] ('*': every category), because [6].  A later change holds again.
-- Audited like an acknowledgement.  Returns the pick and, when found, RELEASE_REPLY
-- values, or nothing more when no identity change is recorded.
FN.release = function(keys, args)
  begin(args)
  local st, w, known = users.pick(args[3])
  if st ~= PICK.FOUND then return users.unpicked(st, known) end
  local k = K.user(w)
  local v = redis.call('HMGET', k, F.CHANGED_AT, F.HASH)
  if not v[1] then return { st } end
  redis.call('HSET', k, F.HOLD_RELEASED, v[1] .. ':' .. args[5])
  audit(w, v[2] or '', args[4], 'hold_released:' .. args[5], args[6])
  local r = { st }
  r[1 + RELEASE_REPLY.W], r[1 + RELEASE_REPLY.CHANGED_AT], r[1 + RELEASE_REPLY.HASH] = w, v[1], v[2] or ''
  return r
end
