-- enqueue: operator ARGV[4] asks for the acknowledgement of wa_id ARGV[3] now.
-- Returns -1 when no identity is known, 0 when it is already acknowledged, 1 when queued.
local w = canon(ARGV[3])
local k = ukey(w)
local v = redis.call('HMGET', k, 'id_hash', 'id_ack')
if not v[1] then return -1 end
if v[2] == '1' then return 0 end
redis.call('HSET', k, 'id_state', 'pending', 'id_attempts', 0, 'id_requested_by', ARGV[4])
redis.call('ZREM', FAILED, w)
redis.call('ZADD', PENDING, 0, w)
redis.call('ZADD', SINCE, 'NX', NOW, w)
-- A worker holding the lease is sending this user's acknowledgement now: its outcome
-- sees the request (id_requested_by) and queues what is still needed.
if (tonumber(redis.call('HGET', k, 'id_lease')) or 0) <= NOW then
  redis.call('ZADD', QUEUE, NOW, w)
end
return 1
