-- request: operator [4] asks for the acknowledgement of the user [3] names (recipient
-- forms, resolved as the gate resolves them) now; [5] the upstream api, [6] why.  Returns the
-- pick (include/schema.h) and, when found, the REQ value and the record.
FN.request = function(keys, args)
  begin(args)
  CTX.api = args[5]
  local st, w, known = users.pick(args[3])
  if st ~= PICK.FOUND then return users.unpicked(st, known) end
  identity.queued = 0
  return { st, identity.request(w, args[4], args[6]), w }
end
