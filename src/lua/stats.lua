-- stats: gauges for /metrics.  ARGV[3] the contact-check window (ms).  Returns pending,
-- failed, queued, oldest waiting (ms, or -1), numbers checked and never sent to within
-- the window.
local oldest = redis.call('ZRANGE', SINCE, 0, 0, 'WITHSCORES')
local window = tonumber(ARGV[3]) or 0
return { redis.call('ZCARD', PENDING), redis.call('ZCARD', FAILED), redis.call('ZCARD', QUEUE),
         oldest[2] and tonumber(oldest[2]) or -1,
         redis.call('ZCOUNT', P .. ':checks', NOW - window, '+inf') }
