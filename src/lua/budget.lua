-- budget: the contacts seed warns that checking many numbers without messaging them gets
-- the business banned.  P:checks holds the numbers checked and never sent to (normalised,
-- or "raw:" and the input as given when it is not a number waguard can read), scored by
-- their first check (Redis ms); a send removes its recipient (apply, operation sent).
-- [3] the window (ms), [4] the budget, [5..] the numbers a check asks for.  Returns
-- BUDGET_REPLY: 1 and the count when it may go (the new numbers are counted), or 0, the
-- count and when the oldest frees up (ms) when it would pass the budget (nothing counted).
FN.budget = function(keys, args)
  begin(args)
  local window, budget = tonumber(args[3]), tonumber(args[4])
  redis.call('ZREMRANGEBYSCORE', CHECKS, '-inf', '(' .. (NOW - window))
  local count = redis.call('ZCARD', CHECKS)
  local new, seen_ = {}, {}
  for i = 5, #args do
    local n = args[i]
    if not seen_[n] and not redis.call('ZSCORE', CHECKS, n) then new[#new + 1] = n end
    seen_[n] = true
  end
  local r = {}
  if count + #new > budget then
    local oldest = redis.call('ZRANGE', CHECKS, 0, 0, 'WITHSCORES')
    r[BUDGET_REPLY.OK], r[BUDGET_REPLY.COUNT] = 0, count
    r[BUDGET_REPLY.FREES_AT] = oldest[2] and (tonumber(oldest[2]) + window) or NOW
    return r
  end
  for _, n in ipairs(new) do redis.call('ZADD', CHECKS, NOW_S, n) end
  r[BUDGET_REPLY.OK], r[BUDGET_REPLY.COUNT], r[BUDGET_REPLY.FREES_AT] = 1, count + #new, 0
  return r
end
