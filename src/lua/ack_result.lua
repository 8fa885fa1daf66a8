-- ack_result: the outcome of one PUT of hash ARGV[4] for wa_id ARGV[3], applied only
-- while that hash is still the newest (compare and set).
-- ARGV[5] outcome ok|retry|failed, ARGV[6] who, ARGV[7] the WABA client's answer,
-- ARGV[8] when to try again (ms, retry only).
-- Returns 1 when applied, 0 when a newer hash replaced it (that one is due at once).
local w, h, outcome, who, answer = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = ukey(w)
redis.call('HDEL', k, 'id_lease')
local cur = redis.call('HMGET', k, 'id_hash', 'id_ack')
if cur[1] ~= h then
  audit(w, h, who, 'superseded', answer)
  if cur[1] and cur[2] ~= '1' then redis.call('ZADD', QUEUE, NOW, w) end
  return 0
end
if outcome == 'ok' then
  mark_acknowledged(w, h, who, answer)
elseif outcome == 'retry' then
  redis.call('ZADD', QUEUE, tonumber(ARGV[8]), w)
  redis.call('HSET', k, 'id_err', answer, 'id_next', ARGV[8])
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
