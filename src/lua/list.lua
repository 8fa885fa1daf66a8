-- list: identities in state ARGV[3] (pending|failed) after cursor ARGV[4], ARGV[5] of them.
-- Returns next cursor ('' at the end), then 7 values an identity:
-- wa_id, hash, created ms, acknowledged, state, attempts, last error.
local index = ARGV[3] == 'failed' and FAILED or PENDING
local start = ARGV[4] == '' and '-' or ('(' .. ARGV[4])
local limit = tonumber(ARGV[5])
local ws = redis.call('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, limit + 1)
local out = { '' }
local n = math.min(#ws, limit)
if #ws > limit then out[1] = ws[limit] end
for i = 1, n do
  local v = redis.call('HMGET', ukey(ws[i]), 'id_hash', 'id_ts', 'id_ack', 'id_state', 'id_attempts', 'id_err')
  out[#out + 1] = ws[i]
  for j = 1, 6 do out[#out + 1] = v[j] or '' end
end
return out
