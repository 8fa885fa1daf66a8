-- Shared by the wrk scripts bench/gate.lua and bench/webhook.lua, which load it with
-- dofile: a thread id per wrk thread (`tid`), the optional Bearer token (BENCH_TOKEN)
-- and the BENCH_RESULT line that bench/run.sh reads.

local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

-- headers, plus "Authorization: Bearer $BENCH_TOKEN" when BENCH_TOKEN is set
function with_token(headers)
   local token = os.getenv("BENCH_TOKEN")
   if token ~= nil and token ~= "" then
      headers["Authorization"] = "Bearer " .. token
   end
   return headers
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
