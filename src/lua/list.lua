-- list: the identities in state [3] (pending | failed) after cursor [4] (a record's
-- name, '' from the start), at most [5] of them, whose name, user id or profile name
-- holds [6] ('' every one; case is ignored); or [3] = held: the users whose newest
-- identity change reached Redis after [7] (ms), newest first, cursor [4] an offset.
-- Returns the next cursor ('' at the end), then LIST_ITEM values for each identity.
-- At most 20 times the page, plus 1,000, names are looked at in one call: a search
-- that finds fewer than the page still returns a cursor to go on with.
local function list_item(w)
  local v = redis.call('HMGET', K.user(w), F.HASH, F.TS, F.STATE, F.ATTEMPTS, F.ERR, F.NAME, F.NEXT,
                       F.USER_ID, F.CHANGED_AT, F.HOLD_RELEASED, F.LEASE)
  local it = {}
  it[LIST_ITEM.W], it[LIST_ITEM.HASH], it[LIST_ITEM.TS], it[LIST_ITEM.STATE] = w, v[1], v[2], v[3]
  it[LIST_ITEM.ATTEMPTS], it[LIST_ITEM.ERR], it[LIST_ITEM.NAME], it[LIST_ITEM.NEXT] = v[4], v[5], v[6], v[7]
  it[LIST_ITEM.USER_ID], it[LIST_ITEM.CHANGED_AT], it[LIST_ITEM.HOLD_RELEASED] = v[8], v[9], v[10]
  it[LIST_ITEM.LEASE] = v[11]
  it[LIST_ITEM.SINCE] = redis.call('ZSCORE', SINCE, w)
  local prev = redis.call('LRANGE', K.history(w), 0, 4)
  for _, e in ipairs(prev) do
    local ok, d = pcall(cjson.decode, e)
    if ok and nz(d.hash) and d.hash ~= v[1] then it[LIST_ITEM.OLD_HASH] = d.hash break end
  end
  return it, v
end

local function matches(q, w, v)
  if q == '' then return true end
  for _, s in ipairs({ w, v[8] or '', v[6] or '' }) do
    if string.find(string.lower(s), q, 1, true) then return true end
  end
  return false
end

FN.list = function(keys, args)
  begin(args)
  local state, cursor, limit, q = args[3], args[4], tonumber(args[5]), string.lower(args[6] or '')
  local budget = limit * 20 + 1000
  local out, found, next = { '' }, 0, ''
  local function add(w, it)
    for i = 1, LIST_ITEM.N do out[#out + 1] = it[i] or false end
    found = found + 1
  end
  if state == 'held' then
    local offset = tonumber(cursor) or 0
    local names = redis.call('ZREVRANGEBYSCORE', CHANGES, '+inf', args[7], 'LIMIT', offset, budget)
    for i, w in ipairs(names) do
      local it, v = list_item(w)
      if matches(q, w, v) then add(w, it) end
      if found >= limit then
        if i < #names or #names == budget then next = tostring(offset + i) end
        break
      end
      if i == #names and #names == budget then next = tostring(offset + i) end
    end
    out[1] = next
    return out
  end
  local index = state == 'failed' and FAILED or PENDING
  local start = cursor == '' and '-' or ('(' .. cursor)
  local names = redis.call('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, budget)
  for i, w in ipairs(names) do
    local it, v = list_item(w)
    if matches(q, w, v) then add(w, it) end
    if found >= limit then
      if i < #names then next = w end
      break
    end
    if i == #names and #names == budget then next = w end
  end
  out[1] = next
  return out
end
