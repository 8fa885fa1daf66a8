-- budget: the contacts seed warns that checking many numbers without messaging them gets
-- the business banned.  P:checks holds the normalised numbers checked and never sent to,
-- scored by their first check (Redis ms); a send removes its recipient (apply.lua, op
-- "sent").  ARGV[3] the window (ms), ARGV[4] the budget, ARGV[5..] the numbers a check
-- asks for.  Returns { 1, count } when it may go (the new numbers are counted), or
-- { 0, count, frees_at_ms } when it would pass the budget (nothing is counted).
local CHECKS = P .. ':checks'
local window, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', CHECKS, '-inf', '(' .. (NOW - window))
local count = redis.call('ZCARD', CHECKS)
local new, seen = {}, {}
for i = 5, #ARGV do
  local n = ARGV[i]
  if not seen[n] and not redis.call('ZSCORE', CHECKS, n) then new[#new + 1] = n end
  seen[n] = true
end
if count + #new > budget then
  local oldest = redis.call('ZRANGE', CHECKS, 0, 0, 'WITHSCORES')
  local frees = oldest[2] and (tonumber(oldest[2]) + window) or NOW
  return { 0, count, frees }
end
for _, n in ipairs(new) do redis.call('ZADD', CHECKS, NOW, n) end
return { 1, count + #new }
