-- stats: gauges for /metrics.  Returns pending, failed, queued, oldest waiting (ms, or -1).
local oldest = redis.call('ZRANGE', SINCE, 0, 0, 'WITHSCORES')
return { redis.call('ZCARD', PENDING), redis.call('ZCARD', FAILED), redis.call('ZCARD', QUEUE),
         oldest[2] and tonumber(oldest[2]) or -1 }
