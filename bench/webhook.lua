-- wrk script: waguard webhook ingest, one kind of On-Premises body per run.
-- BENCH_KIND:
--   inbound   an inbound text message (with its contacts entry)
--   status    a status of a message waguard's business sent (sent, delivered, read in turn)
--   identity  a user_identity_changed system message with a new hash every time, so each
--             one is applied and (ack = auto) acknowledged to the upstream stub
--   mixed     nine inbound messages to one identity change
-- Every body carries a unique message id (so deduplication never short-circuits).
-- Senders walk a pool of users from several countries (pool_wa_id() in common.lua).
-- Env: BENCH_KIND (inbound), BENCH_NONCE (makes ids unique across runs),
--      BENCH_WEBHOOK_PATH, BENCH_USERS (pool size), BENCH_POOL (the pool's digit),
--      BENCH_TOKEN (optional Bearer token).

-- setup(), done(), with_token(), pool_wa_id() are in bench/common.lua, next to this script
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "common.lua")

function init(args)
   kind = os.getenv("BENCH_KIND") or "inbound"
   nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
   path = os.getenv("BENCH_WEBHOOK_PATH") or "/webhook"
   users = tonumber(os.getenv("BENCH_USERS") or "2000")
   pool = os.getenv("BENCH_POOL") or "1"
   headers = with_token({ ["Content-Type"] = "application/json" })
   tid = tid or 1
   n = 0
end

local text_fmt = '{"contacts":[{"profile":{"name":"Bench User %d"},"wa_id":"%s"}],'
   .. '"messages":[{"from":"%s","id":"%s","timestamp":"%d",'
   .. '"text":{"body":"Hello, is order %d on its way?"},"type":"text"}]}'

local status_fmt = '{"statuses":[{"id":"%s","recipient_id":"%s","status":"%s",'
   .. '"timestamp":"%d","type":"message"}]}'

local system_fmt = '{"messages":[{"from":"%s","id":"%s","timestamp":"%d","type":"system",'
   .. '"system":{"body":"User %s changed their security code.","customer":"%s",'
   .. '"identity":"%s","type":"user_identity_changed"}}]}'

local statuses = { "sent", "delivered", "read" }

function request()
   n = n + 1
   local k = kind
   if k == "mixed" then k = (n % 10 == 0) and "identity" or "inbound" end
   -- senders spread over the pool
   local wa = pool_wa_id(pool, (n * 7919 + tid * 104729) % users)
   local ts = os.time()
   local body
   if k == "identity" then
      -- a new hash each time (base64 alphabet): every change is applied and acknowledged
      local id = string.format("ABGGFlA5Fp%s%02dX%010d", nonce, tid, n)
      local hash = string.format("Bk%s%02d%08dA=", nonce, tid, n)
      body = string.format(system_fmt, wa, id, ts, wa, wa, hash)
   elseif k == "status" then
      local id = string.format("gBEGkYiEB1VXAglK1Z%s%02d%010d", nonce, tid, n)
      body = string.format(status_fmt, id, wa, statuses[n % 3 + 1], ts)
   else
      local id = string.format("ABGGFlA5Fp%s%02dX%010d", nonce, tid, n)
      body = string.format(text_fmt, n, wa, wa, id, ts, n)
   end
   return wrk.format("POST", path, headers, body)
end
