-- blocksync: the blocklist as the WABA client (or Meta, per number) has it, read page by
-- page by src/blocksync.c.  ARGV[3] the number ('' On-Premises' one), ARGV[4] when the
-- read began (Redis ms), ARGV[5..] the users it lists.  Every listed user is blocked
-- for the number; a user the mirror has blocked who is no longer listed was unblocked
-- elsewhere and is unblocked, unless blocked through waguard after the read began.
-- Returns { added, removed }.
local n, started = ARGV[3], tonumber(ARGV[4])
local f, zk = blk_field(n), bkey(n)
local listed, added, removed = {}, 0, 0
if n ~= '' then redis.call('SADD', NUMBERS, n) end
for i = 5, #ARGV do
  local w = canon(ARGV[i])
  listed[w] = true
  if redis.call('HGET', ukey(w), f) ~= '1' then
    redis.call('HSET', ukey(w), f, 1)
    added = added + 1
    xadd(P .. ':events', 100000, { 'kind', 'blocked', 'wa_id', w, 'at', NOW, 'source', 'blocklist' })
  end
  redis.call('ZADD', zk, 'NX', started, w)
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. started)) do
  if not listed[w] then
    redis.call('HSET', ukey(w), f, 0)
    redis.call('ZREM', zk, w)
    removed = removed + 1
    xadd(P .. ':events', 100000, { 'kind', 'unblocked', 'wa_id', w, 'at', NOW, 'source', 'blocklist' })
  end
end
return { added, removed }
