-- ack_result: the outcome of one PUT of hash ARGV[4] for wa_id ARGV[3].
-- ARGV[5] outcome ok|retry|failed, ARGV[6] who, ARGV[7] the WABA client's answer,
-- ARGV[8] the delay before the next try (ms, retry only), ARGV[9] the lease the worker
-- claimed with ('' when no worker: a forwarded PUT), ARGV[10] the ack policy.
-- An acknowledgement applies while the hash is still the newest (compare and set);
-- a retry or a failure only while the same worker still holds the lease and the
-- identity is not acknowledged.  Returns 1 when applied, 0 when not.
local w, h, outcome, who, answer, lease = canon(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[9]
local k = ukey(w)
local cur = redis.call('HMGET', k, 'id_hash', 'id_ack', 'id_lease', 'id_requested_by', 'id_state')
local holder = lease ~= '' and cur[3] == lease
if holder then redis.call('HDEL', k, 'id_lease') end
-- The worker asked for a hash it did not know ('') while the record still waits for it.
if h == '' and cur[5] == 'hash_unknown' then h = cur[1] or '' end
if (cur[1] or '') ~= h then
  audit(w, h, who, 'superseded', answer)
  -- The newer hash goes out now if the policy says so or an operator asked for it.
  if cur[1] and cur[2] ~= '1' and (ARGV[10] == 'auto' or cur[4]) and (holder or not cur[3]) then
    redis.call('ZADD', QUEUE, NOW, w)
  end
  return 0
end
if outcome == 'ok' then
  if cur[2] ~= '1' then mark_acknowledged(w, h, who, answer) end
  return 1
end
if cur[2] == '1' or (lease ~= '' and not holder) then
  audit(w, h, who, 'stale', answer)     -- acknowledged meanwhile, or another worker took over
  return 0
end
if outcome == 'retry' then
  local due = NOW + tonumber(ARGV[8])
  redis.call('ZADD', QUEUE, due, w)
  redis.call('HSET', k, 'id_err', answer, 'id_next', due)
  audit(w, h, who, 'retry', answer)
else
  redis.call('HSET', k, 'id_state', 'failed', 'id_err', answer)
  redis.call('ZREM', QUEUE, w)
  redis.call('ZREM', PENDING, w)
  redis.call('ZREM', SINCE, w)
  redis.call('ZADD', FAILED, 0, w)
  audit(w, h, who, 'failed', answer)
end
return 1
