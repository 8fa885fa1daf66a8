-- identity: the one owner of a user's identity state.  Every change of F.STATE, the
-- acknowledgement queue and the identity indexes is a function of this table; nothing
-- else in the library writes them (docs/identity.md draws the machine).
--
-- A record's identity is its newest hash (F.HASH, its time F.TS, and F.RX = 1 when that
-- time was not believed and the time it arrived stands in) and a state (F.STATE):
--   pending       the newest hash waits for its acknowledgement: queued with ack = auto,
--                 or waiting for an operator; "leased" while a worker holds it (F.LEASE,
--                 the lease's end, later than now)
--   acknowledged  the identity is acknowledged: the gate is open for it
--   failed        the acknowledgement was given up; an operator asks again
--   hash_unknown  WhatsApp refused a send because the identity changed (480, 137000), or
--                 said it changed in a way that cannot be used, and the new hash is not
--                 known yet
-- Apart from these, a record the user left for another number is moved (F.MOVED_TO).
--
-- The invariants (tested through the real daemon in tests/test_identity_state.py):
--   I1  a hash once seen for a user (K.hashes: every hash recorded or found late) never
--       becomes the newest again: an observation of it, whatever its time or its
--       acknowledged flag, is late;
--   I2  hash_unknown is left only by a hash never seen before, or by the WABA client's own
--       answer to GET identity (sources lookup and reconcile), which makes the hash it
--       names pending: never acknowledged at once;
--   I3  an acknowledgement names the newest hash or does nothing, and none is taken in
--       hash_unknown;
--   I4  the gate is open for identity only in acknowledged, or where no identity is known;
--   I5  when two records become one (a link, a number or user id change), the one left
--       holds every hash either had seen and the stricter state; after a number or user
--       id change an acknowledged identity waits for an acknowledgement again, which an
--       old message's acknowledged flag for that hash does not give (F.REACK): the
--       worker's PUT, the Cloud API's local record or an operator does; F.REACK goes
--       with the hash when two records become one.
-- The policies of the call, set by the function that runs (apply, claim, outcome, …).
local CTX = { ack = 'auto', api = 'onprem', first_seen = 'trust' }
identity.queued = 0           -- acknowledgements made due by this call (the worker is kicked)

local function newer(t1, h1, t2, h2) return t1 > t2 or (t1 == t2 and h1 > h2) end

-- A stored time beyond Redis's clock (recorded before times were checked) is older
-- than anything real.
local function stored_ts(v)
  local t = tonumber(v) or 0
  if t > NOW + FUTURE_MS then return -1 end
  return t
end

-- The order an identity takes: its time, or before anything when it was not believed.
local function order_of(ts, rx)
  if rx == '1' then return -1 end
  return stored_ts(ts)
end

function identity.seen(w, h) return redis.call('SISMEMBER', K.hashes(w), h) == 1 end

local function remember(w, h)
  redis.call('SADD', K.hashes(w), h)
  -- a user with over 1,000 changes forgets one at random (docs/identity.md)
  if redis.call('SCARD', K.hashes(w)) > 1000 then redis.call('SPOP', K.hashes(w)) end
end

-- True when user w's history holds message (or status) mid, with hash h when h is given.
-- Only the entries whose text holds mid are decoded (most hold none): cjson writes '/'
-- as '\/', so an id with '/', '"', '\' or a control character is looked for in every
-- decoded entry instead.
local function history_has(w, mid, h)
  if not nz(mid) then return false end
  local plain = not string.find(mid, '[%c"/\\]')
  for _, e in ipairs(redis.call('LRANGE', K.history(w), '0', LIST_KEEP_LAST)) do
    if not plain or string.find(e, mid, 1, true) then
      local ok, d = pcall(cjson.decode, e)
      if ok and d.message_id == mid and (h == nil or d.hash == h) then return true end
    end
  end
  return false
end

-- True when user w's history holds hash h from message mid: the same notification again.
local function in_history(w, h, mid) return history_has(w, mid, h) end

-- An entry of a user's identity history (docs/data-model.md) as JSON text: hash h from
-- source src, created at ts (ms, a string), received now, whether it came acknowledged,
-- the message that carried it (left out when none) and one more string field k2 = v2.
local function history_entry(h, src, ts, acked, mid, k2, v2)
  local more = k2 and (',"' .. k2 .. '":' .. json_str(v2)) or ''
  return '{"hash":' .. json_str(h) .. ',"source":' .. json_str(src) .. ',"created_timestamp":' .. ts ..
         ',"received_at":' .. NOW_S .. ',"acknowledged":' .. (acked and 'true' or 'false') ..
         (nz(mid) and ',"message_id":' or '') .. (nz(mid) and json_str(mid) or '') .. more .. '}'
end

local function push_history(w, entry) push_capped(K.history(w), entry) end

-- ---- the indexes and the queue, kept by the state alone ----------------------------

-- Queued due now, unless a worker holds a lease on the user: its outcome finds what
-- changed and queues it then, so that one PUT at a time goes out per user.
local function queue(w)
  if (tonumber(redis.call('HGET', K.user(w), F.LEASE)) or 0) <= NOW then
    redis.call('ZADD', QUEUE, NOW_S, w)
    identity.queued = identity.queued + 1
  end
end

local function unindex(w)
  redis.call('ZREM', QUEUE, w)
  redis.call('ZREM', SINCE, w)
  redis.call('ZREM', PENDING, w)
  redis.call('ZREM', FAILED, w)
end

-- Whether a worker has anything to do for a record in state s: an On-Premises worker
-- fetches an unknown hash (GET identity); the Cloud API has no call for it.
local function workable(s)
  if s == STATE.PENDING then return true end
  return s == STATE.HASH_UNKNOWN and CTX.api ~= 'cloud'
end

-- The one writer of F.STATE: the state, the derived F.ACK, the indexes and the queue.
-- requested: an operator asked for this acknowledgement (kept, or queued whatever the
-- policy says).  more: further (field, value, …) the transition writes with the state,
-- in the same HSET.  set, del: a record()'s HSET and HDEL of the same record, not sent
-- yet: the state goes into that HSET, and the HDEL is sent after it (two commands
-- where there were four).  prev: the state the record was in, read in this call ('': no
-- state), when the caller knows it: a record in pending or hash_unknown is in the
-- indexes a pending one needs, with its episode's start, and one in no state or
-- acknowledged is not among the failed (the indexes are this function's alone).
local function set_state(w, s, requested, more, set, del, prev)
  local k = K.user(w)
  local a = set or { 'HSET', k }
  local n = #a
  a[n + 1], a[n + 2], a[n + 3], a[n + 4] = F.STATE, s, F.ACK, s == STATE.ACKNOWLEDGED and '1' or '0'
  for i = 1, more and #more or 0 do a[n + 4 + i] = more[i] end
  redis.call(unpack(a))
  if del then redis.call(unpack(del)) end
  if s == STATE.ACKNOWLEDGED then
    unindex(w)
    redis.call('HDEL', k, F.REQUESTED_BY, F.LEASE, F.REACK)
  elseif s == STATE.FAILED then
    redis.call('ZREM', QUEUE, w)
    redis.call('ZREM', PENDING, w)
    redis.call('ZREM', SINCE, w)
    redis.call('ZADD', FAILED, '0', w)
  elseif prev ~= STATE.PENDING and prev ~= STATE.HASH_UNKNOWN then
    redis.call('ZADD', PENDING, '0', w)
    if prev ~= '' and prev ~= STATE.ACKNOWLEDGED then redis.call('ZREM', FAILED, w) end
    redis.call('ZADD', SINCE, 'NX', NOW_S, w)
  end
  if s ~= STATE.ACKNOWLEDGED and s ~= STATE.FAILED and workable(s) and (CTX.ack == 'auto' or requested) then
    queue(w)
  end
end

-- The identity of w changed now: the holds of [hold] start again, and the change is
-- counted for the console's last 24 hours (P:changes, kept 30 days, trimmed once a call).
-- The record's fields go into the caller's HSET and HDEL (set, del: argument lists of
-- redis.call), so that record() writes them with the hash.
local changes_trimmed_at     -- the call (CALL_N) that trimmed P:changes last
local function changed_fields(w, set, del)
  set[#set + 1], set[#set + 2] = F.CHANGED_AT, NOW_S
  del[#del + 1] = F.HOLD_RELEASED
  redis.call('ZADD', CHANGES, NOW_S, w)
  if changes_trimmed_at ~= CALL_N then
    changes_trimmed_at = CALL_N
    redis.call('ZREMRANGEBYSCORE', CHANGES, '-inf', NOW - 30 * DAY_MS)
  end
end
local function changed_now(w)
  local k = K.user(w)
  local set, del = { 'HSET', k }, { 'HDEL', k }
  changed_fields(w, set, del)
  redis.call(unpack(set))
  redis.call(unpack(del))
end

-- ---- the transitions ------------------------------------------------------------------

-- The newest hash h (recorded by record()) waits for its acknowledgement.  keep_request:
-- the same episode goes on (hash_unknown resolved), so an operator's request stands.
-- set, del, prev: record()'s commands, when it left them to this, and the state before
-- (set_state).
function identity.pending(w, keep_request, set, del, prev)
  local k = K.user(w)
  local requested = false
  if keep_request then
    requested = nz(redis.call('HGET', k, F.REQUESTED_BY))
  elseif del then
    del[#del + 1] = F.REQUESTED_BY           -- an operator's request was for the old hash
  else
    redis.call('HDEL', k, F.REQUESTED_BY)
  end
  set_state(w, STATE.PENDING, requested, { F.ATTEMPTS, '0', F.ERR, '' }, set, del, prev)
end

-- The newest hash h is acknowledged (by who, with the WABA client's answer).  The
-- caller has checked that h is the newest and that the state is not hash_unknown (I3).
function identity.acknowledged(w, h, who, answer)
  set_state(w, STATE.ACKNOWLEDGED, false, { F.ERR, '', F.ACKED_AT, NOW_S, F.ACKED_BY, who })
  audit(w, h, who, 'acknowledged', answer)
end

-- The acknowledgement of h is given up (the WABA client refused it for good).
function identity.failed(w, h, answer)
  set_state(w, STATE.FAILED, false, { F.ERR, answer or '' })
  audit(w, h, 'auto', 'failed', answer)
end

-- True when the identity history of w holds message (or status) mid: the same
-- notification again, whatever hash it carried.
function identity.repeated(w, mid) return history_has(w, mid, nil) end

-- WhatsApp refused a send because the identity changed, or said it changed in a way
-- that cannot be used (why; mid: the message or status that said so, kept in the
-- history so that a repeat of it is recognised): the gate closes now, before the new
-- hash is known.  Returns false when the record was in hash_unknown already.
function identity.refused(w, why, mid)
  local k = K.user(w)
  if nz(mid) then push_history(w, history_entry('', 'refused', NOW_S, false, mid, 'why', why)) end
  if redis.call('HGET', k, F.STATE) == STATE.HASH_UNKNOWN then return false end
  redis.call('HSET', k, F.ATTEMPTS, '0', F.ERR, why)
  changed_now(w)
  redis.call('ZADD', REFUSALS, NOW_S, w)
  redis.call('ZREMRANGEBYSCORE', REFUSALS, '-inf', NOW - 30 * DAY_MS)
  set_state(w, STATE.HASH_UNKNOWN)
  event('identity_mismatch', w, { 'why', why })
  return true
end

-- The user's identity must be acknowledged again (a user id change on the Cloud API,
-- said by message mid, kept in the history): the same hash, or no hash, waits in pending.
function identity.reacknowledge(w, mid)
  local k = K.user(w)
  if nz(mid) then
    push_history(w, history_entry(redis.call('HGET', k, F.HASH) or '', 'user_id_change', NOW_S, false, mid))
  end
  local s = redis.call('HGET', k, F.STATE)
  if s == STATE.HASH_UNKNOWN or s == STATE.PENDING or s == STATE.FAILED then return end
  changed_now(w)
  redis.call('HSET', k, F.REACK, redis.call('HGET', k, F.HASH) or '')
  identity.pending(w, false)
end

-- Records hash h (time ts: ms as a string; rx: not believed) as the newest of w.  changed: the identity
-- changed (a hash replaced another, or WhatsApp said so): the time it reached us starts
-- the holds of [hold] and answers the identity-change check.  mid: the message that
-- carried it (kept in the history: a repeat of it is a duplicate).  wait: nil when the
-- caller acknowledges the hash next; else { keep = keep_request, prev = the state before }:
-- the hash waits for its acknowledgement, and identity.pending sends the record's HSET and
-- HDEL with the state, before anything else is written (a write that failed after them
-- would leave the gate closed, never open on the hash it replaced).
local function record(w, h, ts, rx, src, mid, changed, acked, wait)
  local k = K.user(w)
  -- one HSET and one HDEL: the hash (not believed: rx), the change (changed_fields), and
  -- who acknowledged the hash it replaces, and when, which is in the trail (K.acks), not
  -- on it
  local set = { 'HSET', k, F.HASH, h, F.TS, ts }
  local del = { 'HDEL', k, F.REACK, F.ACKED_BY, F.ACKED_AT }
  if rx then set[7], set[8] = F.RX, '1' else del[6] = F.RX end
  if changed then changed_fields(w, set, del) end
  if wait then
    identity.pending(w, wait.keep, set, del, wait.prev)
  else
    redis.call(unpack(set))
    redis.call(unpack(del))
  end
  remember(w, h)
  push_history(w, history_entry(h, src, ts, acked, mid))
  event('identity_changed', w, { 'hash', h, 'created_ms', ts, 'source', src })
end

-- An identity observation o = { h, t (ms, 0: none), ts (t as the string it came as), src, ack,
-- mid } for record w.
-- Returns the outcome ('first', 'newer', 'acknowledged', 'resolved', 'known', 'duplicate',
-- 'late', or 'old': late, and a hash seen before), and whether its time was in the future.
function identity.observe(w, o)
  local k = K.user(w)
  local cur = redis.call('HMGET', k, F.HASH, F.TS, F.RX, F.STATE)
  local h, t, ts, future = o.h, o.t, o.ts, false
  if t == 0 then t, ts = NOW, NOW_S end
  if t > NOW + FUTURE_MS then
    -- a skewed WABA host or a unit mix-up would hide every real change after it
    event('identity_future', w, { 'hash', h, 'created_ms', ts })
    t, ts, future = NOW, NOW_S, true
  end
  local state = cur[4]
  if not cur[1] then
    if identity.seen(w, h) then return 'old', future end                   -- I1
    if state then
      -- closed with no hash known yet (a refused send, a user id change): the first
      -- hash never seen fills it in (I2)
      record(w, h, ts, future, o.src, o.mid, true, o.ack, not o.ack and { keep = true, prev = state } or nil)
      if o.ack then identity.acknowledged(w, h, 'whatsapp', 'the WABA client reported it acknowledged') end
      return 'newer', future
    end
    -- the first hash seen for this user: a system message is always a change; a hash a
    -- message carries is trusted when the WABA client says it is acknowledged, a Cloud
    -- one when [identity] first_seen = trust
    local trusted = CTX.first_seen == 'trust' and (o.ack or o.src == 'cloud')
    record(w, h, ts, future, o.src, o.mid, o.src == 'system', trusted,
           not trusted and { keep = false, prev = '' } or nil)
    if trusted then
      identity.acknowledged(w, h, o.ack and 'whatsapp' or 'first_seen',
                            o.ack and 'the WABA client reported it acknowledged'
                            or 'the first hash seen for this user ([identity] first_seen = trust)')
    end
    return 'first', future
  end
  if cur[1] == h then
    if in_history(w, h, o.mid) then return 'duplicate', future end
    if state == STATE.HASH_UNKNOWN then
      -- a copy of the hash on record says nothing about the one WhatsApp now has; the
      -- WABA client's own answer says it is that one, still to be acknowledged (I2)
      if o.src == 'lookup' or o.src == 'reconcile' then
        identity.pending(w, true)
        return 'resolved', future
      end
      return 'known', future
    end
    -- (a flag in a message does not answer an acknowledgement asked for again, I5)
    if o.ack and state ~= STATE.ACKNOWLEDGED and redis.call('HGET', k, F.REACK) ~= h then
      identity.acknowledged(w, h, 'whatsapp', 'the WABA client reported it acknowledged')
      return 'acknowledged', future
    end
    return 'known', future
  end
  -- every hash in the history is one w was seen with (record and the tie remember it, a
  -- merge unites the sets): a hash never seen cannot be a repeat, and needs no search
  local seen_before = identity.seen(w, h)
  if seen_before and in_history(w, h, o.mid) then return 'duplicate', future end
  if seen_before then return 'old', future end                               -- I1
  local at = order_of(cur[2], cur[3])
  if not newer(t, h, at, cur[1]) then
    remember(w, h)                       -- found late, it can never be the newest later
    if t ~= at then return 'late', future end
    -- as old as the newest, to the millisecond (Cloud times are whole seconds): which key
    -- the user holds now cannot be told, so the newest waits for an acknowledgement again
    -- (the order between the two stays the hashes', the same whatever arrives first)
    push_history(w, history_entry(h, o.src, ts, false, o.mid, 'tied_with', cur[1]))
    identity.reacknowledge(w, nil)
    return 'tied', future
  end
  -- as old as the one it replaces (it sorts after it): which key the user holds cannot be
  -- told, so a flag that says acknowledged does not answer it (the tie rule above)
  local ack = o.ack and t ~= at
  -- the hash the worker fetched for a refused send (hash_unknown) ends the same episode:
  -- an operator's request to acknowledge stands
  record(w, h, ts, future, o.src, o.mid, true, ack, not ack and {
    keep = state == STATE.HASH_UNKNOWN and (o.src == 'lookup' or o.src == 'reconcile'), prev = state or '' } or nil)
  if ack then identity.acknowledged(w, h, 'whatsapp', 'the WABA client reported it acknowledged') end
  return 'newer', future
end

-- ---- the acknowledgement worker ------------------------------------------------------

-- True when record values cur (hash, state) still hold the hash h a job was for: the same
-- hash, or ('' ) still no hash known.
local function holds(cur_hash, cur_state, h)
  if h == '' then return (not cur_hash and cur_state ~= nil) or cur_state == STATE.HASH_UNKNOWN end
  return cur_hash == h
end

-- Up to max due users, each leased for lease ms so that one worker at a time holds it;
-- a dead worker's lease runs out and another takes over.  Returns the jobs (CLAIM_JOB
-- each); a job's hash is '' when it is not known (the worker asks the WABA client).
function identity.claim(lease, max)
  local due = redis.call('ZRANGEBYSCORE', QUEUE, '-inf', NOW_S, 'LIMIT', '0', max)
  local until_s                 -- the lease's end as a string, written at the first job
  local out = {}
  for _, w in ipairs(due) do
    local k = K.user(w)
    local v = redis.call('HMGET', k, F.HASH, F.STATE, F.TS, F.REQUESTED_BY)
    if not workable(v[2]) then
      redis.call('ZREM', QUEUE, w)
    else
      local until_ = until_s or tostring(NOW + lease)      -- written once a call
      until_s = until_
      redis.call('ZADD', QUEUE, until_, w)
      redis.call('HSET', k, F.LEASE, until_)
      local job = {}
      job[CLAIM_JOB.W] = w
      job[CLAIM_JOB.HASH] = (v[2] == STATE.HASH_UNKNOWN) and '' or (v[1] or '')
      job[CLAIM_JOB.ATTEMPTS] = redis.call('HINCRBY', k, F.ATTEMPTS, '1')
      job[CLAIM_JOB.TS] = v[3] or '0'
      job[CLAIM_JOB.WHO] = v[4] or 'auto'
      job[CLAIM_JOB.LEASE] = until_
      for i = 1, CLAIM_JOB.N do out[#out + 1] = job[i] end
    end
  end
  return out
end

-- The outcome of one acknowledgement of hash h for record w: 'ok' (the WABA client
-- answered 2xx without errors, or the Cloud API's local record), 'retry' after delay
-- ms, or 'failed'.  lease: the lease the worker claimed with ('' for a forwarded PUT).
-- An acknowledgement applies only while h is still the newest (I3); a retry or a
-- failure only while the same worker still holds the lease and nothing acknowledged
-- it meanwhile.  Returns 1 when applied, 0 when not.
function identity.outcome(w, h, result, who, answer, delay, lease)
  local k = K.user(w)
  local cur = redis.call('HMGET', k, F.HASH, F.STATE, F.LEASE, F.REQUESTED_BY)
  local holder = lease ~= '' and cur[3] == lease
  if holder then redis.call('HDEL', k, F.LEASE) end
  if not holds(cur[1], cur[2], h) then
    audit(w, h, who, 'superseded', answer)
    -- what changed meanwhile goes out now if the policy says so or an operator asked
    if workable(cur[2]) and (CTX.ack == 'auto' or nz(cur[4])) and (holder or not cur[3]) then
      redis.call('ZADD', QUEUE, NOW_S, w)
      identity.queued = identity.queued + 1
    end
    return 0
  end
  if result == 'ok' then
    if cur[2] == STATE.HASH_UNKNOWN then                                        -- I3
      audit(w, h, who, 'refused', 'the new hash is not known yet: ' .. (answer or ''))
      return 0
    end
    if cur[2] ~= STATE.ACKNOWLEDGED then identity.acknowledged(w, h, who, answer) end
    return 1
  end
  if cur[2] == STATE.ACKNOWLEDGED or (lease ~= '' and not holder) then
    audit(w, h, who, 'stale', answer)     -- acknowledged meanwhile, or another worker took over
    return 0
  end
  if result == 'retry' then
    local due = NOW + (tonumber(delay) or 1000)
    redis.call('ZADD', QUEUE, due, w)
    redis.call('HSET', k, F.ERR, answer, F.NEXT, due)
    audit(w, h, who, 'retry', answer)
  else
    identity.failed(w, h, answer)
  end
  return 1
end

-- An operator (who) asks for the acknowledgement of w now, because reason.  Returns a
-- REQ value.
function identity.request(w, who, reason)
  local k = K.user(w)
  local v = redis.call('HMGET', k, F.HASH, F.STATE)
  if not v[1] and not v[2] then return REQ.UNKNOWN end
  if v[2] == STATE.ACKNOWLEDGED then return REQ.ALREADY end
  if v[2] == STATE.HASH_UNKNOWN and CTX.api == 'cloud' then
    -- acknowledging the hash on record would let sends through to whoever holds the new key
    return REQ.WAITS_FOR_HASH
  end
  redis.call('HSET', k, F.REQUESTED_BY, who, F.ATTEMPTS, '0')
  audit(w, v[1] or '', who, 'requested', nz(reason) and reason or 'asked to acknowledge now')
  if v[2] == STATE.HASH_UNKNOWN then
    set_state(w, STATE.HASH_UNKNOWN, true)        -- the worker fetches the new hash first
  else
    set_state(w, STATE.PENDING, true)
  end
  return REQ.QUEUED
end

-- ---- moving an identity between records (I5) ----------------------------------------

-- Strictness of a state: what the gate must keep closed longest.
local STRICT = { [STATE.HASH_UNKNOWN] = 4, [STATE.PENDING] = 3, [STATE.FAILED] = 2, [STATE.ACKNOWLEDGED] = 1 }

-- The identity of record `from` goes into record `to` (how: 'link', 'number', 'uid';
-- users.merge() moves the rest of the record).  The lease is not carried: a worker
-- holding `from` finds its hash gone there and its outcome does nothing.
function identity.moved(from, to, how)
  local kf, kt = K.user(from), K.user(to)
  local a = redis.call('HMGET', kf, F.HASH, F.TS, F.RX, F.STATE, F.CHANGED_AT, F.ERR, F.REQUESTED_BY, F.REACK)
  local b = redis.call('HMGET', kt, F.HASH, F.TS, F.RX, F.STATE, F.CHANGED_AT, F.REACK)
  redis.call('SUNIONSTORE', K.hashes(to), K.hashes(to), K.hashes(from))
  local hist = redis.call('LRANGE', K.history(from), '0', LIST_KEEP_LAST)
  for i = #hist, 1, -1 do redis.call('LPUSH', K.history(to), hist[i]) end
  redis.call('LTRIM', K.history(to), '0', LIST_KEEP_LAST)
  if a[1] or a[4] then
    local state
    if not (b[1] or b[4]) then
      state = a[4] or STATE.PENDING
      redis.call('HSET', kt, F.STATE, state)
      if a[1] then redis.call('HSET', kt, F.HASH, a[1], F.TS, a[2] or 0) end
      if a[3] then redis.call('HSET', kt, F.RX, a[3]) end
      if a[6] then redis.call('HSET', kt, F.ERR, a[6]) end
      if a[7] then redis.call('HSET', kt, F.REQUESTED_BY, a[7]) end
      if a[8] then redis.call('HSET', kt, F.REACK, a[8]) end
    else
      local sa, sb = a[4] or STATE.PENDING, b[4] or STATE.PENDING
      local take = a[1] and (not b[1] or (a[1] ~= b[1] and
                   newer(order_of(a[2], a[3]), a[1], order_of(b[2], b[3]), b[1])))
      if take then
        redis.call('HSET', kt, F.HASH, a[1], F.TS, a[2] or 0)
        if a[3] then redis.call('HSET', kt, F.RX, a[3]) else redis.call('HDEL', kt, F.RX) end
        state = sa
      elseif a[1] and a[1] == b[1] then
        state = (STRICT[sa] or 3) > (STRICT[sb] or 3) and sa or sb
      else
        state = sb
      end
      if a[1] and b[1] and a[1] ~= b[1] and order_of(a[2], a[3]) == order_of(b[2], b[3]) then
        -- two hashes as old as each other: which key the user holds cannot be told, so
        -- the stricter state of the two, whichever hash the order keeps
        state = (STRICT[sa] or 3) > (STRICT[sb] or 3) and sa or sb
      end
      if sa == STATE.HASH_UNKNOWN or sb == STATE.HASH_UNKNOWN then state = STATE.HASH_UNKNOWN end
      -- a hash that waits for its acknowledgement again goes on waiting for it whichever
      -- record named it: an old message's flag does not answer it here either (I5)
      local kept = take and a[1] or b[1]
      if kept and a[8] == kept and b[6] ~= kept then redis.call('HSET', kt, F.REACK, kept) end
    end
    local at = math.max(tonumber(a[5]) or 0, tonumber(b[5]) or 0)
    if at > 0 then redis.call('HSET', kt, F.CHANGED_AT, at) end
    if how ~= 'link' and state == STATE.ACKNOWLEDGED then
      -- a new number or a new user id: the identity is acknowledged again before a send
      state = STATE.PENDING
      changed_now(to)
      redis.call('HSET', kt, F.REACK, redis.call('HGET', kt, F.HASH) or '')
    end
    redis.call('HSET', kt, F.ATTEMPTS, '0')
    set_state(to, state, nz(redis.call('HGET', kt, F.REQUESTED_BY)))
  end
  -- the old record holds no identity any more
  unindex(from)
  redis.call('HDEL', kf, unpack(ID_FIELDS))
end
