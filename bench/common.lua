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

-- The users of a benchmark pool, from several countries (the same numbers as
-- pool_wa_id() in bench/benchlib.py): user i of pool `salt` (one digit) is, by i % 4,
--   US/Canada 1 555 S nnnnnn (11 digits), UK 44 7700 S nnnnn (12),
--   India 91 98765 S nnnn (12), Brazil 55 11 987 S nnnnn (13)
-- with n = i // 4 (so a pool holds at most 40,000 users: India's 4 digits).
local countries = {
   { "1555", 6 },
   { "447700", 5 },
   { "9198765", 4 },
   { "5511987", 5 },
}
function pool_wa_id(salt, i)
   local c = countries[i % 4 + 1]
   return c[1] .. salt .. string.format("%0" .. c[2] .. "d", math.floor(i / 4))
end

-- How a client names user i when it asks the gate (as gate_input() in benchlib.py):
-- every other group of four as dialled ("+" and the international number), the others
-- as the bare digits, which waguard reads both as a wa_id and as a number dialled from
-- home_country_code.
function gate_input(salt, i)
   local w = pool_wa_id(salt, i)
   if math.floor(i / 4) % 2 == 0 then return "+" .. w end
   return w
end
