-- apply: every change that webhooks (or forwarded answers) bring, in one atomic step.
-- ARGV[3] a JSON array of bodies, each {"a": "auto"|"manual" (the ack policy),
-- "o": [operations, see include/webhook_parse.h]}: the store groups the bodies that
-- arrive together into one call.  ARGV[4] first_seen (trust|hold), ARGV[5] the events
-- stream's cap.  Returns, for each body, { accepted, duplicates, late, dead, queued,
-- future } (future: identity times later than Redis's clock, replaced by it).
local bodies = cjson.decode(ARGV[3])
local cfg = { ack = 'auto', first_seen = ARGV[4], maxlen = ARGV[5] }
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
  if (tonumber(a.last_in) or 0) > (tonumber(cur[3]) or 0) then redis.call('HSET', kw, 'last_in', a.last_in) end
  if a.blocked == '1' then redis.call('HSET', kw, 'blocked', 1) end
  if a.name and not cur[5] then redis.call('HSET', kw, 'name', a.name) end
  if a.contact and not cur[6] then redis.call('HSET', kw, 'contact', a.contact, 'contact_at', a.contact_at or NOW) end
  local hist = redis.call('LRANGE', ukey(u) .. ':history', 0, 49)
  for i = #hist, 1, -1 do redis.call('LPUSH', kw .. ':history', hist[i]) end
  redis.call('LTRIM', kw .. ':history', 0, 49)
  for _, z in ipairs({ QUEUE, SINCE, PENDING, FAILED }) do redis.call('ZREM', z, u) end
  redis.call('DEL', ukey(u), ukey(u) .. ':history', ukey(u) .. ':acks')
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
local function record_identity(w, h, t, ackd, src, rx, mid)
  local k = ukey(w)
  -- A write that Redis refuses when out of memory goes first: once a script has
  -- written, Redis lets its later writes through, and the body would be half applied.
  redis.call('HSET', k, 'id_hash', h, 'id_ts', t)
  if rx then redis.call('HSET', k, 'id_rx', 1) else redis.call('HDEL', k, 'id_rx') end
  if ackd then
    redis.call('HSET', k, 'id_hash', h, 'id_ts', t, 'id_attempts', 0)
    mark_acknowledged(w, h, 'whatsapp', 'the WABA client reported it acknowledged')
  else
    redis.call('HSET', k, 'id_hash', h, 'id_ts', t, 'id_ack', 0, 'id_state', 'pending',
               'id_attempts', 0, 'id_err', '', 'id_changed_at', NOW)
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
  local cur = redis.call('HMGET', ukey(op.w), 'id_hash', 'id_ts', 'id_ack', 'id_rx')
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
    record_identity(op.w, op.h, op.t, trusted, op.src, rx, op.mid)
  elseif cur[1] == op.h then
    if ackd and cur[3] ~= '1' then
      mark_acknowledged(op.w, op.h, 'whatsapp', 'the WABA client reported it acknowledged')
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
    record_identity(op.w, op.h, op.t, ackd, op.src, rx, op.mid)
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
  local k = ukey(op.w)
  local cur = redis.call('HMGET', k, 'last_in', 'moved_at')
  if t > (tonumber(cur[1]) or 0) then redis.call('HSET', k, 'last_in', t) end
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

-- A number change is ordered by the inbound messages around it: an inbound message
-- from the old number at or after the change lifts it ('in' above), so a change
-- older than the last inbound message (a late or repeated delivery) is not set again
-- (within one second the later arrival wins).
handlers.num = function(op)
  local t = op.t
  if t == 0 then t = math.floor(NOW / 1000) end
  local k = ukey(op.w)
  if t >= (tonumber(redis.call('HGET', k, 'last_in')) or 0) then
    redis.call('HSET', k, 'moved_to', op.nw, 'moved_at', t)
  end
  if not fresh(op.w, 'i', op.mid) then return end
  event('number_changed', op.w, { 'new_wa_id', op.nw })
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
  if not fresh(op.w, 's', op.id .. ':' .. op.st) then
    dup_msgs['st:' .. op.id .. ':' .. op.st] = true
    return
  end
  local codes = {}
  for i = 1, #op.codes do codes[i] = string.format('%d', op.codes[i]) end
  event('status', op.w, { 'id', op.id, 'status', op.st, 'codes', table.concat(codes, ',') })
  res.accepted = res.accepted + 1
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
  for i, w in ipairs(users) do
    if i == 1 or (op.b == 1 and redis.call('EXISTS', ukey(w)) == 1) then
      redis.call('HSET', ukey(w), 'blocked', op.b)
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
