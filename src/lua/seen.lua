-- seen: the duplicate check, in memory bounded by users (docs/data-model.md,
-- "Duplicates").  Every item's effect is idempotent (the newest hash wins, last_in only
-- moves forward, a number change is ordered by the inbound messages around it), so the
-- check only keeps a retried item from being counted and written to the events stream
-- twice: each user has one small hash, P:seen:{W}, with two rings of the fingerprints
-- (the first 6 bytes of SHA-1) of their RING newest items, `i` for messages (inbound and
-- system) and `s` for statuses (id:status), kept at least a week after the user's last
-- item (field d: below).  A retry of an item older than that is applied again (no harm)
-- and counted as new; a fingerprint collision (about 3 in 10^14 items) only leaves out
-- that item's event.  An identity change needs no ring: its message id is kept in the
-- identity history.
local RING, FP = 8, 6      -- 48 bytes a ring: the hash stays a listpack (values <= 64)
local FP_FMT = '>I6'       -- FP bytes, big-endian (48 bits: exact in a Lua number)
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

-- True the first time item id is seen in user w's ring f; false for a repeat.  No user
-- or no id: true.
function seen.fresh(w, f, id)
  if not nz(id) or not nz(w) then return true end
  local k = K.seen(w)
  -- the first FP bytes of the SHA-1, big-endian: the first 2 * FP hex digits as bytes
  local fp = struct.pack(FP_FMT, tonumber(string.sub(redis.sha1hex(id), 1, FP * 2), 16))
  local cur = redis.call('HMGET', k, f, 'd')
  local r = cur[1] or ''
  -- a match counts only at a fingerprint's start (not across two of them)
  local at = string.find(r, fp, 1, true)
  while at do
    if (at - 1) % FP == 0 then return false end
    at = string.find(r, fp, at + 1, true)
  end
  local ring, day = fp .. string.sub(r, 1, (RING - 1) * FP), today()
  if cur[2] == day then
    redis.call('HSET', k, f, ring)
  else
    redis.call('HSET', k, f, ring, 'd', day)
    redis.call('EXPIRE', k, KEEP)
  end
  return true
end

-- The rings of name `from` go to record `to` (a user id merged into its wa_id's record).
function seen.merge(from, to)
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
