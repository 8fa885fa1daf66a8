-- wrk script: waguard gate decisions.
-- GET /v1/gate/+{wa_id}?type=text round-robin over a pool of wa_ids that the
-- run script pre-populated with inbound messages (so the 24 h window is open).
-- Env: BENCH_USERS (pool size), BENCH_BASE (first wa_id), BENCH_TYPE,
--      BENCH_TOKEN (optional Bearer token).

-- setup(), done() and with_token() are in bench/common.lua, next to this script
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "common.lua")

function init(args)
   local users = tonumber(os.getenv("BENCH_USERS") or "1000")
   local base = tonumber(os.getenv("BENCH_BASE") or "15550200000")
   local mtype = os.getenv("BENCH_TYPE") or "text"
   local headers = with_token({})
   -- pre-format every request once; request() only cycles through them
   reqs = {}
   for i = 0, users - 1 do
      reqs[#reqs + 1] = wrk.format("GET",
         string.format("/v1/gate/+%d?type=%s", base + i, mtype), headers)
   end
   idx = ((tid or 1) * 997) % #reqs
end

function request()
   idx = idx + 1
   if idx > #reqs then idx = 1 end
   return reqs[idx]
end
