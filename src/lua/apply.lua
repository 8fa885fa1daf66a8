-- apply: every change that webhooks (or forwarded answers) bring, in one atomic step.
-- ARGV[3] a JSON array of bodies, each {"a": "auto"|"manual" (the ack policy),
-- "o": [operations, see include/webhook_parse.h]}: the store groups the bodies that
-- arrive together into one call.  ARGV[4] first_seen (trust|hold), ARGV[5] the events
-- stream's cap.  Returns, for each body, { accepted, duplicates, late, dead, queued }.
local bodies = cjson.decode(ARGV[3])
local cfg = { ack = 'auto', first_seen = ARGV[4], maxlen = ARGV[5] }
local EVENTS = P .. ':events'
local res
local seen = {}     -- message ids met in this call: a repeat in a later body is a duplicate

local function event(kind, w, extra)
  local a = { 'XADD', EVENTS, 'MAXLEN', '~', cfg.maxlen, '*', 'kind', kind, 'wa_id', w or '', 'at', NOW }
  for i = 1, #extra do a[12 + i] = extra[i] end
  redis.call(unpack(a))
end

-- True the first time a message id is seen (kept a week).  A repeat, from an earlier
-- body or inside this one, is a duplicate and counted once; an operation that is
-- part of the message before it (its identity) shares that message's answer.
local function fresh(mid, part)
  if mid == nil or mid == cjson.null then return true end
  local s = seen[mid]
  if part then return s ~= false end
  if s ~= nil then
    res.dup = res.dup + 1
    return false
  end
  s = redis.call('SET', P .. ':seen:msg:' .. mid, '1', 'NX', 'EX', WEEK) ~= false
  seen[mid] = s
  if not s then res.dup = res.dup + 1 end
  return s
end

local function record_identity(w, h, t, ackd, src)
  local k = ukey(w)
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
  redis.call('LPUSH', hk, cjson.encode({ hash = h, created_timestamp = t, source = src,
                                         received_at = NOW, acknowledged = ackd }))
  redis.call('LTRIM', hk, 0, 49)
  event('identity_changed', w, { 'hash', h, 'created_ms', t, 'source', src })
end

local handlers = {}

handlers.id = function(op)
  if not fresh(op.mid, op.part) then return end
  -- Learnt by the worker that holds this user: its lease ends here.
  if op.src == 'reconcile' then redis.call('HDEL', ukey(op.w), 'id_lease') end
  local cur = redis.call('HMGET', ukey(op.w), 'id_hash', 'id_ts', 'id_ack')
  local ackd = op.ack == true
  -- Cloud API hashes come without a time: the time they reach us orders them.
  if op.t == 0 then op.t = NOW end
  if not cur[1] then
    -- First hash seen for this user.  A system message is always a change; a hash
    -- carried by a message is trusted when the WABA client says it is acknowledged,
    -- a Cloud API one when first_seen = trust.
    local trusted = cfg.first_seen == 'trust' and (ackd or op.src == 'cloud')
    record_identity(op.w, op.h, op.t, trusted, op.src)
  elseif cur[1] == op.h then
    if ackd and cur[3] ~= '1' then
      mark_acknowledged(op.w, op.h, 'whatsapp', 'the WABA client reported it acknowledged')
    end
  else
    local ct = tonumber(cur[2]) or 0
    if op.t < ct or (op.t == ct and op.h < cur[1]) then
      res.late = res.late + 1
      event('identity_late', op.w, { 'hash', op.h, 'created_ms', op.t, 'newest', cur[1] })
      return
    end
    record_identity(op.w, op.h, op.t, ackd, op.src)
  end
  if not op.part then res.accepted = res.accepted + 1 end
end

handlers['in'] = function(op)
  if not fresh(op.mid) then return end
  local now_s = math.floor(NOW / 1000)
  local t = op.t
  if t == 0 or t > now_s + 300 then t = now_s end
  local k = ukey(op.w)
  local cur = redis.call('HMGET', k, 'last_in', 'moved_at')
  if t > (tonumber(cur[1]) or 0) then redis.call('HSET', k, 'last_in', t) end
  if cur[2] and t >= tonumber(cur[2]) then redis.call('HDEL', k, 'moved_to', 'moved_at') end
  -- the hot path: written out rather than through event()
  redis.call('XADD', EVENTS, 'MAXLEN', '~', cfg.maxlen, '*', 'kind', 'inbound', 'wa_id', op.w,
             'at', NOW, 'type', op.type, 'id', op.mid)
  res.accepted = res.accepted + 1
end

handlers.num = function(op)
  if not fresh(op.mid) then return end
  local t = op.t
  if t == 0 then t = math.floor(NOW / 1000) end
  redis.call('HSET', ukey(op.w), 'moved_to', op.nw, 'moved_at', t)
  event('number_changed', op.w, { 'new_wa_id', op.nw })
  res.accepted = res.accepted + 1
end

handlers.sys = function(op)
  if not fresh(op.mid) then return end
  event('system', op.w, { 'type', op.st })
  res.accepted = res.accepted + 1
end

handlers.cc = function(op)
  local function put(n)
    local k = ckey(n)
    -- "processing" is no result: it never replaces a final one.
    if op.st == 'processing' and redis.call('HEXISTS', k, 'status') == 1 then return end
    redis.call('HSET', k, 'status', op.st, 'input', op.raw, 'wa_id', op.w or '', 'at', NOW)
    redis.call('EXPIRE', k, WEEK)
    redis.call('HSET', ukey(n), 'contact', op.st, 'contact_at', NOW)
  end
  put(op['in'])
  if op.w and op.w ~= op['in'] then put(op.w) end
  event('contact_check', op.w or op['in'], { 'status', op.st, 'input', op.raw })
  res.accepted = res.accepted + 1
end

-- The sender's profile describes a message; it is not an item of its own.
handlers.prof = function(op)
  if op.name ~= '' then redis.call('HSET', ukey(op.w), 'name', op.name) end
end

handlers.st = function(op)
  local key = 'st:' .. op.id .. ':' .. op.st
  local new = seen[key] == nil and
              redis.call('SET', P .. ':seen:' .. key, '1', 'NX', 'EX', WEEK) ~= false
  seen[key] = new           -- what an identity carried by this status goes by
  if not new then
    res.dup = res.dup + 1
    return
  end
  local codes = {}
  for i = 1, #op.codes do codes[i] = tostring(op.codes[i]) end
  event('status', op.w, { 'id', op.id, 'status', op.st, 'codes', table.concat(codes, ',') })
  res.accepted = res.accepted + 1
end

handlers.err = function(op)
  event('error', '', { 'code', op.code, 'title', op.title, 'details', op.details })
  res.accepted = res.accepted + 1
end

handlers.blk = function(op)
  redis.call('HSET', ukey(op.w), 'blocked', op.b)
  event(op.b == 1 and 'blocked' or 'unblocked', op.w, {})
  res.accepted = res.accepted + 1
end

handlers.dead = function(op)
  xadd(P .. ':deadletter', 10000, { 'reason', op.reason, 'item', op.item, 'at', NOW })
  res.dead = res.dead + 1
end

local out = {}
for b, body in ipairs(bodies) do
  res = { accepted = 0, dup = 0, late = 0, dead = 0, queued = 0 }
  cfg.ack = body.a
  -- One body that fails (a bug, or a value of a shape no handler expects) gets an
  -- error of its own (503: the WABA client sends it again); the others stand.
  local ok, err = pcall(function()
    for _, op in ipairs(body.o) do
      handlers[op.k](op)
    end
  end)
  if ok then
    out[b] = { res.accepted, res.dup, res.late, res.dead, res.queued }
  else
    out[b] = redis.error_reply('ERR apply: ' .. tostring(err))
  end
end
return out
