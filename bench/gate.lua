-- wrk script: waguard gate decisions.
-- GET /v1/gate/+{wa_id}?type=text round-robin over a pool of wa_ids that the
-- run script pre-populated with inbound messages (so the 24 h window is open).
-- Env: BENCH_USERS (pool size), BENCH_BASE (first wa_id), BENCH_TYPE,
--      BENCH_TOKEN (optional Bearer token).

local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

function init(args)
   local users = tonumber(os.getenv("BENCH_USERS") or "1000")
   local base = tonumber(os.getenv("BENCH_BASE") or "15550200000")
   local mtype = os.getenv("BENCH_TYPE") or "text"
   local headers = {}
   local token = os.getenv("BENCH_TOKEN")
   if token ~= nil and token ~= "" then
      headers["Authorization"] = "Bearer " .. token
   end
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

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d errors=%d\n",
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout))
end
