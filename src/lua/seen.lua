-- seen: the duplicate check, in memory bounded by users (docs/data-model.md,
-- "Duplicates").  Every item's effect is idempotent (the newest hash wins, last_in only
-- moves forward, a number change is ordered by the inbound messages around it), so the
-- check only keeps a retried item from being counted and written to the events stream
-- twice: rings of the fingerprints (the first 48 bits of SHA-1) of a user's RING newest
-- items of a kind.  The inbound messages' ring is a field of the user's record (seen_in:
-- the record is read and written for the window anyway, so the check costs no command);
-- the system messages' (`i`) and the statuses' (`s`, id:status) are in one small hash,
-- P:seen:{W}, kept at least a week after the user's last item of those kinds (field d:
-- below), so that a status names no record into being.  A retry of an item older than that is applied
-- again (no harm) and counted as new; a fingerprint collision (about 3 in 10^14 items)
-- only leaves out that item's event.  An identity change needs no ring: its message id
-- is kept in the identity history.
local RING, FP = 8, 6      -- 48 bytes a ring: the hash stays a listpack (values <= 64)
local FP_FMT = '>I6'       -- FP bytes, big-endian (48 bits: exact in a Lua number)
-- In the record, a field anyone may read as text: the same 48 bits as 8 characters of
-- 64 (FP_TEXT), 64 bytes a ring (still a listpack's).
local FP_TEXT = 8
-- (a literal: the library's load may not call the string library)
local B64 = { [0] = 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
  'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h',
  'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', '0',
  '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '/' }
-- The key's expiry is set to KEEP by the first item of each day (Redis's clock, UTC
-- days), field d holding that day: the key lives 7 to 8 days after the user's last item,
-- and an item costs no EXPIRE of its own (the day's first one does).
local KEEP = '691200'    -- WEEK + 86400 s, as EXPIRE is given it (a number: printf each call)
-- The day day_s is, kept while the clock stays in it ([day_lo, day_hi) in ms): a call
-- in the same day writes no number again.
local day_lo, day_hi, day_s = 0, -1, nil
local function today()
  if NOW < day_lo or NOW >= day_hi then
    local d = math.floor(NOW / DAY_MS)
    day_lo, day_hi, day_s = d * DAY_MS, (d + 1) * DAY_MS, tostring(d)
  end
  return day_s
end

-- The first FP bytes of item id's SHA-1: the first 2 * FP hex digits, one number.
local function fp_number(id) return tonumber(string.sub(redis.sha1hex(id), 1, FP * 2), 16) end

-- Item id's fingerprint as the record keeps it: FP_TEXT characters.
local function fp_text(id)
  local n = fp_number(id)
  local c1 = n % 64; n = (n - c1) / 64
  local c2 = n % 64; n = (n - c2) / 64
  local c3 = n % 64; n = (n - c3) / 64
  local c4 = n % 64; n = (n - c4) / 64
  local c5 = n % 64; n = (n - c5) / 64
  local c6 = n % 64; n = (n - c6) / 64
  local c7 = n % 64
  return B64[c1] .. B64[c2] .. B64[c3] .. B64[c4] .. B64[c5] .. B64[c6] .. B64[c7] .. B64[(n - c7) / 64]
end

-- Ring r (fingerprints of w bytes each, '' for none) with fingerprint fp put in front,
-- or nil when fp is in it (a repeat).
local function push(r, fp, w)
  -- a match counts only at a fingerprint's start (not across two of them)
  local at = string.find(r, fp, 1, true)
  while at do
    if (at - 1) % w == 0 then return nil end
    at = string.find(r, fp, at + 1, true)
  end
  return fp .. string.sub(r, 1, (RING - 1) * w)
end

-- The record's inbound ring r ('' for none) with message id put in front, or nil when
-- id is in it (a repeat).  The caller writes it to the record's field seen_in.
function seen.push_in(r, id)
  return push(r, fp_text(id), FP_TEXT)
end

-- True the first time item id is seen in user w's ring f; false for a repeat.  No user
-- or no id: true.
function seen.fresh(w, f, id)
  if not nz(id) or not nz(w) then return true end
  local k = K.seen(w)
  local cur = redis.call('HMGET', k, f, 'd')
  local ring, day = push(cur[1] or '', struct.pack(FP_FMT, fp_number(id)), FP), today()
  if not ring then return false end
  if cur[2] == day then
    redis.call('HSET', k, f, ring)
  else
    redis.call('HSET', k, f, ring, 'd', day)
    redis.call('EXPIRE', k, KEEP)
  end
  return true
end

-- The rings of name `from` go to record `to` (a user id merged into its wa_id's record):
-- rin is the inbound ring of from's record (field F.SEEN_IN, nil for none).
function seen.merge(from, to, rin)
  if rin then
    local kt = K.user(to)
    redis.call('HSET', kt, F.SEEN_IN, string.sub((redis.call('HGET', kt, F.SEEN_IN) or '') .. rin, 1, RING * FP_TEXT))
  end
  local sf, st = K.seen(from), K.seen(to)
  for _, f in ipairs({ 'i', 's' }) do
    local rf = redis.call('HGET', sf, f)
    if rf then
      local rt = redis.call('HGET', st, f) or ''
      redis.call('HSET', st, f, string.sub(rt .. rf, 1, RING * FP), 'd', today())
      redis.call('EXPIRE', st, KEEP)
    end
  end
  redis.call('DEL', sf)
end
