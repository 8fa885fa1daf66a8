-- wrk script: sends, POST /v1/messages {"to": wa_id, "type": "text"} round-robin over a
-- pool of users from several countries (pool_wa_id() in common.lua).  Aimed at waguard,
-- each is a gate decision and then a forward to the upstream stub
-- (bench/upstream_stub.c); aimed at the stub, the same request without waguard.
-- The run script opened the 24 h window of every user of the pool beforehand.
-- Env: BENCH_USERS (pool size), BENCH_POOL (the pool's digit), BENCH_TOKEN (optional).

-- setup(), done(), with_token(), pool_wa_id() are in bench/common.lua, next to this script
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "common.lua")

function init(args)
   local users = tonumber(os.getenv("BENCH_USERS") or "1000")
   local pool = os.getenv("BENCH_POOL") or "3"
   local headers = with_token({ ["Content-Type"] = "application/json" })
   reqs = {}
   for i = 0, users - 1 do
      local body = string.format('{"recipient_type":"individual","to":"%s","type":"text",'
         .. '"text":{"body":"Your order %d has shipped."}}', pool_wa_id(pool, i), i)
      reqs[#reqs + 1] = wrk.format("POST", "/v1/messages", headers, body)
   end
   idx = ((tid or 1) * 997) % #reqs
end

function request()
   idx = idx + 1
   if idx > #reqs then idx = 1 end
   return reqs[idx]
end
