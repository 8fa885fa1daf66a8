-- base: what every function of the library shares.  The library is loaded into Redis
-- once (FUNCTION LOAD, see src/store.c); each call starts with begin(), which takes the
-- key prefix and the events stream's cap from the call's first two arguments and reads
-- Redis's clock once, so that leases and due times mean the same to every instance.
local P, NOW
local A                             -- the call's arguments
-- The modules of the library (users.lua, seen.lua, identity.lua) and its functions
-- (FN.name, registered as the library's functions by register.lua).
local users, seen, identity, FN = {}, {}, {}, {}
local WEEK = 604800                 -- s
local DAY_MS = 86400000
-- An identity or message time later than Redis's clock by more than this is not
-- believed: the time it reached us stands in for it (include/wtime.h).
local FUTURE_MS = 120000
-- the streams' caps as the strings XADD is given (a number handed to redis.call is
-- formatted with printf on every call)
local AUDIT_MAXLEN, DEAD_MAXLEN = '100000', '10000'

-- The record's fields are F (include/schema.h names them, with the two keys the gate
-- reads in C: KEY_USER and KEY_CONTACT).
-- The fields that make up an identity (moved together, dropped together).
local ID_FIELDS = { F.HASH, F.TS, F.RX, F.ACK, F.STATE, F.ATTEMPTS, F.ERR, F.NEXT, F.LEASE,
                    F.REQUESTED_BY, F.CHANGED_AT, F.ACKED_BY, F.ACKED_AT, F.HOLD_RELEASED, F.REACK }

-- Key names.  Per-user keys carry the user's name as a hash tag.
local K = {}
local USER_ = ':' .. KEY_USER .. ':{'
function K.user(w) return P .. USER_ .. w .. '}' end
function K.history(w) return P .. USER_ .. w .. '}:history' end
function K.hashes(w) return P .. USER_ .. w .. '}:hashes' end
function K.acks(w) return P .. USER_ .. w .. '}:acks' end
function K.seen(w) return P .. ':seen:{' .. w .. '}' end
local CONTACT_ = ':' .. KEY_CONTACT .. ':{'
function K.contact(n) return P .. CONTACT_ .. n .. '}' end
function K.contact_rev(w) return P .. ':contact_rev:{' .. w .. '}' end
function K.alias(u) return P .. ':alias:{' .. u .. '}' end
function K.retired(u) return P .. ':retired:{' .. u .. '}' end
function K.blocks(n) return P .. ':blocks:{' .. (n or '') .. '}' end
local SENT_ = ':' .. KEY_SENT .. ':{'
function K.sent(mid) return P .. SENT_ .. mid .. '}' end
-- Keys without a user, named once a call (they depend on the prefix).
local QUEUE, SINCE, PENDING, FAILED, NUMBERS, EVENTS, AUDIT, DEADLETTER, CHECKS, CHANGES, REFUSALS

-- The 24-hour window and blocks belong to one business number and one user: fields
-- last_in:N and blocked:N (Cloud); the plain last_in is On-Premises' one number, and a
-- plain blocked applies to every number.
local WIN_PREFIX, BLK_PREFIX = F.LAST_IN .. NUMBER_SEP, F.BLOCKED .. NUMBER_SEP
local function win_field(n) return (n and n ~= '') and (F.LAST_IN .. NUMBER_SEP .. n) or F.LAST_IN end
local function blk_field(n) return (n and n ~= '') and (F.BLOCKED .. NUMBER_SEP .. n) or F.BLOCKED end

-- NOW_S, MAXLEN_S: NOW and the cap as the strings the streams are written with (a
-- number handed to redis.call is formatted again on every call).  MAXLEN_ARG: the
-- argument MAXLEN_S was read from (a call with the same one reads nothing again).
local NOW_S, MAXLEN_S, MAXLEN_ARG
-- CALL_N: which call this is (a count): what a module does once a call remembers it.
local CALL_N = 0

-- TIME's microseconds ('0' to '999999') as the three digits of their milliseconds.
local US_PAD = { '00000', '0000', '000', '00', '0', '' }
local function ms3(us) return string.sub(US_PAD[#us] .. us, 1, 3) end

-- clockless: a function that never reads the time (the gate) skips TIME; NOW is nil
-- then, so that any use of it fails loudly instead of reading a previous call's clock.
-- The key names depend on the prefix only: they are made again only when it changes.
-- The clock's milliseconds are written as a string from TIME's two strings, and read
-- as a number once: Lua's tostring is a sprintf (about 3,000 instructions) and its
-- tonumber two strtods (about 950), which a call with few bodies paid several times.
local function begin(args, clockless)
  A = args
  CALL_N = CALL_N + 1
  if args[2] ~= MAXLEN_ARG then
    MAXLEN_ARG = args[2]
    MAXLEN_S = tonumber(args[2]) and args[2] or '100000'
  end
  if clockless then
    NOW, NOW_S = nil, nil
  else
    local t = redis.call('TIME')
    NOW_S = t[1] .. ms3(t[2])
    NOW = tonumber(NOW_S)
  end
  if args[1] == P then return end
  P = args[1]
  QUEUE, SINCE = P .. ':ack:queue', P .. ':ack:since'
  PENDING, FAILED = P .. ':identities:pending', P .. ':identities:failed'
  NUMBERS, EVENTS, AUDIT, DEADLETTER = P .. ':numbers', P .. ':events', P .. ':audit', P .. ':deadletter'
  CHECKS, CHANGES, REFUSALS = P .. ':' .. KEY_CHECKS, P .. ':changes', P .. ':refusals'
end

-- A count an argument carries (of bodies, of operations), as a number: the strings of
-- the counts met so far are kept (at most 256 of them, each below 10,000), the rest read
-- by tonumber.
local COUNTS, COUNTS_N = {}, 0
local function count_arg(s)
  local n = COUNTS[s]
  if n then return n end
  n = tonumber(s)
  if n and n >= 0 and n < 10000 and COUNTS_N < 256 then
    COUNTS[s], COUNTS_N = n, COUNTS_N + 1
  end
  return n
end

local function nz(v) return v ~= nil and v ~= false and v ~= '' end

-- Appends to the events stream: kind, the user, the time, then extra (field, value, …).
local function event(kind, w, extra)
  local a = { 'XADD', EVENTS, 'MAXLEN', '~', MAXLEN_S, '*', 'kind', kind, 'wa_id', w or '', 'at', NOW_S }
  if extra then
    for i = 1, #extra do a[12 + i] = tostring(extra[i]) end
  end
  redis.call(unpack(a))
end

-- A string as JSON text (nil: "").  The entries the library keeps as JSON (a user's
-- identity history and trail) are written with these and the clock's string, not by
-- cjson's encoder of tables: it writes each number with printf (about 3,600 instructions
-- a number), where a string alone costs it a few hundred.
local function json_str(s) return cjson.encode(s or '') end

-- A user's lists of JSON entries (the identity history, the trail) keep their newest 50
-- (0 to LIST_KEEP_LAST), which is all any reader reads; the oldest are trimmed once
-- LIST_TRIM_AT are held, not on every push: trimming a full list rewrites its listpack
-- (about as dear as the push), so a long history is trimmed once every 14 entries.
local LIST_KEEP_LAST, LIST_TRIM_AT = '49', 64
local function push_capped(k, entry)
  if redis.call('LPUSH', k, entry) >= LIST_TRIM_AT then redis.call('LTRIM', k, '0', LIST_KEEP_LAST) end
end

-- Who did what to an identity: the audit stream and the user's own trail.
local function audit(w, h, who, result, answer)
  redis.call('XADD', AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'wa_id', w, 'hash', h or '', 'who', who,
             'result', result, 'answer', answer or '', 'at', NOW_S)
  push_capped(K.acks(w), '{"hash":' .. json_str(h) .. ',"who":' .. json_str(who) .. ',"result":' ..
              json_str(result) .. ',"answer":' .. json_str(answer) .. ',"at":' .. NOW_S .. '}')
end

local function dead_letter(reason, item)
  redis.call('XADD', DEADLETTER, 'MAXLEN', '~', DEAD_MAXLEN, '*', 'reason', reason, 'item', item or '', 'at', NOW_S)
end

-- A record's fields as a table (HGETALL).
local function hgetall(k)
  local v, t = redis.call('HGETALL', k), {}
  for i = 1, #v, 2 do t[v[i]] = v[i + 1] end
  return t
end
