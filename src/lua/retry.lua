-- retry: operator [3] asks again for every acknowledgement given up (state failed), when
-- there are [4] of them (the count the operator was shown; '' any), at most 10,000 in one
-- call; [5] the upstream api, [6] why ('' none given).  Returns { done, failed now }: done is -1 when the count
-- was not [4] (nothing asked), else how many were asked again.
FN.retry = function(keys, args)
  begin(args)
  CTX.api = args[5]
  local n = redis.call('ZCARD', FAILED)
  if args[4] ~= '' and tonumber(args[4]) ~= n then return { -1, n } end
  local done = 0
  for _, w in ipairs(redis.call('ZRANGE', FAILED, 0, 9999)) do
    if identity.request(w, args[3], nz(args[6]) and args[6] or 'asked again with every failed acknowledgement') == REQ.QUEUED then done = done + 1 end
  end
  return { done, redis.call('ZCARD', FAILED) }
end
