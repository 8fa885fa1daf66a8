-- apply: every change that webhooks, forwarded answers and the worker's reconcile bring,
-- in one atomic call.  Arguments after the prefix and the events cap: [3] first_seen
-- (trust|hold), [4] the upstream api (onprem|cloud), [5] how long a sent message is
-- remembered (s), [6] the number of bodies, then for each body its ack policy
-- (auto|manual) and its number of operations, then the operations: each its kind and
-- its fields in the order include/schema.h gives (OPS here).  The store groups the
-- bodies that arrive together into one call.  Returns one string, a line for each body:
-- APPLY_REPLY's counts separated by spaces, or '!' and the error when Redis refused the
-- body (it is answered 503 and sent again).
-- The current body's counters, set to zero for each body (locals the handlers share, not
-- a table's fields: a count is then no table write), and the messages and statuses found
-- to be repeats in it.  (A table costs Lua an allocation or more: the call's own tables
-- are made once and kept.)
local n_accepted, n_dup, n_late, n_dead, n_future, n_unplaced = 0, 0, 0, 0, 0, 0
-- dup_msgs is made again only for a body after one that found a repeat (dups_seen)
local dup_msgs, dups_seen = {}, false
-- One table per kind of operation, filled again for each operation of that kind: a
-- handler reads its op during its own run and keeps none of it.
local op_of = {}
-- the sent-message memory's lifetime (s), and the argument it was read from (SET is given
-- that string)
local SENT_TTL, SENT_TTL_ARG = 0, nil
local handlers = {}

local function split_codes(s)
  local t = {}
  for c in string.gmatch(s or '', '[^,]+') do t[#t + 1] = c end
  return t
end

-- 137000 (Cloud: the identity key changed since the pinned hash) and 480 (On-Premises:
-- the identity change is not acknowledged): WhatsApp refused a send because the user's
-- identity changed.
local function identity_codes(codes)
  for _, c in ipairs(split_codes(codes)) do
    if c == '137000' or c == '480' then return true end
  end
  return false
end

-- What waguard remembers of a send it forwarded (the SENT op, or src/sentmem.c): its
-- record, business number and pinned hash, SENT_SEP between them, or nil.
local SENT_PATTERN = '^([^' .. SENT_SEP .. ']*)' .. SENT_SEP .. '([^' .. SENT_SEP .. ']*)' .. SENT_SEP .. '(.*)$'
local function sent_memory(mid)
  if not nz(mid) then return nil end
  local v = redis.call('GET', K.sent(mid))
  if not v then return nil end
  local w, n, h = string.match(v, SENT_PATTERN)
  if not w then return nil end
  return { w = w, n = n, h = h }
end

-- WhatsApp refused the send mid (or a send, mid '') to record w ('' when only the
-- message id names it) with codes.  A send pinned to a hash that the record has moved
-- on from says nothing new; a refusal no record can be found for is counted.
local function refusal(w, mid, codes)
  local sent = sent_memory(mid)
  if not nz(w) and sent then w = users.canon(sent.w) end
  if not nz(w) then
    n_unplaced = n_unplaced + 1
    event('identity_refusal_unplaced', '', { 'id', mid or '', 'codes', codes })
    return
  end
  if identity.repeated(w, mid) then return end       -- the same refusal again
  if sent and nz(sent.h) then
    local cur = redis.call('HGET', K.user(w), F.HASH)
    if cur and cur ~= sent.h then
      event('identity_refusal_superseded', w, { 'id', mid, 'codes', codes, 'pinned', sent.h, 'newest', cur })
      return
    end
  end
  identity.refused(w, 'WhatsApp refused a send (' .. codes .. '): the identity changed', mid)
end

-- A time in ms ("0": when it reaches Redis) as whole seconds: the number, and the string
-- it is written with, cut from the argument (a number handed to redis.call is written
-- with printf, about 3,000 instructions).  A time later than Redis's clock by more than
-- FUTURE_MS is not believed: Redis's clock stands in for it, as for no time at all.
local function ms_to_s(t)
  local ss = string.sub(t or '', 1, -4)
  local s = string.find(ss, '^[1-9]%d*$') and tonumber(ss)
  if not s or s * 1000 > NOW + FUTURE_MS then
    ss = string.sub(NOW_S, 1, -4)
    s = tonumber(ss)
  end
  return s, ss
end

-- HSET k with the pairs whose value is not empty (nothing when none is): one command
-- for what would be several.  hs is kept from call to call.
local hs = { 'HSET' }
local function hset_some(k, f1, v1, f2, v2, f3, v3, f4, v4)
  hs[2] = k
  local n = 2
  if nz(v1) then hs[n + 1], hs[n + 2], n = f1, v1, n + 2 end
  if nz(v2) then hs[n + 1], hs[n + 2], n = f2, v2, n + 2 end
  if nz(v3) then hs[n + 1], hs[n + 2], n = f3, v3, n + 2 end
  if nz(v4) then hs[n + 1], hs[n + 2], n = f4, v4, n + 2 end
  if n > 2 then redis.call(unpack(hs, 1, n)) end
end

-- A sender's profile waits for the inbound message after it (a webhook's contacts come
-- before its messages), whose own HSET writes it: one command fewer a message.  Any
-- other operation, a message that names another user, and the body's end write it first.
local prof_w, prof_name, prof_uname          -- prof_w nil: no profile waiting
local prof_of                                -- the name the profile's op gave (op.w)
local function prof_flush()
  if not prof_w then return end
  hset_some(K.user(prof_w), F.NAME, prof_name, F.USERNAME, prof_uname)
  prof_w = nil
end

-- An identity needs no duplicate check of its own: the same hash again changes nothing,
-- an older one is late.  A system message delivered again is recognised by its message
-- id in the identity history; an identity carried by a message or status (part) is
-- never counted on its own and is skipped with its message when that is a repeat.
handlers.id = function(op)
  local part = nz(op.part)
  if part and nz(op.mid) and dup_msgs[op.mid] then return end
  local w = users.who(op.w, op.u)
  -- the time as C wrote it (digits) is kept as the string it came as; anything else that
  -- reads as a number is written again (it is stored and put into JSON as it is)
  local t = tonumber(op.t)
  local ts = t and (string.find(op.t, '^%d+$') and op.t or string.format('%d', t)) or '0'
  local o = { h = op.h, t = t or 0, ts = ts, src = op.src, ack = nz(op.ack), mid = nz(op.mid) and op.mid or nil }
  local outcome, future = identity.observe(w, o)
  if future then n_future = n_future + 1 end
  if outcome == 'duplicate' then
    if not part then n_dup = n_dup + 1 end
    return
  end
  if outcome == 'late' or (outcome == 'old' and not part) then
    n_late = n_late + 1
    event('identity_late', w, { 'hash', op.h, 'created_ms', op.t,
                                'newest', redis.call('HGET', K.user(w), F.HASH) or '' })
    return
  end
  if outcome == 'old' then return end      -- an older message carrying a hash seen before
  if not part then n_accepted = n_accepted + 1 end
end

-- An inbound message moves last_in forward (and lifts a number change it follows)
-- whether or not it was seen before; only its event and its count depend on the ring.
-- Its ring is the record's own field (seen_in, docs/data-model.md): the record is read
-- and written for the window anyway, so the duplicate check costs no command of its own.
handlers['in'] = function(op)
  local w = users.who(op.w, op.u, op.pu)
  local t, ts = ms_to_s(op.t)
  local k, f = K.user(w), win_field(op.n)
  if nz(op.n) then redis.call('SADD', NUMBERS, op.n) end
  local cur = redis.call('HMGET', k, f, F.MOVED_AT, F.SEEN_IN)
  local win = t > (tonumber(cur[1]) or 0) and ts or nil
  -- the ring with this message put in front; nil: a repeat (no id: nothing to remember)
  local ring = nz(op.mid) and seen.push_in(cur[3] or '', op.mid) or nil
  local fresh = ring ~= nil or not nz(op.mid)
  if prof_w == w then
    hset_some(k, f, win, F.SEEN_IN, ring, F.NAME, prof_name, F.USERNAME, prof_uname)
    prof_w = nil
  else
    hset_some(k, f, win, F.SEEN_IN, ring)
  end
  if cur[2] and t >= tonumber(cur[2]) then redis.call('HDEL', k, F.MOVED_TO, F.MOVED_AT) end
  if not fresh then
    n_dup = n_dup + 1
    dup_msgs[op.mid], dups_seen = true, true
    return
  end
  redis.call('XADD', EVENTS, 'MAXLEN', '~', MAXLEN_S, '*', 'kind', 'inbound', 'wa_id', w, 'at', NOW_S,
             'type', op.type, 'id', op.mid)
  n_accepted = n_accepted + 1
end

-- The user moved from number op.w to op.nw: the identity (waiting for an acknowledgement
-- again), the windows and the blocks go with them; the old number is refused
-- (number_changed) until someone writes from it again.  Each step is idempotent; the
-- old number's flag is set again only when no inbound message from it came at or after
-- the change (a late or repeated delivery does not bring it back).
handlers.num = function(op)
  local from, to = users.canon(op.w), op.nw
  local t, ts = ms_to_s(op.t)
  local a = hgetall(K.user(from))
  if nz(op.u) then users.link(op.u, to) end
  users.merge(from, to, 'number')
  if nz(op.pu) then
    users.retire(op.pu, nz(op.u) and op.u or to, to)
  elseif a[F.USER_ID] then
    redis.call('SET', K.alias(a[F.USER_ID]), to)
    redis.call('HSET', K.user(to), F.USER_ID, a[F.USER_ID])
  end
  local last = 0
  for f, v in pairs(a) do
    if f == F.LAST_IN or string.sub(f, 1, #WIN_PREFIX) == WIN_PREFIX then last = math.max(last, tonumber(v) or 0) end
  end
  if t >= last then redis.call('HSET', K.user(from), F.MOVED_TO, to, F.MOVED_AT, ts) end
  if not seen.fresh(from, 'i', op.mid) then
    n_dup = n_dup + 1
    return
  end
  event('number_changed', from, { 'new_wa_id', to })
  n_accepted = n_accepted + 1
end

-- The user's business-scoped id op.prev became op.u (Cloud: a user_changed_user_id
-- system message, or a user_id_update): the new id names the user's record, the old one
-- is retired, and the identity waits for an acknowledgement again, like after a number
-- change (Meta does not document whether the identity key changes with it).
handlers.uid = function(op)
  local target = nz(op.w) and users.canon(op.w) or users.resolve(op.prev)
  -- the record the change ends at (the old id names it afterwards: a repeat finds it)
  local final = (not target or target == op.prev) and op.u or target
  if identity.repeated(final, op.mid) or not seen.fresh(final, 'i', op.mid) then
    n_dup = n_dup + 1
    return
  end
  if not target or target == op.prev then
    -- the old id was the record's own name (no wa_id known): the record takes the new one
    if redis.call('EXISTS', K.user(op.prev)) == 1 then users.merge(op.prev, op.u, 'uid') end
    target = op.u
  elseif nz(op.u) and op.u ~= target then
    redis.call('SET', K.alias(op.u), target)
  end
  users.retire(op.prev, op.u, target)
  identity.reacknowledge(target, op.mid)
  event('user_id_changed', target, { 'previous_user_id', op.prev, 'user_id', op.u })
  n_accepted = n_accepted + 1
end

handlers.sys = function(op)
  local w = users.who(op.w, op.u)
  if not seen.fresh(w, 'i', op.mid) then
    n_dup = n_dup + 1
    return
  end
  event('system', w, { 'type', op.st })
  n_accepted = n_accepted + 1
end

-- A contact check maps the normalised number it was asked for (op.in) to the wa_id it
-- answered (op.w, when valid): the gate asked with that number decides for the wa_id.
-- The status goes to the wa_id's record, or, with no wa_id, to a record of the number
-- itself, so require_valid_contact can refuse it.
handlers.cc = function(op)
  local n = op['in']
  local k = K.contact(n)
  -- "processing" is no result: it never replaces a final one
  if op.st == 'processing' and redis.call('HEXISTS', k, 'status') == 1 then return end
  redis.call('HSET', k, 'status', op.st, 'input', op.raw, CONTACT_WA_ID, op.w or '', 'at', NOW_S)
  redis.call('EXPIRE', k, WEEK)
  if nz(op.w) then
    redis.call('HSET', K.user(op.w), F.CONTACT, op.st, F.CONTACT_AT, NOW_S)
    redis.call('SET', K.contact_rev(op.w), n, 'EX', WEEK)
    -- an earlier answer without a wa_id left a record of the number: it no longer applies
    if op.w ~= n then redis.call('HDEL', K.user(n), F.CONTACT, F.CONTACT_AT) end
  else
    redis.call('HSET', K.user(n), F.CONTACT, op.st, F.CONTACT_AT, NOW_S)
  end
  event('contact_check', nz(op.w) and op.w or n, { 'status', op.st, 'input', op.raw })
  n_accepted = n_accepted + 1
end

-- The sender's profile describes a message; it is not an item of its own.  It is written
-- with the message (prof_flush above).
handlers.prof = function(op)
  local w = users.who(op.w, op.u, op.pu)
  if nz(op.name) or nz(op.uname) then prof_w, prof_name, prof_uname, prof_of = w, op.name, op.uname, op.w end
end

handlers.st = function(op)
  local w = ''
  if nz(op.w) then
    w = users.who(op.w, op.u)
  else
    local sent = sent_memory(op.id)          -- a failed status names no user (Cloud, 2026)
    if sent then w = users.canon(sent.w) end
  end
  -- a status seen before (the WABA client's retry) changes nothing: not even the gate
  if not seen.fresh(w, 's', op.id .. ':' .. op.st) then
    n_dup = n_dup + 1
    dup_msgs['st:' .. op.id .. ':' .. op.st], dups_seen = true, true
    return
  end
  if op.st == 'failed' and identity_codes(op.codes) then refusal(w, op.id, op.codes) end
  -- event('status', …) written out: the most frequent event builds no table
  redis.call('XADD', EVENTS, 'MAXLEN', '~', MAXLEN_S, '*', 'kind', 'status', 'wa_id', w, 'at', NOW_S,
             'id', op.id, 'status', op.st, 'codes', op.codes)
  n_accepted = n_accepted + 1
end

-- A send's own answer, or an error beside failed statuses, said WhatsApp refused it for
-- identity (480, 137000).
handlers.ref = function(op)
  -- beside a failed status that was a repeat: it goes with it
  if nz(op.mid) and dup_msgs['st:' .. op.mid .. ':failed'] then return end
  local w = nz(op.w) and users.who(op.w, op.u) or ''
  refusal(w, op.mid, op.codes)
  n_accepted = n_accepted + 1
end

-- A user_identity_changed that names the user but whose hash or time cannot be used:
-- the gate closes all the same (the On-Premises worker fetches the hash).
handlers.unk = function(op)
  local w = users.who(op.w, op.u)
  if not seen.fresh(w, 'i', op.mid) or identity.repeated(w, op.mid) then
    n_dup = n_dup + 1
    return
  end
  identity.refused(w, 'an identity change could not be used: ' .. op.why, op.mid)
  n_accepted = n_accepted + 1
end

-- A send went out: its numbers are no longer "checked and never sent to" (budget), and
-- its message id is remembered for the failed status that may name nobody else.
local checks_exist          -- whether P:checks exists, read once a call (nil: not yet)
handlers.sent = function(op)
  -- with no unsent checks (the common case) there is nothing to take off the budget
  if checks_exist == nil then checks_exist = redis.call('EXISTS', CHECKS) == 1 end
  if checks_exist and nz(op.spec) then
    for _, key in string.gmatch(op.spec, '(%a):(%S+)') do redis.call('ZREM', CHECKS, key) end
    for _, e in ipairs(users.of(op.spec)) do
      redis.call('ZREM', CHECKS, e.w)
      local d = redis.call('GET', K.contact_rev(e.w))
      if d then redis.call('ZREM', CHECKS, d) end
    end
  end
  if nz(op.mid) and nz(op.w) and SENT_TTL > 0 then
    redis.call('SET', K.sent(op.mid), users.canon(op.w) .. SENT_SEP .. (op.n or '') .. SENT_SEP .. (op.h or ''),
               'EX', SENT_TTL_ARG)          -- the argument: a number would be written with printf
  end
end

handlers.err = function(op)
  event('error', '', { 'code', op.code, 'title', op.title, 'details', op.details })
  n_accepted = n_accepted + 1
end

-- A block names a recipient as a caller does (op.spec: recipient forms): blocking marks
-- every user it could name that waguard knows, and the most likely one; unblocking only
-- the most likely one, so that no other user's block is lifted by a guess.
handlers.blk = function(op)
  local b = op.b == '1' and 1 or 0
  local f = blk_field(op.n)
  for i, e in ipairs(users.of(op.spec)) do
    local w = e.w
    if i == 1 or (b == 1 and redis.call('EXISTS', K.user(w)) == 1) then
      redis.call('HSET', K.user(w), f, b)
      if b == 1 then
        redis.call('ZADD', K.blocks(op.n), NOW_S, w)
        if nz(op.n) then redis.call('SADD', NUMBERS, op.n) end
      else
        redis.call('ZREM', K.blocks(op.n), w)
      end
      event(b == 1 and 'blocked' or 'unblocked', w, {})
    end
  end
  n_accepted = n_accepted + 1
end

handlers.dead = function(op)
  dead_letter(op.reason, op.item)
  n_dead = n_dead + 1
end

-- Errors that say Redis itself cannot take writes now: the body is answered 503, so the
-- WABA client sends it again (every operation is idempotent).
local function transient(err)
  local e = tostring(err)
  return string.find(e, 'OOM', 1, true) or string.find(e, 'READONLY', 1, true) or
         string.find(e, 'MISCONF', 1, true) or string.find(e, 'NOREPLICAS', 1, true) or
         string.find(e, 'BUSY', 1, true)
end

-- The reply is one string, a line a body: its APPLY_REPLY counts, or '!' and the error
-- Redis gave it (src/store.c reads it): Redis looks at each table of a reply for err, ok,
-- double, map, set… before its elements (2 % of a status body's cost), and hiredis makes
-- an object of each element.
local row = {}                         -- a body's counts as strings, filled again each body
-- 0 to 9 as strings, made at their first use (the library's load may not call tostring)
local COUNT_S = {}
local function count_s(n)
  local s = COUNT_S[n]
  if s then return s end
  s = tostring(n)
  if n >= 0 and n <= 9 then COUNT_S[n] = s end
  return s
end
local function refused_line(err) return '!' .. string.gsub(err, '[\r\n]', ' ') end

-- A body's line, kept by its counts when each is one digit: a handful of lines serve
-- nearly every body (building one is seven conversions and a concat, a fifth of what a
-- body with no operation costs).
local LINES, LINES_N = {}, 0
local function line_of(a, d, l, dead, q, f, u)
  local key
  if a < 10 and d < 10 and l < 10 and dead < 10 and q < 10 and f < 10 and u < 10 then
    key = (((((a * 10 + d) * 10 + l) * 10 + dead) * 10 + q) * 10 + f) * 10 + u
    local s = LINES[key]
    if s then return s end
  end
  local r = row
  r[APPLY_REPLY.ACCEPTED], r[APPLY_REPLY.DUPLICATES] = count_s(a), count_s(d)
  r[APPLY_REPLY.LATE], r[APPLY_REPLY.DEAD] = count_s(l), count_s(dead)
  r[APPLY_REPLY.QUEUED], r[APPLY_REPLY.FUTURE] = count_s(q), count_s(f)
  r[APPLY_REPLY.UNPLACED] = count_s(u)
  local s = table.concat(r, ' ')
  if key and LINES_N < 512 then LINES[key], LINES_N = s, LINES_N + 1 end
  return s
end

local function describe(kind, op)
  local ok, s = pcall(cjson.encode, op)
  return ok and s or tostring(kind)
end

FN.apply = function(keys, args)
  begin(args)
  CTX.first_seen, CTX.api = args[3], args[4]
  if args[5] ~= SENT_TTL_ARG then SENT_TTL_ARG, SENT_TTL = args[5], tonumber(args[5]) or 0 end
  checks_exist = nil
  local nb, i = count_arg(args[6]), 7
  local out = {}
  for b = 1, nb do
    CTX.ack = args[i]
    local nops = count_arg(args[i + 1])
    i = i + 2
    n_accepted, n_dup, n_late, n_dead, n_future, n_unplaced = 0, 0, 0, 0, 0, 0
    if dups_seen then dup_msgs, dups_seen = {}, false end
    identity.queued = 0
    local failed, lost
    for _ = 1, nops do
      local kind = args[i]
      local fields = OPS[kind]
      if not fields then
        lost = 'unknown operation ' .. tostring(kind)   -- the rest of the call cannot be read
        break
      end
      local op = op_of[kind]
      if not op then
        op = {}
        op_of[kind] = op
      end
      for j = 1, #fields do op[fields[j]] = args[i + j] end
      i = i + 1 + #fields
      if not failed then
        -- an operation that fails (a value of a shape no handler expects, a bug) becomes
        -- a dead letter with the reason; the rest of the body stands and is answered 200
        -- a profile waiting for its message is written before any other operation
        local ok, err = true, nil
        if prof_w and (kind ~= 'in' or op.w ~= prof_of) then ok, err = pcall(prof_flush) end
        if ok then ok, err = pcall(handlers[kind], op) end
        if not ok then
          if transient(err) then
            failed = err
          else
            pcall(dead_letter, 'the store could not apply it: ' .. tostring(err), describe(kind, op))
            n_dead = n_dead + 1
          end
        end
      end
    end
    if prof_w and not failed and not lost then
      local ok, err = pcall(prof_flush)
      if not ok then
        if transient(err) then
          failed = err
        else
          pcall(dead_letter, 'the store could not apply it: ' .. tostring(err), describe('prof', {
            w = prof_w, name = prof_name, uname = prof_uname }))
          n_dead = n_dead + 1
        end
      end
    end
    prof_w = nil
    if lost then
      for r = b, nb do out[r] = refused_line('ERR apply: ' .. lost) end
      return table.concat(out, '\n')
    end
    if failed then
      out[b] = refused_line('ERR apply: ' .. tostring(failed))
    else
      out[b] = line_of(n_accepted, n_dup, n_late, n_dead, identity.queued, n_future, n_unplaced)
    end
  end
  return table.concat(out, '\n')
end
