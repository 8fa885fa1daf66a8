-- audit: the audit trail, newest first.  [3] a cursor ('' from the newest; else the id
-- of the last entry seen), [4] at most this many, [5] the user ('' every user: the
-- recipient forms of one, resolved as the gate resolves them: when it names no one
-- record the answer is the pick, as get's), [6] a text the entry's
-- user, who, result or answer holds ('' every entry; case is ignored).  Returns the next
-- cursor ('' at the end), then AUDIT_ITEM values for each entry.  At most 20 times the
-- page, plus 1,000, entries are looked at in one call.
FN.audit = function(keys, args)
  begin(args)
  local cursor, limit, who, q = args[3], tonumber(args[4]), args[5], string.lower(args[6] or '')
  local only
  if who ~= '' then
    local st, w, known = users.pick(who)
    if st ~= PICK.FOUND then return users.unpicked(st, known) end
    only = w
  end
  local budget = limit * 20 + 1000
  -- nothing comes before the first id there can be (XREVRANGE refuses "(0-0")
  if string.match(cursor, '^0+%-0+$') then return { '' } end
  local last = cursor == '' and '+' or ('(' .. cursor)
  local entries = redis.call('XREVRANGE', AUDIT, last, '-', 'COUNT', budget)
  local out, found = { '' }, 0
  for i, e in ipairs(entries) do
    local f = {}
    for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
    local ok = (not only or f.wa_id == only)
    if ok and q ~= '' then
      ok = false
      for _, s in ipairs({ f.wa_id or '', f.who or '', f.result or '', f.answer or '' }) do
        if string.find(string.lower(s), q, 1, true) then ok = true break end
      end
    end
    if ok then
      local it = {}
      it[AUDIT_ITEM.ID], it[AUDIT_ITEM.W], it[AUDIT_ITEM.HASH] = e[1], f.wa_id, f.hash
      it[AUDIT_ITEM.WHO], it[AUDIT_ITEM.RESULT], it[AUDIT_ITEM.ANSWER], it[AUDIT_ITEM.AT] = f.who, f.result, f.answer, f.at
      for j = 1, AUDIT_ITEM.N do out[#out + 1] = it[j] or false end
      found = found + 1
    end
    if found >= limit then
      if i < #entries then out[1] = e[1] end
      return out
    end
    if i == #entries and #entries == budget then out[1] = e[1] end
  end
  return out
end
