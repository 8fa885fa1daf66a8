-- blocksync: the blocklist as the WABA client (or Meta, per number) has it, read page by
-- page by src/blocksync.c.  [3] the number ('' On-Premises' one), [4] when the read
-- began (Redis ms), [5..] the users it lists.  Every listed user is blocked for the
-- number; a user the mirror has blocked who is no longer listed was unblocked elsewhere
-- and is unblocked, unless blocked through waguard after the read began.  Returns
-- { added, removed }.
FN.blocksync = function(keys, args)
  begin(args)
  local n, started = args[3], tonumber(args[4])
  local f, zk = blk_field(n), K.blocks(n)
  local listed, added, removed = {}, 0, 0
  if n ~= '' then redis.call('SADD', NUMBERS, n) end
  for i = 5, #args do
    local w = users.canon(args[i])
    listed[w] = true
    if redis.call('HGET', K.user(w), f) ~= '1' then
      redis.call('HSET', K.user(w), f, 1)
      added = added + 1
      event('blocked', w, { 'source', 'blocklist' })
    end
    redis.call('ZADD', zk, 'NX', started, w)
  end
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. started)) do
    if not listed[w] then
      redis.call('HSET', K.user(w), f, 0)
      redis.call('ZREM', zk, w)
      removed = removed + 1
      event('unblocked', w, { 'source', 'blocklist' })
    end
  end
  return { added, removed }
end
