-- wrk script: waguard gate decisions.
-- GET /v1/gate/{input}?type=text round-robin over a pool of users from several
-- countries (pool_wa_id() in common.lua) that the run script pre-populated with
-- inbound messages (so the 24 h window is open); every other group of four users is
-- asked for as dialled ("+447700…"), the others as bare digits (gate_input()).
-- Env: BENCH_USERS (pool size), BENCH_POOL (the pool's digit), BENCH_TYPE,
--      BENCH_TOKEN (optional Bearer token).

-- setup(), done(), with_token(), gate_input() are in bench/common.lua, next to this script
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "common.lua")

function init(args)
   local users = tonumber(os.getenv("BENCH_USERS") or "1000")
   local pool = os.getenv("BENCH_POOL") or "2"
   local mtype = os.getenv("BENCH_TYPE") or "text"
   local headers = with_token({})
   -- pre-format every request once; request() only cycles through them
   reqs = {}
   for i = 0, users - 1 do
      reqs[#reqs + 1] = wrk.format("GET",
         string.format("/v1/gate/%s?type=%s", gate_input(pool, i), mtype), headers)
   end
   idx = ((tid or 1) * 997) % #reqs
end

function request()
   idx = idx + 1
   if idx > #reqs then idx = 1 end
   return reqs[idx]
end
