-- get: the identity record of the user [3] names (recipient forms, resolved as the gate
-- resolves them).  Returns the pick; when found, then GET_RECORD values, the history
-- and the acknowledgement trail (JSON each, newest first).
FN.get = function(keys, args)
  begin(args)
  local st, w, known = users.pick(args[3])
  if st ~= PICK.FOUND then return users.unpicked(st, known) end
  local k = K.user(w)
  local v = redis.call('HMGET', k, F.HASH, F.TS, F.STATE, F.ATTEMPTS, F.ERR, F.ACKED_BY, F.ACKED_AT,
                       F.CHANGED_AT, F.NAME, F.USER_ID, F.PARENT, F.LAST_IN, F.BLOCKED, F.MOVED_TO,
                       F.CONTACT, F.NEXT, F.LEASE, F.REQUESTED_BY, F.HOLD_RELEASED, F.RX, F.CONTACT_AT,
                       F.USERNAME)
  local rec = {}
  rec[GET_RECORD.W] = w
  rec[GET_RECORD.HASH], rec[GET_RECORD.TS], rec[GET_RECORD.STATE] = v[1], v[2], v[3]
  rec[GET_RECORD.ATTEMPTS], rec[GET_RECORD.ERR], rec[GET_RECORD.ACKED_BY] = v[4], v[5], v[6]
  rec[GET_RECORD.ACKED_AT], rec[GET_RECORD.CHANGED_AT], rec[GET_RECORD.NAME] = v[7], v[8], v[9]
  rec[GET_RECORD.USER_ID], rec[GET_RECORD.PARENT_USER_ID], rec[GET_RECORD.LAST_IN] = v[10], v[11], v[12]
  rec[GET_RECORD.BLOCKED], rec[GET_RECORD.MOVED_TO], rec[GET_RECORD.CONTACT] = v[13], v[14], v[15]
  rec[GET_RECORD.NEXT], rec[GET_RECORD.LEASE], rec[GET_RECORD.REQUESTED_BY] = v[16], v[17], v[18]
  rec[GET_RECORD.HOLD_RELEASED], rec[GET_RECORD.RX], rec[GET_RECORD.CONTACT_AT] = v[19], v[20], v[21]
  rec[GET_RECORD.USERNAME] = v[22]
  -- the 24-hour windows and blocks per business number (Cloud): the latest window of all,
  -- and blocked when any number (or the plain field, every number) blocks the user
  local by, blocks, latest, any = {}, {}, tonumber(v[12]) or 0, v[13] == '1'
  for _, n in ipairs(redis.call('SMEMBERS', NUMBERS)) do
    local nv = redis.call('HMGET', k, win_field(n), blk_field(n))
    local t = tonumber(nv[1])
    if t then
      by[n] = t
      if t > latest then latest = t end
    end
    if nv[2] then
      blocks[n] = nv[2] == '1'
      any = any or nv[2] == '1'
    end
  end
  if latest > 0 then rec[GET_RECORD.LAST_IN] = latest end
  rec[GET_RECORD.BLOCKED] = any and '1' or '0'
  if next(by) then rec[GET_RECORD.LAST_IN_BY_NUMBER] = cjson.encode(by) end
  if next(blocks) then rec[GET_RECORD.BLOCKED_BY_NUMBER] = cjson.encode(blocks) end
  local since = redis.call('ZSCORE', SINCE, w)
  rec[GET_RECORD.SINCE] = since or false
  local flat = {}
  for i = 1, GET_RECORD.N do flat[i] = rec[i] or false end
  return { st, flat, redis.call('LRANGE', K.history(w), '0', LIST_KEEP_LAST), redis.call('LRANGE', K.acks(w), '0', LIST_KEEP_LAST) }
end
