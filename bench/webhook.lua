-- wrk script: waguard webhook ingest.
-- POSTs On-Premises WABA client webhook bodies: an inbound text message with a
-- unique message id per request (so deduplication never short-circuits) and,
-- every 10th request, a user_identity_changed system message (the user's hash is
-- "Bk<wa_id>A=", which bench/run.sh gives the WABA simulator beforehand so that
-- waguard's acknowledgements succeed instead of piling up as retries).
-- Env: BENCH_NONCE (makes ids unique across runs), BENCH_WEBHOOK_PATH,
--      BENCH_USERS (size of the sender pool), BENCH_BASE (first wa_id),
--      BENCH_TOKEN (optional Bearer token).

-- setup(), done() and with_token() are in bench/common.lua, next to this script
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "common.lua")

function init(args)
   nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
   path = os.getenv("BENCH_WEBHOOK_PATH") or "/webhook"
   users = tonumber(os.getenv("BENCH_USERS") or "5000")
   base = tonumber(os.getenv("BENCH_BASE") or "15550100000")
   headers = with_token({ ["Content-Type"] = "application/json" })
   tid = tid or 1
   n = 0
end

local text_fmt = '{"contacts":[{"profile":{"name":"Bench User %d"},"wa_id":"%d"}],'
   .. '"messages":[{"from":"%d","id":"%s","timestamp":"%d",'
   .. '"text":{"body":"Hello, is order %d on its way?"},"type":"text"}]}'

local system_fmt = '{"messages":[{"from":"%d","id":"%s","timestamp":"%d","type":"system",'
   .. '"system":{"body":"User %d changed their security code.","customer":"%d",'
   .. '"identity":"%s","type":"user_identity_changed"}}]}'

function request()
   n = n + 1
   -- senders spread over the pool; identity changes walk it user by user
   local k = n
   if n % 10 == 0 then k = n / 10 end
   local wa = base + ((k * 7919 + tid * 104729) % users)
   local id = string.format("ABGGFlA5Fp%s%02dX%010d", nonce, tid, n)
   local ts = os.time()
   local body
   if n % 10 == 0 then
      -- one hash per user, the one run.sh told the WABA simulator (so acks succeed)
      local hash = string.format("Bk%dA=", wa)
      body = string.format(system_fmt, wa, id, ts, wa, wa, hash)
   else
      body = string.format(text_fmt, wa, wa, wa, id, ts, n)
   end
   return wrk.format("POST", path, headers, body)
end
