-- apply: every change that webhooks (or forwarded answers) bring, in one atomic step.
-- ARGV[3] a JSON array of bodies, each {"a": "auto"|"manual" (the ack policy),
-- "o": [operations, see include/webhook_parse.h]}: the store groups the bodies that
-- arrive together into one call.  ARGV[4] first_seen (trust|hold), ARGV[5] the events
-- stream's cap, ARGV[6] the upstream api (onprem|cloud).  Returns, for each body, { accepted, duplicates, late, dead, queued,
-- future } (future: identity times later than Redis's clock, replaced by it).
local bodies = cjson.decode(ARGV[3])
local cfg = { ack = 'auto', first_seen = ARGV[4], maxlen = ARGV[5], api = ARGV[6] }
local EVENTS = P .. ':events'
local res
-- Messages and statuses found to be duplicates in this call: the identity they carry
-- (an 'id' operation with part set and their id, right after them) goes with them.
local dup_msgs = {}

local function event(kind, w, extra)
  local a = { 'XADD', EVENTS, 'MAXLEN', '~', cfg.maxlen, '*', 'kind', kind, 'wa_id', w or '', 'at', NOW }
  for i = 1, #extra do a[12 + i] = extra[i] end
  redis.call(unpack(a))
end

-- The duplicate check, in memory bounded by users (docs/data-model.md, "Duplicates").
-- Every item's effect is idempotent (the newest hash wins, last_in only moves
-- forward, a number change is ordered by the inbound messages around it), so the
-- check only keeps a retried item from being counted and written to the events
-- stream twice: each user has one small hash, seen:{wa_id}, with two rings of the
-- fingerprints (the first 6 bytes of SHA-1) of their RING newest items, `i` for messages
-- (inbound and system) and `s` for statuses (id:status), kept a week after the
-- user's last item.  A retry of an item older than that is applied again (no
-- harm) and counted as new; a fingerprint collision (about 3 in 10^14 items) only
-- leaves out that item's event.  An identity change needs no ring: its
-- message id is kept in the identity history (see handlers.id).
local RING, FP = 8, 6      -- 48 bytes a ring: the hash stays a listpack (values ≤ 64)

-- True the first time item id is seen in user w's ring (field f); false for a repeat,
-- which is counted as a duplicate.  No user (a status without a recipient): true.
local function fresh(w, f, id)
  if id == nil or id == cjson.null or id == '' or w == nil or w == '' then return true end
  local k = P .. ':seen:{' .. w .. '}'
  local x = redis.sha1hex(id)
  local fp = ''
  for i = 1, FP * 2, 2 do fp = fp .. string.char(tonumber(string.sub(x, i, i + 1), 16)) end
  local r = redis.call('HGET', k, f) or ''
  for i = 1, #r, FP do
    if string.sub(r, i, i + FP - 1) == fp then
      res.dup = res.dup + 1
      return false
    end
  end
  redis.call('HSET', k, f, fp .. string.sub(r, 1, (RING - 1) * FP))
  redis.call('EXPIRE', k, WEEK)
  return true
end

-- The newer of two identities: the later time, a tie broken by the hash.
local function newer(t1, h1, t2, h2)
  return t1 > t2 or (t1 == t2 and h1 > h2)
end

-- A stored identity time beyond Redis's clock (recorded before times were checked) is
-- older than anything real.
local function stored_ts(v)
  local t = tonumber(v) or 0
  if t > NOW + FUTURE_MS then return -1 end
  return t
end

-- Every 24-hour window (last_in, last_in:N) and block (blocked, blocked:N) of the
-- fields a (a record's HGETALL as a table) onto record key `to`: the later window, any block.
local function carry_windows(a, to)
  for f, v in pairs(a) do
    if f == 'last_in' or string.sub(f, 1, 8) == 'last_in:' then
      if (tonumber(v) or 0) > (tonumber(redis.call('HGET', to, f)) or 0) then redis.call('HSET', to, f, v) end
    elseif (f == 'blocked' or string.sub(f, 1, 8) == 'blocked:') and v == '1' then
      redis.call('HSET', to, f, 1)
    end
  end
end

-- The record kept under user id u alone moves into wa_id w's: the newer identity
-- (with its acknowledgement work), the later inbound time, a block, the profile.
local function merge(u, w)
  local fu, kw = redis.call('HGETALL', ukey(u)), ukey(w)
  local a = {}
  for i = 1, #fu, 2 do a[fu[i]] = fu[i + 1] end
  local cur = redis.call('HMGET', kw, 'id_hash', 'id_ts', 'last_in', 'blocked', 'name', 'contact')
  if a.id_hash and (not cur[1] or newer(stored_ts(a.id_ts), a.id_hash, stored_ts(cur[2]), cur[1])) then
    for f, v in pairs(a) do
      if string.sub(f, 1, 3) == 'id_' then redis.call('HSET', kw, f, v) end
    end
    if not a.id_ack or a.id_ack ~= '1' then redis.call('HSET', kw, 'id_ack', 0) end
    for _, z in ipairs({ QUEUE, SINCE, PENDING, FAILED }) do
      local sc = redis.call('ZSCORE', z, u)
      if sc then redis.call('ZADD', z, sc, w) end
    end
  end
  carry_windows(a, kw)
  if a.name and not cur[5] then redis.call('HSET', kw, 'name', a.name) end
  if a.contact and not cur[6] then redis.call('HSET', kw, 'contact', a.contact, 'contact_at', a.contact_at or NOW) end
  local hist = redis.call('LRANGE', ukey(u) .. ':history', 0, 49)
  for i = #hist, 1, -1 do redis.call('LPUSH', kw .. ':history', hist[i]) end
  redis.call('LTRIM', kw .. ':history', 0, 49)
  for _, z in ipairs({ QUEUE, SINCE, PENDING, FAILED }) do redis.call('ZREM', z, u) end
  redis.call('SUNIONSTORE', kw .. ':hashes', kw .. ':hashes', ukey(u) .. ':hashes')
  -- the duplicate check's rings too: a retry of an item the user id brought is a retry
  local su, sw = P .. ':seen:{' .. u .. '}', P .. ':seen:{' .. w .. '}'
  for _, f in ipairs({ 'i', 's' }) do
    local ru = redis.call('HGET', su, f)
    if ru then
      local rw = redis.call('HGET', sw, f) or ''
      redis.call('HSET', sw, f, string.sub(rw .. ru, 1, RING * FP))
      redis.call('EXPIRE', sw, WEEK)
    end
  end
  redis.call('DEL', su)
  redis.call('DEL', ukey(u), ukey(u) .. ':history', ukey(u) .. ':acks', ukey(u) .. ':hashes')
  event('linked', w, { 'user_id', u, 'merged', 1 })
end

-- A wa_id and a user id seen together name one record, the wa_id's.
local function link(u, w)
  local cur = redis.call('GET', akey(u))
  if cur == w then return end
  redis.call('SET', akey(u), w)
  redis.call('HSET', ukey(w), 'user_id', u)
  if not cur and redis.call('EXISTS', ukey(u)) == 1 then merge(u, w) end
end

-- The record an operation names (op.w, op.u: see include/ops.h).
local function who(op)
  if op.u and op.u ~= '' and op.w ~= '' then link(op.u, op.w) end
  return canon(op.w)
end

-- rx: t is the time it reached us standing in for a time that could not be believed;
-- such a record is ordered before any other hash that arrives after it.
-- changed: the identity changed (a hash replaced another, or WhatsApp said so): the
-- time it reached us (id_changed_at) starts the holds of [hold] and answers the
-- identity-change check; a first hash seen for a new user is no change.  mid: the
-- message that carried it (kept in the history: a repeat of it is a duplicate).
local function record_identity(w, h, t, ackd, src, rx, changed, mid)
  local k = ukey(w)
  -- A write that Redis refuses when out of memory goes first: once a script has
  -- written, Redis lets its later writes through, and the body would be half applied.
  redis.call('HSET', k, 'id_hash', h, 'id_ts', t)
  if rx then redis.call('HSET', k, 'id_rx', 1) else redis.call('HDEL', k, 'id_rx') end
  if changed then redis.call('HSET', k, 'id_changed_at', NOW) end
  if ackd then
    redis.call('HSET', k, 'id_hash', h, 'id_ts', t, 'id_attempts', 0)
    mark_acknowledged(w, h, 'whatsapp', 'the WABA client reported it acknowledged')
  else
    redis.call('HSET', k, 'id_hash', h, 'id_ts', t, 'id_ack', 0, 'id_state', 'pending',
               'id_attempts', 0, 'id_err', '')
    redis.call('HDEL', k, 'id_requested_by')    -- an operator's request was for the old hash
    redis.call('ZADD', PENDING, 0, w)
    redis.call('ZREM', FAILED, w)
    redis.call('ZADD', SINCE, 'NX', NOW, w)
    -- Due now, unless a worker holds a lease on this user: its outcome will find
    -- this newer hash and make it due then, so one PUT at a time goes out per user.
    if cfg.ack == 'auto' and (tonumber(redis.call('HGET', k, 'id_lease')) or 0) <= NOW then
      redis.call('ZADD', QUEUE, NOW, w)
      res.queued = res.queued + 1
    end
  end
  -- Every hash this user has had, beyond the history's 50 (hashes do not come back);
  -- a user with over 1,000 changes forgets one at random.
  redis.call('SADD', k .. ':hashes', h)
  if redis.call('SCARD', k .. ':hashes') > 1000 then redis.call('SPOP', k .. ':hashes') end
  local hk = k .. ':history'
  if mid == cjson.null then mid = nil end
  redis.call('LPUSH', hk, cjson.encode({ hash = h, created_timestamp = t, source = src,
                                         received_at = NOW, acknowledged = ackd, message_id = mid }))
  redis.call('LTRIM', hk, 0, 49)
  event('identity_changed', w, { 'hash', h, 'created_ms', t, 'source', src })
end

local handlers = {}

-- True when user w's identity history holds hash h, from message mid when mid is given.
local function in_history(w, h, mid)
  if mid == cjson.null then mid = nil end
  if mid == nil and redis.call('SISMEMBER', ukey(w) .. ':hashes', h) == 1 then return true end
  for _, e in ipairs(redis.call('LRANGE', ukey(w) .. ':history', 0, 49)) do
    local ok, d = pcall(cjson.decode, e)
    if ok and d.hash == h and (mid == nil or d.message_id == mid) then return true end
  end
  return false
end

-- An identity needs no duplicate check of its own: the same hash again changes nothing,
-- an older one is late.  A system message delivered again is recognised (and counted
-- as a duplicate) by its message id in the identity history; an identity carried by a
-- message or status (op.part) is never counted, is skipped with its message when that
-- is a duplicate, and one that history already holds (an old message delivered again)
-- is not late either.
handlers.id = function(op)
  if op.part and op.mid and dup_msgs[op.mid] then return end
  op.w = who(op)
  -- Learnt by the worker that holds this user: its lease ends here.
  if op.src == 'reconcile' then redis.call('HDEL', ukey(op.w), 'id_lease') end
  local cur = redis.call('HMGET', ukey(op.w), 'id_hash', 'id_ts', 'id_ack', 'id_rx', 'id_state')
  local ackd = op.ack == true
  local rx = false
  -- Cloud API hashes come without a time: the time they reach us orders them; a time
  -- ahead of Redis's clock (a skewed WABA host, a unit mix-up) would hide every real
  -- change after it, so the time it reached us stands in for it.
  local supplied = op.t == 0       -- the time is ours, not the observation's
  if op.t == 0 then op.t = NOW end
  if op.t > NOW + FUTURE_MS then
    res.future = res.future + 1
    event('identity_future', op.w, { 'hash', op.h, 'created_ms', op.t })
    op.t = NOW
    rx = true
  end
  if not cur[1] then
    -- First hash seen for this user.  A system message is always a change; a hash
    -- carried by a message is trusted when the WABA client says it is acknowledged,
    -- a Cloud API one when first_seen = trust.
    local trusted = cfg.first_seen == 'trust' and (ackd or op.src == 'cloud')
    record_identity(op.w, op.h, op.t, trusted, op.src, rx, op.src == 'system', op.mid)
  elseif cur[1] == op.h then
    if ackd and cur[3] ~= '1' and op.mid and op.mid ~= cjson.null and in_history(op.w, op.h, op.mid) then
      -- the very message that brought this (held) hash, delivered again past the
      -- duplicate check's horizon: it says nothing new
      if not op.part then res.dup = res.dup + 1 end
    elseif ackd and cur[3] ~= '1' then
      mark_acknowledged(op.w, op.h, 'whatsapp', 'the WABA client reported it acknowledged')
    elseif cur[5] == 'hash_unknown' then
      -- WhatsApp refused a send for an identity change, and the hash it now shows is the
      -- one on record: that is the newest, to be acknowledged by policy.
      record_identity(op.w, op.h, op.t, false, op.src, rx, false, op.mid)
    elseif not op.part and op.mid and in_history(op.w, op.h, op.mid) then
      res.dup = res.dup + 1
      return
    end
  else
    -- The same message again is not news, whatever time it carries now (a skewed clock
    -- sends another one each time; a time not believed is replaced by the arrival).
    if op.mid and op.mid ~= cjson.null and in_history(op.w, op.h, op.mid) then
      if not op.part then res.dup = res.dup + 1 end
      return
    end
    -- A hash already in the history, seen again without a time we believe (none, or
    -- one ahead of the clock): the arrival time that stands in for it would make an old
    -- hash the newest again (a late copy of an old message, past the duplicate check's
    -- horizon).  Hashes do not come back: it is late.
    if (supplied or rx) and in_history(op.w, op.h, nil) then
      if not op.part then
        res.late = res.late + 1
        event('identity_late', op.w, { 'hash', op.h, 'created_ms', op.t, 'newest', cur[1] })
      end
      return
    end
    local ct = stored_ts(cur[2])
    if cur[4] == '1' then ct = -1 end      -- its time was not believed: anything later wins
    if not newer(op.t, op.h, ct, cur[1]) then
      -- an older message carrying a hash already on record: nothing to say
      if op.part and in_history(op.w, op.h, nil) then return end
      res.late = res.late + 1
      event('identity_late', op.w, { 'hash', op.h, 'created_ms', op.t, 'newest', cur[1] })
      return
    end
    record_identity(op.w, op.h, op.t, ackd, op.src, rx, true, op.mid)
  end
  if not op.part then res.accepted = res.accepted + 1 end
end

-- An inbound message moves last_in forward (and lifts a number change it follows)
-- whether or not it was seen before; only its event and its count depend on fresh().
handlers['in'] = function(op)
  op.w = who(op)
  local now_s = math.floor(NOW / 1000)
  local t = op.t
  if t == 0 or t * 1000 > NOW + FUTURE_MS then t = now_s end
  local k, f = ukey(op.w), win_field(op.n)
  if op.n and op.n ~= '' then redis.call('SADD', NUMBERS, op.n) end
  local cur = redis.call('HMGET', k, f, 'moved_at')
  if t > (tonumber(cur[1]) or 0) then redis.call('HSET', k, f, t) end
  if cur[2] and t >= tonumber(cur[2]) then redis.call('HDEL', k, 'moved_to', 'moved_at') end
  if not fresh(op.w, 'i', op.mid) then
    dup_msgs[op.mid] = true
    return
  end
  -- the hot path: written out rather than through event()
  redis.call('XADD', EVENTS, 'MAXLEN', '~', cfg.maxlen, '*', 'kind', 'inbound', 'wa_id', op.w,
             'at', NOW, 'type', op.type, 'id', op.mid)
  res.accepted = res.accepted + 1
end

-- The user moved to number op.nw: the identity, the windows and the blocks go with
-- them (unless the new number already has a newer identity); the old number is
-- refused (number_changed) until someone writes from it again.  Each step is
-- idempotent; the old number's flag is set again only when no inbound message from it
-- came at or after the change (a late or repeated delivery does not bring it back).
handlers.num = function(op)
  op.w = canon(op.w)
  local t = op.t
  if t == 0 then t = math.floor(NOW / 1000) end
  if op.u and op.u ~= '' then link(op.u, op.nw) end
  local from, to = ukey(op.w), ukey(op.nw)
  local a, fa = {}, redis.call('HGETALL', from)
  for i = 1, #fa, 2 do a[fa[i]] = fa[i + 1] end
  local nh = redis.call('HMGET', to, 'id_hash', 'id_ts')
  if a.id_hash and (not nh[1] or newer(stored_ts(a.id_ts), a.id_hash, stored_ts(nh[2]), nh[1])) then
    for f, v in pairs(a) do
      if string.sub(f, 1, 3) == 'id_' and f ~= 'id_lease' then redis.call('HSET', to, f, v) end
    end
    if a.id_ack ~= '1' then
      for _, z in ipairs({ QUEUE, SINCE, PENDING, FAILED }) do
        local sc = redis.call('ZSCORE', z, op.w)
        if sc then redis.call('ZADD', z, sc, op.nw) end
      end
    end
  end
  carry_windows(a, to)
  redis.call('SUNIONSTORE', to .. ':hashes', to .. ':hashes', from .. ':hashes')
  if a.user_id then redis.call('SET', akey(a.user_id), op.nw) redis.call('HSET', to, 'user_id', a.user_id) end
  local last = 0
  for f, v in pairs(a) do
    if f == 'last_in' or string.sub(f, 1, 8) == 'last_in:' then last = math.max(last, tonumber(v) or 0) end
  end
  if t >= last then redis.call('HSET', from, 'moved_to', op.nw, 'moved_at', t) end
  if not fresh(op.w, 'i', op.mid) then return end
  event('number_changed', op.w, { 'new_wa_id', op.nw })
  res.accepted = res.accepted + 1
end

-- The user's business-scoped id changed from op.prev to op.u: the record the old id
-- named is the new id's from now on (the old id keeps naming it).
handlers.uid = function(op)
  local target = redis.call('GET', akey(op.prev))
  -- A repeat is left alone: the merge below is not one to do twice.
  if not fresh(target or op.u, 'i', op.mid) then return end
  if target then
    redis.call('SET', akey(op.u), target)
    redis.call('HSET', ukey(target), 'user_id', op.u)
  elseif redis.call('EXISTS', ukey(op.prev)) == 1 then
    merge(op.prev, op.u)
    redis.call('SET', akey(op.prev), op.u)
  end
  event('user_id_changed', target or op.u, { 'previous_user_id', op.prev, 'user_id', op.u })
  res.accepted = res.accepted + 1
end

handlers.sys = function(op)
  op.w = who(op)
  if not fresh(op.w, 'i', op.mid) then return end
  event('system', op.w, { 'type', op.st })
  res.accepted = res.accepted + 1
end

-- A contact check maps the normalised number it was asked for (op.in) to the wa_id
-- it answered (op.w, when valid): the gate asked with that number decides for the
-- wa_id (gate.lua).  The status goes to the wa_id's record, or, with no wa_id, to a
-- record of the number itself, so require_valid_contact can refuse it.
handlers.cc = function(op)
  local k, n = ckey(op['in']), op['in']
  -- "processing" is no result: it never replaces a final one.
  if op.st == 'processing' and redis.call('HEXISTS', k, 'status') == 1 then return end
  redis.call('HSET', k, 'status', op.st, 'input', op.raw, 'wa_id', op.w or '', 'at', NOW)
  redis.call('EXPIRE', k, WEEK)
  if op.w then
    redis.call('HSET', ukey(op.w), 'contact', op.st, 'contact_at', NOW)
    redis.call('SET', P .. ':contact_rev:{' .. op.w .. '}', n, 'EX', WEEK)
    -- an earlier answer without a wa_id left a record of the number: it no longer applies
    if op.w ~= n then redis.call('HDEL', ukey(n), 'contact', 'contact_at') end
  else
    redis.call('HSET', ukey(n), 'contact', op.st, 'contact_at', NOW)
  end
  event('contact_check', op.w or op['in'], { 'status', op.st, 'input', op.raw })
  res.accepted = res.accepted + 1
end

-- The sender's profile describes a message; it is not an item of its own.
handlers.prof = function(op)
  op.w = who(op)
  if op.name ~= '' then redis.call('HSET', ukey(op.w), 'name', op.name) end
end

handlers.st = function(op)
  if op.w ~= '' then op.w = who(op) end
  -- A status seen before (the WABA client's retry) changes nothing: not even the gate.
  if not fresh(op.w, 's', op.id .. ':' .. op.st) then
    dup_msgs['st:' .. op.id .. ':' .. op.st] = true
    return
  end
  local codes, mismatch = {}, false
  for i = 1, #op.codes do
    codes[i] = string.format('%d', op.codes[i])
    -- 137000 (Cloud: the identity key changed since the pinned hash) and 480
    -- (On-Premises: the identity change is not acknowledged): WhatsApp refused a send
    -- because the user's identity changed.  The gate closes now, before the new hash is
    -- known; the record says hash_unknown until it is.
    if op.st == 'failed' and (codes[i] == '137000' or codes[i] == '480') then mismatch = true end
  end
  if mismatch and op.w ~= '' then
    local k = ukey(op.w)
    redis.call('HSET', k, 'id_ack', 0, 'id_state', 'hash_unknown', 'id_attempts', 0,
               'id_err', 'WhatsApp refused a send (' .. table.concat(codes, ',') .. '): the identity changed',
               'id_changed_at', NOW)
    redis.call('HDEL', k, 'hold_released')
    redis.call('ZADD', PENDING, 0, op.w)
    redis.call('ZREM', FAILED, op.w)
    redis.call('ZADD', SINCE, 'NX', NOW, op.w)
    -- On-Premises fetches the new hash (the worker's identity GET); the Cloud API has no
    -- such call: the next webhook that carries a hash fills it in.
    if cfg.ack == 'auto' and cfg.api ~= 'cloud' and (tonumber(redis.call('HGET', k, 'id_lease')) or 0) <= NOW then
      redis.call('ZADD', QUEUE, NOW, op.w)
      res.queued = res.queued + 1
    end
    event('identity_mismatch', op.w, { 'id', op.id, 'codes', table.concat(codes, ',') })
  end
  event('status', op.w, { 'id', op.id, 'status', op.st, 'codes', table.concat(codes, ',') })
  res.accepted = res.accepted + 1
end

-- A send went out to op.w (recipient forms): its numbers are no longer "checked and
-- never sent to" (budget.lua), nor the dialled numbers a contact check mapped to it.
handlers.sent = function(op)
  local CHECKS = P .. ':checks'
  for kind, key in string.gmatch(op.w, '(%a):(%S+)') do
    redis.call('ZREM', CHECKS, key)
  end
  for _, w in ipairs(users_of(op.w)) do
    redis.call('ZREM', CHECKS, w)
    local d = redis.call('GET', P .. ':contact_rev:{' .. w .. '}')
    if d then redis.call('ZREM', CHECKS, d) end
  end
end

handlers.err = function(op)
  event('error', '', { 'code', op.code, 'title', op.title, 'details', op.details })
  res.accepted = res.accepted + 1
end

-- A block names a recipient as a caller does (op.w: recipient forms): blocking marks
-- every user it could name that waguard knows, and the most likely one; unblocking
-- only the most likely one, so that no other user's block is lifted by a guess.
handlers.blk = function(op)
  local users = users_of(op.w)
  local f = blk_field(op.n)
  for i, w in ipairs(users) do
    if i == 1 or (op.b == 1 and redis.call('EXISTS', ukey(w)) == 1) then
      redis.call('HSET', ukey(w), f, op.b)
      if op.b == 1 then
        redis.call('ZADD', bkey(op.n), NOW, w)
        if op.n and op.n ~= '' then redis.call('SADD', NUMBERS, op.n) end
      else
        redis.call('ZREM', bkey(op.n), w)
      end
      event(op.b == 1 and 'blocked' or 'unblocked', w, {})
    end
  end
  res.accepted = res.accepted + 1
end

handlers.dead = function(op)
  xadd(P .. ':deadletter', 10000, { 'reason', op.reason, 'item', op.item, 'at', NOW })
  res.dead = res.dead + 1
end

-- Errors that say Redis itself cannot take writes now: the body is not recorded and
-- is answered 503, so the WABA client sends it again.
local function transient(err)
  local e = tostring(err)
  return string.find(e, 'OOM', 1, true) or string.find(e, 'READONLY', 1, true) or
         string.find(e, 'MISCONF', 1, true) or string.find(e, 'NOREPLICAS', 1, true) or
         string.find(e, 'BUSY', 1, true)
end

local out = {}
for b, body in ipairs(bodies) do
  res = { accepted = 0, dup = 0, late = 0, dead = 0, queued = 0, future = 0 }
  cfg.ack = body.a
  local failed
  for _, op in ipairs(body.o) do
    -- An operation that fails (a value of a shape no handler expects, a bug) becomes
    -- a dead letter with the reason; the rest of the body stands and is answered 200.
    local ok, err = pcall(handlers[op.k] or function() error('unknown operation ' .. tostring(op.k)) end, op)
    if not ok then
      if transient(err) then
        failed = err
        break
      end
      local enc_ok, item = pcall(cjson.encode, op)
      pcall(handlers.dead, { reason = 'the store could not apply it: ' .. tostring(err),
                             item = enc_ok and item or tostring(op.k) })
    end
  end
  if failed then
    out[b] = redis.error_reply('ERR apply: ' .. tostring(failed))
  else
    out[b] = { res.accepted, res.dup, res.late, res.dead, res.queued, res.future }
  end
end
return out
