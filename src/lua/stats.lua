-- stats: the gauges of /metrics and the console.  [3] the contact-check window (ms),
-- [4] the longest [hold] time (ms).  Returns STATS values.
FN.stats = function(keys, args)
  begin(args)
  local window, hold = tonumber(args[3]) or 0, tonumber(args[4]) or 0
  local oldest = redis.call('ZRANGE', SINCE, 0, 0, 'WITHSCORES')
  local blocked = redis.call('ZCARD', K.blocks(''))
  for _, n in ipairs(redis.call('SMEMBERS', NUMBERS)) do blocked = blocked + redis.call('ZCARD', K.blocks(n)) end
  local r = {}
  r[STATS.PENDING], r[STATS.FAILED], r[STATS.QUEUED] =
    redis.call('ZCARD', PENDING), redis.call('ZCARD', FAILED), redis.call('ZCARD', QUEUE)
  r[STATS.OLDEST] = oldest[2] and tonumber(oldest[2]) or -1
  r[STATS.CHECKS_UNSENT] = redis.call('ZCOUNT', CHECKS, NOW - window, '+inf')
  r[STATS.HELD] = hold > 0 and redis.call('ZCOUNT', CHANGES, NOW - hold, '+inf') or 0
  r[STATS.BLOCKED] = blocked
  r[STATS.CHANGES_24H] = redis.call('ZCOUNT', CHANGES, NOW - DAY_MS, '+inf')
  r[STATS.REFUSALS_24H] = redis.call('ZCOUNT', REFUSALS, NOW - DAY_MS, '+inf')
  return r
end
