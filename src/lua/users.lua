-- users: which record a name names (the Lua half of include/recipient.h).
--
-- A record is P:user:{W}, W a wa_id or, for a user known only by it, a business-scoped
-- user id.  A user id seen together with a wa_id is an alias of that wa_id's record
-- (P:alias:{U} holds the record's name); a user id that was replaced (a user id change,
-- a number change on the Cloud API) stays an alias of the record but is retired
-- (P:retired:{U} holds the new id): the gate refuses it as number_changed.  Aliases may
-- chain (an id retired into an id that was later linked to a wa_id): resolve() follows
-- the chain to its end, so every name resolves to one record, fully.

-- The shape of a user id, as recipient_is_user_id() checks it in C: two upper-case
-- letters and a dot.  Anything else here is a wa_id or a dialled number.
function users.is_uid(x) return string.find(x, '^%u%u%.') ~= nil end

local MAX_HOPS = 8

-- The record x names, and the id it was retired into when x itself is a retired user
-- id (else nil).  nil, nil when the chain does not end (a loop: never written, but a
-- name that cannot be resolved names no one the gate could allow).
function users.resolve(x)
  if not x or x == '' or not users.is_uid(x) then return x, nil end
  local retired = redis.call('GET', K.retired(x)) or nil
  local cur = x
  for _ = 1, MAX_HOPS do
    local nxt = redis.call('GET', K.alias(cur))
    if not nxt or nxt == cur then return cur, retired end
    cur = nxt
    if not users.is_uid(cur) then return cur, retired end
  end
  return nil, retired
end

function users.canon(x)
  local w = users.resolve(x)
  return w or x
end

-- The users a recipient names, most likely first, as { w = record, retired = new id }:
-- spec holds the forms recipient_spec() writes ("i:KEY d:KEY …", include/recipient.h).
-- An i form is a wa_id or user id taken as it is; a d form is a phone number: the wa_id
-- a contact check mapped it to, then the wa_id of the same digits.
function users.of(spec)
  local list, seen = {}, {}
  local function add(x)
    if not x or x == '' then return end
    local w, retired = users.resolve(x)
    w = w or x
    local e = seen[w]
    if e then
      e.retired = e.retired or retired
      return
    end
    e = { w = w, retired = retired }
    seen[w] = e
    list[#list + 1] = e
  end
  for kind, key in string.gmatch(spec, '(%a):(%S+)') do
    -- e: an operator's exact name (users.pick): itself, like i
    if kind == 'd' then
      local m = redis.call('HGET', K.contact(key), CONTACT_WA_ID)
      if m and m ~= '' then add(m) end
    end
    add(key)
  end
  return list
end

-- The windows (last_in, last_in:N) and blocks (blocked, blocked:N) of the fields a (a
-- record as a table) onto record key `to`: the later window, any block.
function users.carry_windows(a, to)
  for f, v in pairs(a) do
    if f == F.LAST_IN or string.sub(f, 1, #WIN_PREFIX) == WIN_PREFIX then
      if (tonumber(v) or 0) > (tonumber(redis.call('HGET', to, f)) or 0) then redis.call('HSET', to, f, v) end
    elseif (f == F.BLOCKED or string.sub(f, 1, #BLK_PREFIX) == BLK_PREFIX) and v == '1' then
      redis.call('HSET', to, f, 1)
    end
  end
end

-- Record `from` goes into record `to` (how: 'link' a user id first seen alone is now
-- seen with its wa_id; 'number' the user changed number; 'uid' the user id changed):
-- the identity (identity.moved: the stricter state wins), the windows and blocks, the
-- profile, the contact check, the history and the duplicate check's rings.  With
-- 'link' and 'uid' the record `from` is deleted; with 'number' it stays, without an
-- identity, and says where the user went.
function users.merge(from, to, how)
  if from == to then return end
  local a = hgetall(K.user(from))
  local kt = K.user(to)
  identity.moved(from, to, how)
  users.carry_windows(a, kt)
  local cur = redis.call('HMGET', kt, F.NAME, F.CONTACT, F.PARENT, F.USERNAME)
  if a[F.NAME] and not cur[1] then redis.call('HSET', kt, F.NAME, a[F.NAME]) end
  if a[F.USERNAME] and not cur[4] then redis.call('HSET', kt, F.USERNAME, a[F.USERNAME]) end
  if a[F.CONTACT] and not cur[2] then
    redis.call('HSET', kt, F.CONTACT, a[F.CONTACT], F.CONTACT_AT, a[F.CONTACT_AT] or NOW_S)
  end
  if a[F.PARENT] and not cur[3] then redis.call('HSET', kt, F.PARENT, a[F.PARENT]) end
  if how ~= 'number' then
    -- the duplicate check's rings: a retry of an item the old name brought is a retry
    seen.merge(from, to, a[F.SEEN_IN])
    redis.call('DEL', K.user(from), K.history(from), K.acks(from), K.hashes(from))
    event('linked', to, { 'user_id', from, 'merged', 1, 'how', how })
  end
end

-- A user id seen together with the record w's wa_id: the id names w's record from now
-- on, and a record kept under the id alone moves into w's.
function users.link(u, w)
  if not u or u == '' or not w or w == '' or u == w then return end
  local cur = redis.call('GET', K.alias(u))
  if cur == w then return end
  -- a retired id seen again (a late delivery) keeps naming the record it was retired into
  if cur and redis.call('EXISTS', K.retired(u)) == 1 then return end
  redis.call('SET', K.alias(u), w)
  redis.call('HSET', K.user(w), F.USER_ID, u)
  if not cur and redis.call('EXISTS', K.user(u)) == 1 then users.merge(u, w, 'link') end
end

-- A parent user id (CC.ENT.…) seen with a user: kept on the record, and an alias of it.
function users.parent(pu, w)
  if not pu or pu == '' or pu == w then return end
  if redis.call('GET', K.alias(pu)) ~= w then
    redis.call('SET', K.alias(pu), w)
    redis.call('HSET', K.user(w), F.PARENT, pu)
  end
end

-- The record an operation names (w, and a user id u seen with it).
function users.who(w, u, pu)
  if nz(u) and nz(w) then users.link(u, w) end
  local name = nz(w) and w or u
  local r = users.canon(name)
  if nz(pu) then users.parent(pu, r) end
  return r
end

-- User id `old` was replaced by `new` for the user of record w: `new` names w, and
-- `old` names w too but is retired (a send to it is refused, saying the new id).
function users.retire(old, new, w)
  if not nz(old) or old == new then return end
  redis.call('SET', K.retired(old), new)
  if old ~= w then redis.call('SET', K.alias(old), w) end
  if nz(new) and new ~= w then redis.call('SET', K.alias(new), w) end
  -- a parent id (CC.ENT.…) changes with its user id, in an op of its own: its own field
  local field = string.match(old, '^%a%a%.ENT%.') and F.PARENT or F.USER_ID
  redis.call('HSET', K.user(w), field, new)
  redis.call('DEL', K.retired(new))
end

-- The one record an operator's name names, resolved as the gate resolves it (spec: the
-- recipient forms, first an e form when the name is a wa_id or user id as it is): the
-- record named exactly so, else the one known record the forms name.  Returns
-- PICK.FOUND and the record, PICK.UNKNOWN, or PICK.AMBIGUOUS and the known records it
-- could name (an action is never taken on a guess).
function users.pick(spec)
  local exact = string.match(spec, '^e:(%S+)')
  if exact then
    -- the record named exactly so is that user, whatever else the digits could dial
    local w = users.canon(exact)
    if redis.call('EXISTS', K.user(w)) == 1 then return PICK.FOUND, w, { w } end
  end
  local known = {}
  for _, e in ipairs(users.of(spec)) do
    if redis.call('EXISTS', K.user(e.w)) == 1 then known[#known + 1] = e.w end
  end
  if #known == 1 then return PICK.FOUND, known[1], known end
  if #known == 0 then return PICK.UNKNOWN, nil, known end
  return PICK.AMBIGUOUS, nil, known
end

-- The reply of an operator's function whose name did not pick one record.
function users.unpicked(status, known)
  local r = { status }
  for _, w in ipairs(known) do r[#r + 1] = w end
  return r
end
