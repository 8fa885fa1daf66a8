#!/usr/bin/env bash
# waguard benchmark: `bash bench/run.sh` from the repository top (or `make bench`).
#
# Builds waguard and the ceiling probe (bench/ceiling.c: the least a libevent +
# cJSON + hiredis daemon can do per request), starts a private redis-server,
# the WABA simulator, the probe and waguard, and drives both with wrk:
#   (a) webhook ingest: POST /webhook, On-Premises bodies, a unique message id
#       per request, every 10th a user_identity_changed system message;
#   (b) gate decisions: GET /v1/gate/+WA_ID?type=text over a pre-populated pool.
# Then bench/ack_bench.py measures acknowledgement throughput and latency, and
# bench/memory.py the Redis memory and Redis time per user and per webhook of each kind.
# Results are printed and written to build/bench-results.txt.
#
# Env: BENCH_SECONDS (5) per wrk run, BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CONNECTIONS (32),
#      BENCH_GATE_USERS (1000), BENCH_SKIP_ACK=1 to skip ack_bench.py,
#      BENCH_ACK_USERS (1000), BENCH_ACK_SAMPLE (200),
#      BENCH_SKIP_MEMORY=1 to skip memory.py, BENCH_MEMORY_USERS (10000), BENCH_MEMORY_WEBHOOKS (20000),
#      BENCH_WAGUARD=PATH (benchmark that binary, skip make), KEEP_TMP=1 (keep logs).
# Needs: wrk, redis-server, redis-cli, cc, pkg-config, /usr/bin/python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=/usr/bin/python3
SECS=${BENCH_SECONDS:-5}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-32}
GATE_USERS=${BENCH_GATE_USERS:-1000}
WEBHOOK_USERS=2000
WEBHOOK_BASE=15550100000
GATE_BASE=15550200000
RESULTS=build/bench-results.txt

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

for tool in wrk redis-server redis-cli cc pkg-config make; do
    command -v "$tool" >/dev/null || die "$tool is not installed (try: make deps)"
done

# ---------------------------------------------------------------- build
WAGUARD=${BENCH_WAGUARD:-build/waguard}   # BENCH_WAGUARD=PATH: use that binary, skip make
if [ -z "${BENCH_WAGUARD:-}" ]; then
    log "building waguard (make) and the ceiling probe"
    make --no-print-directory >&2 || die "make failed"
fi
[ -x "$WAGUARD" ] || die "$WAGUARD was not built"
mkdir -p build
# shellcheck disable=SC2046
cc -std=c11 -O2 -Wall -Wextra -Werror -o build/bench-ceiling bench/ceiling.c \
    $(pkg-config --cflags --libs libevent libcjson hiredis) || die "cannot build the ceiling probe"

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d /tmp/waguard-bench.XXXXXX)
PIDS=()
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${KEEP_TMP:-}" ]; then
        echo "bench: logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

freeport() { "$PY" bench/preload.py freeport; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
show_log() { echo "---- $1 (last lines)" >&2; tail -n 20 "$1" >&2 || true; }

RPORT=$(freeport)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save '' --appendonly no \
    --daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$RPORT" ping >/dev/null 2>&1 || { show_log "$TMP/redis.log"; die "redis-server did not start"; }

# The WABA simulator (the upstream of waguard's acknowledgements).
SIM_USER="admin"
SIM_PASS=bench-secret-$$
printf '%s\n' "$SIM_PASS" >"$TMP/waba_password"
SIM_URL=
if [ -f tests/waba_sim.py ]; then
    SPORT=$(freeport)
    "$PY" tests/waba_sim.py --port "$SPORT" --username "$SIM_USER" --password "$SIM_PASS" \
        >"$TMP/sim.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        SIM_URL=$(sed -n 's/^waba_sim listening on //p' "$TMP/sim.log" | head -n 1)
        [ -n "$SIM_URL" ] && break
        sleep 0.05
    done
    [ -n "$SIM_URL" ] || { show_log "$TMP/sim.log"; die "tests/waba_sim.py did not start"; }
    "$PY" bench/preload.py sim-identities "$SIM_URL" --base $WEBHOOK_BASE --count $WEBHOOK_USERS \
        || die "cannot set identities in the simulator"
else
    log "tests/waba_sim.py not found: upstream points at a closed port (acks will fail and retry)"
    SIM_URL="http://127.0.0.1:$(freeport)"
fi

# The ceiling probe.
CPORT=$(freeport)
build/bench-ceiling --port "$CPORT" --redis-port "$RPORT" >"$TMP/ceiling.log" 2>&1 &
CEIL_PID=$!
PIDS+=("$CEIL_PID")
CEIL_URL="http://127.0.0.1:$CPORT"
"$PY" bench/preload.py wait "$CEIL_URL/healthz" 10 || { show_log "$TMP/ceiling.log"; die "the ceiling probe did not start"; }

# waguard.
WPORT=$(freeport)
"$PY" bench/preload.py config --port "$WPORT" --redis-port "$RPORT" --upstream "$SIM_URL" \
    --username "$SIM_USER" >"$TMP/waguard.conf" || die "cannot write waguard.conf"
"$WAGUARD" --config "$TMP/waguard.conf" >"$TMP/waguard.log" 2>&1 &
WG_PID=$!
PIDS+=("$WG_PID")
WG_URL="http://127.0.0.1:$WPORT"
"$PY" bench/preload.py wait "$WG_URL/readyz" 15 || { show_log "$TMP/waguard.log"; die "waguard did not become ready"; }
sleep 1
RSS_IDLE=$(rss_kb "$WG_PID")

# ---------------------------------------------------------------- wrk
# CPU time (clock ticks, user + system) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
# run_wrk NAME SCRIPT URL SERVER_PID [ENV...]: prints the BENCH_RESULT fields of the run,
# plus cpu_srv / cpu_redis: the CPU the server and redis-server used, % of one core.
run_wrk() {
    local name=$1 script=$2 url=$3 spid=$4 s0 r0 s1 r1 res
    shift 4
    log "wrk $name ($SECS s, $THREADS threads, $CONNS connections)"
    s0=$(cpu_ticks "$spid"); r0=$(cpu_ticks "$REDIS_PID")
    env "$@" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 5s --latency -s "$script" "$url" \
        >"$TMP/wrk-$name.txt" 2>&1 || { cat "$TMP/wrk-$name.txt" >&2; die "wrk failed ($name)"; }
    s1=$(cpu_ticks "$spid"); r1=$(cpu_ticks "$REDIS_PID")
    kill -0 "$WG_PID" 2>/dev/null || { show_log "$TMP/waguard.log"; die "waguard died during $name"; }
    res=$(grep '^BENCH_RESULT' "$TMP/wrk-$name.txt" | tail -n 1) || die "no result from wrk ($name)"
    awk -v r="$res" -v s=$((s1 - s0)) -v rd=$((r1 - r0)) -v hz="$CLK_TCK" -v d="$(field "$res" duration_us)" \
        'BEGIN { printf "%s cpu_srv=%.0f%% cpu_redis=%.0f%%\n", r, s / hz / (d / 1e6) * 100, rd / hz / (d / 1e6) * 100 }'
}
field() { sed -n "s/.* $2=\\([^ ]*\\).*/\\1/p" <<<" $1"; }

NONCE=$(printf '%04x' $((RANDOM)))
WH_ENV=(BENCH_NONCE="$NONCE" BENCH_USERS="$WEBHOOK_USERS" BENCH_BASE="$WEBHOOK_BASE")
# On 2 shared cores one run varies by ±15-30 %: the two servers take turns, ROUNDS
# times, and the round with the median ratio is the one reported (all ratios shown).
ROUNDS=${BENCH_ROUNDS:-3}
# pick_median "RES_A…" "RES_B…": prints "index ratios" for the round with the median ratio.
pick_median() {
    local -n a=$1 b=$2
    local i lines=""
    for i in "${!a[@]}"; do
        lines+="$(awk -v x="$(field "${a[$i]}" rps)" -v y="$(field "${b[$i]}" rps)" -v i="$i" \
            'BEGIN { printf "%.3f %d\n", (y > 0 ? x / y : 0), i }')"$'\n'
    done
    local sorted; sorted=$(printf '%s' "$lines" | sort -n)
    local mid=$(( $(printf '%s\n' "$sorted" | wc -l) / 2 + 1 ))
    echo "$(printf '%s\n' "$sorted" | sed -n "${mid}p" | cut -d' ' -f2) $(printf '%s\n' "$sorted" | cut -d' ' -f1 | paste -sd' ')"
}
WH_WG=(); WH_CE=()
for round in $(seq "$ROUNDS"); do
    WH_WG+=("$(run_wrk webhook-waguard-$round bench/webhook.lua "$WG_URL/webhook" "$WG_PID" "${WH_ENV[@]}" BENCH_NONCE="$NONCE$round")")
    WH_CE+=("$(run_wrk webhook-ceiling-$round bench/webhook.lua "$CEIL_URL/webhook" "$CEIL_PID" "${WH_ENV[@]}" BENCH_NONCE="$NONCE$round")")
done
RSS_WH=$(rss_kb "$WG_PID")
read -r WH_I WH_RATIOS <<<"$(pick_median WH_WG WH_CE)"
R_WH_WG=${WH_WG[$WH_I]}; R_WH_CE=${WH_CE[$WH_I]}

# What waguard made of the webhook load (items, duplicates, dead letters, ack queue).
read -r M_ITEMS M_DUPS M_DEAD M_ACKQ M_ACKOK <<<"$("$PY" bench/preload.py metric "$WG_URL/metrics" \
    waguard_webhook_items_total waguard_webhook_duplicates_total waguard_dead_letters_total \
    waguard_ack_queue_depth waguard_ack_attempts_total 2>/dev/null || echo '- - - - -')"
STREAM_LEN=$(redis-cli -p "$RPORT" xlen waguard:events 2>/dev/null || echo '-')

# Let waguard's acknowledgements of the webhook phase settle (at most 10 s).
ACKQ_LEFT=$(redis-cli -p "$RPORT" zcard waguard:ack:queue 2>/dev/null || echo 0)
for _ in $(seq 100); do
    [ "${ACKQ_LEFT:-0}" = 0 ] && break
    sleep 0.1
    ACKQ_LEFT=$(redis-cli -p "$RPORT" zcard waguard:ack:queue 2>/dev/null || echo 0)
done

log "pre-populating $GATE_USERS gate users in both"
"$PY" bench/preload.py users "$WG_URL/webhook" --base $GATE_BASE --count "$GATE_USERS" \
    || log "waguard refused some pre-population webhooks"
"$PY" bench/preload.py users "$CEIL_URL/webhook" --base $GATE_BASE --count "$GATE_USERS" \
    || log "the ceiling refused some pre-population webhooks"
GATE_CHECK=$("$PY" bench/preload.py check "$WG_URL" --base $GATE_BASE --count "$GATE_USERS" --type text)

GATE_ENV=(BENCH_USERS="$GATE_USERS" BENCH_BASE="$GATE_BASE" BENCH_TYPE=text)
GT_WG=(); GT_CE=()
for round in $(seq "$ROUNDS"); do
    GT_WG+=("$(run_wrk gate-waguard-$round bench/gate.lua "$WG_URL" "$WG_PID" "${GATE_ENV[@]}")")
    GT_CE+=("$(run_wrk gate-ceiling-$round bench/gate.lua "$CEIL_URL" "$CEIL_PID" "${GATE_ENV[@]}")")
done
RSS_GATE=$(rss_kb "$WG_PID")
read -r GT_I GT_RATIOS <<<"$(pick_median GT_WG GT_CE)"
R_GT_WG=${GT_WG[$GT_I]}; R_GT_CE=${GT_CE[$GT_I]}
sleep 1
RSS_AFTER=$(rss_kb "$WG_PID")

# ---------------------------------------------------------------- report
ms() { awk -v us="$1" 'BEGIN { if (us == "") print "-"; else printf "%.2f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
FMT='%-16s %-9s %10s %10s %10s %10s %8s %7s %10s\n'
row() { # row SCENARIO SERVER RESULT
    # shellcheck disable=SC2059
    printf "$FMT" "$1" "$2" "$(field "$3" rps)" \
        "$(ms "$(field "$3" p50_us)")" "$(ms "$(field "$3" p90_us)")" "$(ms "$(field "$3" p99_us)")" \
        "$(field "$3" non2xx)" "$(field "$3" errors)" "$(field "$3" cpu_srv)/$(field "$3" cpu_redis)"
}
{
    echo "waguard benchmark — $(date -u '+%Y-%m-%d %H:%M:%SZ'), $(nproc) CPUs, wrk -t$THREADS -c$CONNS -d${SECS}s, $ROUNDS rounds"
    echo "waguard $("$WAGUARD" --version 2>/dev/null | head -n 1 || echo '?'), redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), ceiling = bench/ceiling.c"
    echo
    # shellcheck disable=SC2059
    printf "$FMT" scenario server "req/s" p50 p90 p99 non-2xx errors "cpu srv/redis"
    row "webhook ingest" waguard "$R_WH_WG"
    row "webhook ingest" ceiling "$R_WH_CE"
    printf '%-16s %-9s %10s   (waguard / ceiling; the median of %s rounds: %s)\n' "" ratio \
        "$(ratio "$(field "$R_WH_WG" rps)" "$(field "$R_WH_CE" rps)")" "$ROUNDS" "$WH_RATIOS"
    row "gate decision" waguard "$R_GT_WG"
    row "gate decision" ceiling "$R_GT_CE"
    printf '%-16s %-9s %10s   (waguard / ceiling; the median of %s rounds: %s)\n' "" ratio \
        "$(ratio "$(field "$R_GT_WG" rps)" "$(field "$R_GT_CE" rps)")" "$ROUNDS" "$GT_RATIOS"
    echo
    echo "waguard RSS: idle ${RSS_IDLE} kB; after webhook load ${RSS_WH} kB; after gate load ${RSS_GATE} kB; 1 s later ${RSS_AFTER} kB"
    echo "webhook load as waguard saw it: items=$M_ITEMS duplicates=$M_DUPS dead_letters=$M_DEAD" \
         "events_stream_len=$STREAM_LEN ack_queue_depth=$M_ACKQ ack_attempts=$M_ACKOK (ack queue left after 10 s: $ACKQ_LEFT)"
    echo "gate pool before the gate run (type=text, $GATE_USERS users): $GATE_CHECK"
    echo "(cpu srv/redis: CPU used during the run by the server and by redis-server, % of one core)"
    echo "(webhook bodies: 90% inbound text, 10% user_identity_changed; unique message ids; $WEBHOOK_USERS senders)"
} | tee "$RESULTS"

# ---------------------------------------------------------------- acks
# Stop this waguard first so that it does not compete with ack_bench's own.
T_STOP=$(date +%s%N)
kill -TERM "$WG_PID" 2>/dev/null || true
for _ in $(seq 150); do kill -0 "$WG_PID" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$WG_PID" 2>/dev/null && echo "waguard ignored SIGTERM for 15 s: killed" | tee -a "$RESULTS"
WG_RC=0
wait "$WG_PID" 2>/dev/null || WG_RC=$?
T_STOP=$(( ($(date +%s%N) - T_STOP) / 1000000 ))
if [ "$WG_RC" -eq 0 ]; then
    echo "waguard stopped on SIGTERM: exit 0 after $T_STOP ms" | tee -a "$RESULTS"
else
    echo "waguard stopped on SIGTERM: EXIT STATUS $WG_RC after $T_STOP ms$([ "$WG_RC" -gt 128 ] && echo " (signal $((WG_RC - 128)))")" | tee -a "$RESULTS"
    tail -n 5 "$TMP/waguard.log" | sed 's/^/  waguard log: /' | tee -a "$RESULTS"
fi
if [ -z "${BENCH_SKIP_ACK:-}" ]; then
    if [ -f tests/waba_sim.py ]; then
        log "acknowledgement benchmark (bench/ack_bench.py)"
        { echo; "$PY" bench/ack_bench.py --waguard "$WAGUARD" \
              --users "${BENCH_ACK_USERS:-1000}" --sample "${BENCH_ACK_SAMPLE:-200}"; } \
            | tee -a "$RESULTS" || log "ack_bench.py failed"
    else
        echo "ack benchmark skipped: tests/waba_sim.py is missing" | tee -a "$RESULTS"
    fi
fi
if [ -z "${BENCH_SKIP_MEMORY:-}" ]; then
    log "Redis memory per user and per webhook (bench/memory.py)"
    { echo; "$PY" bench/memory.py --waguard "$WAGUARD" --users "${BENCH_MEMORY_USERS:-10000}" \
          --webhooks "${BENCH_MEMORY_WEBHOOKS:-20000}"; } | tee -a "$RESULTS" || log "memory.py failed"
fi
log "results written to $RESULTS"
