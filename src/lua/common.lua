-- Shared by every script (prepended by the build).  ARGV[1] is the key prefix,
-- ARGV[2] the caller's clock in milliseconds (for the log only); keys carry a
-- {wa_id} hash tag.  NOW is Redis's clock, so that leases and due times mean the
-- same to every waguard instance whatever their clocks say.
local P = ARGV[1]
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local WEEK = 604800
-- An identity or message time later than Redis's clock by more than this is not
-- believed: it is replaced by the time it reached us (see include/wtime.h).
local FUTURE_MS = 120000
local function ukey(w) return P .. ':user:{' .. w .. '}' end
local function ckey(n) return P .. ':contact:{' .. n .. '}' end
-- A business-scoped user id seen with a wa_id names that wa_id's record.
local function akey(u) return P .. ':alias:{' .. u .. '}' end
local function is_uid(x) return string.find(x, '^%u%u%.') ~= nil end

-- The record a handed-out id names: a linked user id names its wa_id's.
local function canon(x)
  if x and x ~= '' and is_uid(x) then return redis.call('GET', akey(x)) or x end
  return x
end
local QUEUE, SINCE = P .. ':ack:queue', P .. ':ack:since'
-- The business numbers (Cloud phone_number_id) webhooks came for.  The 24-hour window
-- and blocks belong to one number and one user: fields last_in:N and blocked:N; the
-- plain last_in is On-Premises' one number, and a plain blocked applies to every number.
local NUMBERS = P .. ':numbers'
local function win_field(n) return (n and n ~= '') and ('last_in:' .. n) or 'last_in' end
local function blk_field(n) return (n and n ~= '') and ('blocked:' .. n) or 'blocked' end
-- The users the mirror holds blocked for a number, scored by when (Redis ms).
local function bkey(n) return P .. ':blocks:{' .. (n or '') .. '}' end
local PENDING, FAILED = P .. ':identities:pending', P .. ':identities:failed'

-- The users a recipient names, most likely first: spec holds the forms that
-- recipient_spec() writes ("i:KEY d:KEY", include/recipient.h).  An i form is a wa_id
-- or user id taken as it is; a d form, a normalised dialled number, names the wa_id a
-- contact check mapped it to, then itself.
local function users_of(spec)
  local users, seen = {}, {}
  local function add(w)
    if w and w ~= '' and not seen[w] then
      seen[w] = true
      users[#users + 1] = w
    end
  end
  for kind, key in string.gmatch(spec, '(%a):(%S+)') do
    if kind == 'd' then
      local m = redis.call('HGET', ckey(key), 'wa_id')
      if m and m ~= '' then add(canon(m)) end
    end
    add(canon(key))
  end
  return users
end

-- Appends to a capped stream; extra is a flat list of field, value.
local function xadd(stream, maxlen, extra)
  local args = { 'XADD', stream, 'MAXLEN', '~', maxlen, '*' }
  for i = 1, #extra do args[#args + 1] = tostring(extra[i]) end
  redis.call(unpack(args))
end

local function audit(w, h, who, result, answer)
  xadd(P .. ':audit', 100000, { 'wa_id', w, 'hash', h, 'who', who, 'result', result,
                                'answer', answer, 'at', NOW })
  local k = ukey(w) .. ':acks'
  redis.call('LPUSH', k, cjson.encode({ hash = h, who = who, result = result,
                                        answer = answer, at = NOW }))
  redis.call('LTRIM', k, 0, 49)
end

-- The newest hash h is now acknowledged: the gate opens and the work is done.
local function mark_acknowledged(w, h, who, answer)
  redis.call('HSET', ukey(w), 'id_ack', 1, 'id_state', 'acknowledged', 'id_err', '',
             'id_acked_at', NOW, 'id_acked_by', who)
  redis.call('HDEL', ukey(w), 'id_requested_by', 'id_lease')
  redis.call('ZREM', QUEUE, w)
  redis.call('ZREM', SINCE, w)
  redis.call('ZREM', PENDING, w)
  redis.call('ZREM', FAILED, w)
  audit(w, h, who, 'acknowledged', answer)
end
