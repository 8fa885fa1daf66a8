-- claim: up to ARGV[4] acknowledgements that are due, each leased for ARGV[3] ms so that
-- one worker at a time holds it; a dead worker's lease runs out and another takes over.
-- Returns wa_id, hash ('' when the hash is not known: WhatsApp refused a send for an
-- identity change), attempts, created ms, who asked ("auto" or an operator) and the
-- lease (its end, which fences the outcome) for each.
local lease, max = tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', QUEUE, '-inf', NOW, 'LIMIT', 0, max)
local out = {}
for _, w in ipairs(due) do
  local k = ukey(w)
  local v = redis.call('HMGET', k, 'id_hash', 'id_ack', 'id_state', 'id_ts', 'id_requested_by')
  local unknown = v[3] == 'hash_unknown'
  if (not v[1] and not unknown) or v[2] == '1' or v[3] == 'failed' then
    redis.call('ZREM', QUEUE, w)
  else
    redis.call('ZADD', QUEUE, NOW + lease, w)
    redis.call('HSET', k, 'id_lease', NOW + lease)
    local a = redis.call('HINCRBY', k, 'id_attempts', 1)
    out[#out + 1] = w
    out[#out + 1] = unknown and '' or v[1]     -- '': the worker asks the WABA client first
    out[#out + 1] = a
    out[#out + 1] = v[4] or '0'
    out[#out + 1] = v[5] or 'auto'
    out[#out + 1] = tostring(NOW + lease)
  end
end
return out
