-- outcome: the result of one acknowledgement: [3] the user as it was claimed (or named
-- by a forwarded PUT), [4] the hash sent ('' when none was known), [5] ok|retry|failed,
-- [6] who, [7] the WABA client's answer, [8] the delay before the next try (ms, retry),
-- [9] the lease the worker claimed with ('' for a forwarded PUT), [10] the ack policy,
-- [11] the upstream api.  identity.outcome(); returns 1 when applied, 0 when not.
FN.outcome = function(keys, args)
  begin(args)
  CTX.ack, CTX.api = args[10], args[11]
  identity.queued = 0
  return identity.outcome(users.canon(args[3]), args[4], args[5], args[6], args[7], args[8], args[9])
end
