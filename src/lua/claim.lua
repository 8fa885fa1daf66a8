-- claim: up to [4] due acknowledgements, each leased for [3] ms ([5] the upstream api):
-- identity.claim().  Returns CLAIM_JOB values for each job.
FN.claim = function(keys, args)
  begin(args)
  CTX.api = args[5]
  return identity.claim(tonumber(args[3]), args[4])   -- the count as it came: LIMIT takes it
end
