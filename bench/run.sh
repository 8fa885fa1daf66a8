#!/usr/bin/env bash
# waguard benchmark: `bash bench/run.sh` from the repository top (or `make bench`).
#
# Builds waguard, the ceiling probe (bench/ceiling.c: the least a libevent +
# cJSON + hiredis daemon can do per request) and the upstream stub
# (bench/upstream_stub.c: a minimal WABA client, waguard's upstream here), starts a
# private redis-server, the stub, the probe and waguard, and drives them with wrk,
# waguard and its reference taking turns for BENCH_ROUNDS rounds:
#   (a) webhook ingest, one kind of On-Premises body per scenario (bench/webhook.lua),
#       a unique message id per request: inbound text messages, statuses, and
#       user_identity_changed messages with a new hash each, twice: acknowledged to the
#       stub (ack = auto: the acknowledgement path, measured, no target) and by a second
#       waguard with ack = manual (ingest alone, target 0.6); reference: the ceiling probe;
#   (b) gate decisions: GET /v1/gate/{+wa_id | digits}?type=text over a pre-populated
#       pool (bench/gate.lua); reference: the ceiling probe;
#   (c) the send proxy: POST /v1/messages through waguard to the stub (bench/send.lua);
#       reference: the gated forward of the ceiling probe (one cJSON parse, one HMGET, one
#       keep-alive forward to the same stub, as many upstream connections as waguard's
#       max_in_flight), so that the ratio measures waguard and not the box; the stub
#       answering directly is measured too, as the floor under both.
# Users come from several countries (US, UK, India, Brazil: pool_wa_id() in
# bench/common.lua). Then bench/ack_bench.py measures acknowledgement throughput and
# latency (against tests/waba_sim.py), and bench/memory.py the Redis memory and Redis
# time per user and per webhook of each kind.
# Results are printed and written to build/bench-results.txt.
#
# Env: BENCH_SECONDS (5) per wrk run, BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CONNECTIONS (32),
#      BENCH_GATE_USERS (1000), BENCH_SEND_USERS (1000), BENCH_SKIP_ACK=1 to skip ack_bench.py,
#      BENCH_ACK_USERS (1000), BENCH_ACK_SAMPLE (200),
#      BENCH_SKIP_MEMORY=1 to skip memory.py, BENCH_MEMORY_USERS (10000), BENCH_MEMORY_WEBHOOKS (20000),
#      BENCH_WAGUARD=PATH (benchmark that binary, skip make), KEEP_TMP=1 (keep logs),
#      BENCH_PERF=1 (perf record waguard during each scenario: build/bench-perf-SCENARIO.txt).
# Targets (issue 20): ingest of inbound messages and statuses 0.8 of the ceiling, identity
# changes 0.6 (ack = manual; with ack = auto measured), decisions 0.9, the send proxy 0.8 of the gated forward, and every p99 within
# 1.5x of its reference's p99 in the same round; each line says met or MISSED, and "Where
# the time goes" gives each scenario's CPU and Redis time per request.
# Needs: wrk, redis-server, redis-cli, cc, pkg-config, /usr/bin/python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=/usr/bin/python3
SECS=${BENCH_SECONDS:-5}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-32}
GATE_USERS=${BENCH_GATE_USERS:-1000}
SEND_USERS=${BENCH_SEND_USERS:-1000}
WEBHOOK_USERS=2000
# the pools' digits (pool_wa_id() in bench/common.lua and bench/benchlib.py)
WEBHOOK_POOL=1
GATE_POOL=2
SEND_POOL=3
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
# shellcheck disable=SC2046
cc -std=c11 -O2 -Wall -Wextra -Werror -o build/bench-upstream-stub bench/upstream_stub.c \
    $(pkg-config --cflags --libs libevent) || die "cannot build the upstream stub"

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

# The upstream stub (bench/upstream_stub.c): waguard's WABA client in this run
# (logins, acknowledgements, sends), and the reference of the send proxy.
SIM_USER="admin"
SIM_PASS=bench-secret-$$
printf '%s\n' "$SIM_PASS" >"$TMP/waba_password"
: >"$TMP/stub.log"
build/bench-upstream-stub --port 0 >"$TMP/stub.log" 2>&1 &
STUB_PID=$!
PIDS+=("$STUB_PID")
STUB_URL=
for _ in $(seq 100); do
    STUB_URL=$(sed -n 's/^stub listening on //p' "$TMP/stub.log" | head -n 1)
    [ -n "$STUB_URL" ] && break
    sleep 0.05
done
[ -n "$STUB_URL" ] || { show_log "$TMP/stub.log"; die "the upstream stub did not start"; }

# The ceiling probe.
CPORT=$(freeport)
STUB_PORT=${STUB_URL##*:}
build/bench-ceiling --port "$CPORT" --redis-port "$RPORT" --upstream-port "$STUB_PORT" \
    --upstream-conns 64 >"$TMP/ceiling.log" 2>&1 &
CEIL_PID=$!
PIDS+=("$CEIL_PID")
CEIL_URL="http://127.0.0.1:$CPORT"
"$PY" bench/preload.py wait "$CEIL_URL/healthz" 10 || { show_log "$TMP/ceiling.log"; die "the ceiling probe did not start"; }

# waguard.
WPORT=$(freeport)
"$PY" bench/preload.py config --port "$WPORT" --redis-port "$RPORT" --upstream "$STUB_URL" \
    --username "$SIM_USER" --max-in-flight 64 >"$TMP/waguard.conf" || die "cannot write waguard.conf"
"$WAGUARD" --config "$TMP/waguard.conf" >"$TMP/waguard.log" 2>&1 &
WG_PID=$!
PIDS+=("$WG_PID")
WG_URL="http://127.0.0.1:$WPORT"
"$PY" bench/preload.py wait "$WG_URL/readyz" 15 || { show_log "$TMP/waguard.log"; die "waguard did not become ready"; }
# A second waguard with ack = manual (its own key prefix): identity ingest without the
# acknowledgement work, which the issue's 0.6 target is about; the first one measures the
# acknowledgement path (ack = auto, to the stub).
MPORT=$(freeport)
"$PY" bench/preload.py config --port "$MPORT" --redis-port "$RPORT" --upstream "$STUB_URL" \
    --username "$SIM_USER" --max-in-flight 64 --ack manual --key-prefix wgmanual >"$TMP/waguard-manual.conf" \
    || die "cannot write waguard-manual.conf"
"$WAGUARD" --config "$TMP/waguard-manual.conf" >"$TMP/waguard-manual.log" 2>&1 &
WGM_PID=$!
PIDS+=("$WGM_PID")
WGM_URL="http://127.0.0.1:$MPORT"
"$PY" bench/preload.py wait "$WGM_URL/readyz" 15 || { show_log "$TMP/waguard-manual.log"; die "waguard (ack = manual) did not become ready"; }
sleep 1
RSS_IDLE=$(rss_kb "$WG_PID")

# ---------------------------------------------------------------- wrk
# CPU time (clock ticks, user + system) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
# run_wrk NAME SCRIPT URL SERVER_PID [ENV...]: prints the BENCH_RESULT fields of the run,
# plus cpu_srv / cpu_redis / cpu_stub: the CPU the server, redis-server and the upstream
# stub used, % of one core.
run_wrk() {
    local name=$1 script=$2 url=$3 spid=$4 s0 r0 t0 a0 s1 r1 t1 a1 res
    shift 4
    log "wrk $name ($SECS s, $THREADS threads, $CONNS connections)"
    s0=$(cpu_ticks "$spid"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(cpu_ticks "$STUB_PID"); a0=$(busy_ticks)
    env "$@" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 5s --latency -s "$script" "$url" \
        >"$TMP/wrk-$name.txt" 2>&1 || { cat "$TMP/wrk-$name.txt" >&2; die "wrk failed ($name)"; }
    s1=$(cpu_ticks "$spid"); r1=$(cpu_ticks "$REDIS_PID"); t1=$(cpu_ticks "$STUB_PID"); a1=$(busy_ticks)
    kill -0 "$WG_PID" 2>/dev/null || { show_log "$TMP/waguard.log"; die "waguard died during $name"; }
    res=$(grep '^BENCH_RESULT' "$TMP/wrk-$name.txt" | tail -n 1) || die "no result from wrk ($name)"
    [ "$spid" != "$STUB_PID" ] || t1=$t0   # the stub as the server: counted once, as the server
    awk -v r="$res" -v s=$((s1 - s0)) -v rd=$((r1 - r0)) -v st=$((t1 - t0)) -v all=$((a1 - a0)) \
        -v hz="$CLK_TCK" -v d="$(field "$res" duration_us)" \
        'BEGIN { f = 100 / hz / (d / 1e6);
                 printf "%s cpu_srv=%.0f%% cpu_redis=%.0f%% cpu_stub=%.0f%% cpu_all=%.0f%%\n",
                        r, s * f, rd * f, st * f, all * f }'
}
# The CPU time (clock ticks) every core of the machine has been busy so far.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
field() { sed -n "s/.* $2=\\([^ ]*\\).*/\\1/p" <<<" $1"; }

NONCE=$(printf '%04x' $((RANDOM)))
# On 2 shared cores one run varies by ±15-30 %: waguard and its reference take turns,
# ROUNDS times, and the round with the median ratio is the one reported (all ratios shown).
ROUNDS=${BENCH_ROUNDS:-3}
# pick_median SCENARIO: prints "index ratios" for the round with the median ratio.
pick_median() {
    local -n a=RES_WG_$1 b=RES_REF_$1
    local i lines=""
    for i in "${!a[@]}"; do
        lines+="$(awk -v x="$(field "${a[$i]}" rps)" -v y="$(field "${b[$i]}" rps)" -v i="$i" \
            'BEGIN { printf "%.3f %d\n", (y > 0 ? x / y : 0), i }')"$'\n'
    done
    local sorted; sorted=$(printf '%s' "$lines" | sort -n)
    local mid=$(( $(printf '%s\n' "$sorted" | wc -l) / 2 + 1 ))
    echo "$(printf '%s\n' "$sorted" | sed -n "${mid}p" | cut -d' ' -f2) $(printf '%s\n' "$sorted" | cut -d' ' -f1 | paste -sd' ')"
}
# wait_acks: wait (at most 10 s) until waguard's acknowledgement queue is empty, so that
# acknowledgements of waguard's turn do not run during the reference's; prints
# "LEFT_AT_START:MS_TO_EMPTY:LEFT_AT_END".
wait_acks() {
    local first left t0 _
    t0=$(date +%s%N)
    first=$(redis-cli -p "$RPORT" zcard waguard:ack:queue 2>/dev/null || echo 0)
    left=$first
    for _ in $(seq 200); do
        [ "${left:-0}" = 0 ] && break
        sleep 0.05
        left=$(redis-cli -p "$RPORT" zcard waguard:ack:queue 2>/dev/null || echo 0)
    done
    echo "${first:-0}:$(( ($(date +%s%N) - t0) / 1000000 )):${left:-0}"
}
# Where the time goes, every round: Redis's INFO commandstats of each turn (reset before it)
# goes to $TMP/cmdstats-SCENARIO-{waguard,reference}-ROUND.txt.  BENCH_PERF=1 also records
# waguard with `perf record -e cpu-clock -g` during its first turn of every scenario and
# writes the top of the profile to build/bench-perf-SCENARIO.txt.
cmdstats_reset() { redis-cli -p "$RPORT" config resetstat >/dev/null 2>&1 || true; }
cmdstats_save() { redis-cli -p "$RPORT" info commandstats >"$TMP/cmdstats-$1.txt" 2>/dev/null || true; }
perf_start() { # perf_start SCENARIO: prints the pid of perf record, or nothing
    [ -n "${BENCH_PERF:-}" ] && command -v perf >/dev/null || return 0
    perf record -q -e cpu-clock -F 999 -g -p "$WG_PID" -o "$TMP/perf-$1.data" -- sleep "$SECS" \
        >/dev/null 2>&1 &
    echo $!
}
perf_finish() { # perf_finish SCENARIO PID
    [ -n "$2" ] || return 0
    local _
    for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    { echo "perf record -e cpu-clock -g of waguard during its first '$1' turn (self time)"
      perf report -i "$TMP/perf-$1.data" --stdio --no-children --sort dso -g none 2>/dev/null \
          | grep -v '^#' | grep -v '^$' | sed -n '1,12p'
      echo
      perf report -i "$TMP/perf-$1.data" --stdio --no-children --sort dso,sym -g none 2>/dev/null \
          | grep -v '^#' | grep -v '^$' | sed -n '1,40p'
    } >"build/bench-perf-$1.txt" || true
    log "profile of waguard during $1 written to build/bench-perf-$1.txt"
}
# compare SCENARIO SCRIPT WG_URL REF_URL REF_PID [ENV...]: ROUNDS rounds of wrk at waguard,
# then at the reference; the BENCH_RESULT lines go to the arrays RES_WG_<SCENARIO> and
# RES_REF_<SCENARIO>, the acknowledgement queue after each waguard turn (wait_acks) to
# ACKS_<SCENARIO>.  Each scenario and round gets its own BENCH_NONCE (unique message ids).
SC_N=0
compare() {
    local sc=$1 script=$2 wurl=$3 rurl=$4 rpid=$5 round nonce perf_pid acks
    shift 5
    SC_N=$((SC_N + 1))
    declare -ga "RES_WG_$sc=()" "RES_REF_$sc=()" "ACKS_$sc=()"
    local -n wg=RES_WG_$sc ref=RES_REF_$sc ackq=ACKS_$sc
    for round in $(seq "$ROUNDS"); do
        nonce=$NONCE$SC_N$(printf '%02d' "$round")
        perf_pid=""
        [ "$round" = 1 ] && perf_pid=$(perf_start "$sc")
        cmdstats_reset
        wg+=("$(run_wrk "$sc-waguard-$round" "$script" "$wurl" "$WG_PID" "$@" BENCH_NONCE="$nonce")")
        cmdstats_save "$sc-waguard-$round"
        perf_finish "$sc" "$perf_pid"
        acks=$(wait_acks)
        ackq+=("$acks")
        [ "${acks##*:}" = 0 ] || log "acknowledgements still queued after $sc round $round"
        cmdstats_reset
        ref+=("$(run_wrk "$sc-reference-$round" "$script" "$rurl" "$rpid" "$@" BENCH_NONCE="$nonce")")
        cmdstats_save "$sc-reference-$round"
    done
}

# ---- (a) webhook ingest by kind: inbound messages, statuses, identity changes
WH_ENV=(BENCH_USERS="$WEBHOOK_USERS" BENCH_POOL="$WEBHOOK_POOL")
for kind in inbound status identity; do
    compare "$kind" bench/webhook.lua "$WG_URL/webhook" "$CEIL_URL/webhook" "$CEIL_PID" \
        "${WH_ENV[@]}" BENCH_KIND="$kind"
done
WG_AUTO_PID=$WG_PID
WG_PID=$WGM_PID           # run_wrk and compare watch and measure this one now
compare identity_manual bench/webhook.lua "$WGM_URL/webhook" "$CEIL_URL/webhook" "$CEIL_PID" \
    "${WH_ENV[@]}" BENCH_KIND=identity
WG_PID=$WG_AUTO_PID
kill -TERM "$WGM_PID" 2>/dev/null || true
RSS_WH=$(rss_kb "$WG_PID")

# What waguard made of the webhook load (items, duplicates, dead letters, ack queue).
read -r M_ITEMS M_DUPS M_DEAD M_ACKQ M_ACKOK <<<"$("$PY" bench/preload.py metric "$WG_URL/metrics" \
    waguard_webhook_items_total waguard_webhook_duplicates_total waguard_dead_letters_total \
    waguard_ack_queue_depth waguard_ack_attempts_total 2>/dev/null || echo '- - - - -')"
STREAM_LEN=$(redis-cli -p "$RPORT" xlen waguard:events 2>/dev/null || echo '-')
# Let waguard's acknowledgements of the webhook phase settle (at most 10 s).
ACKQ_LEFT=$(wait_acks); ACKQ_LEFT=${ACKQ_LEFT##*:}

# ---- (b) gate decisions
log "pre-populating $GATE_USERS gate users in both"
"$PY" bench/preload.py users "$WG_URL/webhook" --pool $GATE_POOL --count "$GATE_USERS" \
    || log "waguard refused some pre-population webhooks"
"$PY" bench/preload.py users "$CEIL_URL/webhook" --pool $GATE_POOL --count "$GATE_USERS" \
    || log "the ceiling refused some pre-population webhooks"
GATE_CHECK=$("$PY" bench/preload.py check "$WG_URL" --pool $GATE_POOL --count "$GATE_USERS" --type text)

compare gate bench/gate.lua "$WG_URL" "$CEIL_URL" "$CEIL_PID" \
    BENCH_USERS="$GATE_USERS" BENCH_POOL="$GATE_POOL" BENCH_TYPE=text
RSS_GATE=$(rss_kb "$WG_PID")

# ---- (c) the send proxy: POST /v1/messages through waguard to the stub, and to the stub
log "opening the 24 h window of $SEND_USERS send users"
"$PY" bench/preload.py users "$WG_URL/webhook" --pool $SEND_POOL --count "$SEND_USERS" \
    || log "waguard refused some pre-population webhooks"
SEND_CHECK=$("$PY" bench/preload.py check "$WG_URL" --pool $SEND_POOL --count "$SEND_USERS" --type text)
"$PY" bench/preload.py users "$CEIL_URL/webhook" --pool $SEND_POOL --count "$SEND_USERS" \
    || log "the ceiling refused some pre-population webhooks"
compare proxy bench/send.lua "$WG_URL" "$CEIL_URL" "$CEIL_PID" \
    BENCH_USERS="$SEND_USERS" BENCH_POOL="$SEND_POOL"
# The floor under both: the same requests to the stub directly.
STUB_DIRECT=$(run_wrk "stub-direct" bench/send.lua "$STUB_URL" "$STUB_PID" \
    BENCH_USERS="$SEND_USERS" BENCH_POOL="$SEND_POOL" BENCH_NONCE="${NONCE}99")
sleep 1
RSS_AFTER=$(rss_kb "$WG_PID")

# ---------------------------------------------------------------- report
ms() { awk -v us="$1" 'BEGIN { if (us == "") print "-"; else printf "%.2f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
FMT='%-17s %-9s %10s %10s %10s %10s %8s %7s %16s\n'
row() { # row SCENARIO SERVER RESULT
    # shellcheck disable=SC2059
    printf "$FMT" "$1" "$2" "$(field "$3" rps)" \
        "$(ms "$(field "$3" p50_us)")" "$(ms "$(field "$3" p90_us)")" "$(ms "$(field "$3" p99_us)")" \
        "$(field "$3" non2xx)" "$(field "$3" errors)" \
        "$(field "$3" cpu_srv)/$(field "$3" cpu_redis)/$(field "$3" cpu_stub)"
}
# ratios SCENARIO: waguard / reference of every round, in the order they ran.
ratios() {
    local -n a=RES_WG_$1 b=RES_REF_$1
    local i out=""
    for i in "${!a[@]}"; do
        out+="$(ratio "$(field "${a[$i]}" rps)" "$(field "${b[$i]}" rps)") "
    done
    echo "${out% }"
}
# scenario SCENARIO LABEL REFERENCE TARGET: the median round's rows and the ratio line.
MEDIANS=""
P99S=""
scenario() {
    local sc=$1 label=$2 refname=$3 target=$4 i sorted r verdict p99r
    read -r i sorted <<<"$(pick_median "$sc")"
    local -n a=RES_WG_$sc b=RES_REF_$sc
    row "$label" waguard "${a[$i]}"
    row "$label" "$refname" "${b[$i]}"
    r=$(ratio "$(field "${a[$i]}" rps)" "$(field "${b[$i]}" rps)")
    verdict=$(awk -v r="$r" -v t="$target" 'BEGIN { print (r + 0 >= t ? "met" : "MISSED") }')
    if [ "$target" = 0 ]; then
        printf '%-17s %-9s %10s   (median of %s rounds; rounds in order: %s; measured, no target)\n' \
            "" ratio "$r" "$ROUNDS" "$(ratios "$sc")"
    else
        printf '%-17s %-9s %10s   (median of %s rounds; rounds in order: %s; target %s: %s)\n' \
            "" ratio "$r" "$ROUNDS" "$(ratios "$sc")" "$target" "$verdict"
    fi
    # p99 against the reference's p99 in the same round (target: within 1.5x)
    p99r=$(ratio "$(field "${a[$i]}" p99_us)" "$(field "${b[$i]}" p99_us)")
    verdict=$(awk -v r="$p99r" 'BEGIN { print (r != "-" && r + 0 <= 1.5 ? "met" : "MISSED") }')
    printf '%-17s %-9s %10s   (waguard p99 / %s p99, same round; target at most 1.50: %s)\n' \
        "" "p99 x" "$p99r" "$refname" "$verdict"
    MEDIANS+="$label=$r "
    P99S+="$label=$p99r "
    WHERE+="$label (median round $((i + 1))):"$'\n'
    WHERE+="  CPU per request, waguard: $(cpu_per_req "${a[$i]}")"$'\n'
    WHERE+="  CPU per request, $refname: $(cpu_per_req "${b[$i]}")"$'\n'
    WHERE+="  Redis, waguard: $("$PY" bench/preload.py cmdstats "$TMP/cmdstats-$sc-waguard-$((i + 1)).txt" \
        "$(field "${a[$i]}" requests)" 2>/dev/null || echo -)"$'\n'
    WHERE+="  Redis, $refname: $("$PY" bench/preload.py cmdstats "$TMP/cmdstats-$sc-reference-$((i + 1)).txt" \
        "$(field "${b[$i]}" requests)" 2>/dev/null || echo -)"$'\n'
    local -n aq=ACKS_$sc
    [ "${aq[$i]%%:*}" = 0 ] ||
        WHERE+="  acknowledgements queued at the end of waguard's turn: ${aq[$i]%%:*}, emptied ${aq[$i]#*:} ms later (ms:left)"$'\n'
}
# cpu_per_req RESULT: the CPU time the server, Redis and the stub used per request, in µs.
cpu_per_req() {
    awk -v rps="$(field "$1" rps)" -v s="$(field "$1" cpu_srv)" -v r="$(field "$1" cpu_redis)" \
        -v t="$(field "$1" cpu_stub)" -v all="$(field "$1" cpu_all)" -v n="$(nproc)" 'BEGIN { if (rps + 0 <= 0) { print "-"; exit }
            f = 1e4 / rps; printf "server %.1f us, redis %.1f us, stub %.1f us, the rest (wrk, the kernel, anything else running) %.1f us; machine busy %.0f%% of %d cores\n",
                s * f, r * f, t * f, (all - s - r - t) * f, all / n, n }'
}
WHERE=""
{
    echo "waguard benchmark — $(date -u '+%Y-%m-%d %H:%M:%SZ'), $(nproc) CPUs, wrk -t$THREADS -c$CONNS -d${SECS}s, $ROUNDS rounds"
    echo "waguard $("$WAGUARD" --version 2>/dev/null | head -n 1 || echo '?'), redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), ceiling = bench/ceiling.c, upstream = bench/upstream_stub.c"
    echo
    # shellcheck disable=SC2059
    printf "$FMT" scenario server "req/s" p50 p90 p99 non-2xx errors "cpu srv/rds/stub"
    scenario inbound "ingest inbound" ceiling 0.8
    scenario status "ingest status" ceiling 0.8
    scenario identity "identity, auto" ceiling 0
    scenario identity_manual "identity, manual" ceiling 0.6
    scenario gate "gate decision" ceiling 0.9
    scenario proxy "send proxy" "gated fwd" 0.8
    row "send proxy" "stub only" "$STUB_DIRECT"
    echo
    echo "waguard RSS: idle ${RSS_IDLE} kB; after webhook load ${RSS_WH} kB; after gate load ${RSS_GATE} kB; after sends, 1 s later ${RSS_AFTER} kB"
    echo "webhook load as waguard saw it: items=$M_ITEMS duplicates=$M_DUPS dead_letters=$M_DEAD" \
         "events_stream_len=$STREAM_LEN ack_queue_depth=$M_ACKQ ack_attempts=$M_ACKOK (ack queue left after 10 s: $ACKQ_LEFT)"
    echo "gate pool before the gate run (type=text, $GATE_USERS users): $GATE_CHECK"
    echo "send pool before the send run (type=text, $SEND_USERS users): $SEND_CHECK"
    echo "(cpu srv/rds/stub: CPU used during the run by the server, redis-server and the upstream stub, % of one core)"
    echo "(ingest: one kind of On-Premises body per scenario, unique message ids, $WEBHOOK_USERS senders from"
    echo " US, UK, India and Brazil; identity changes carry a new hash each and are acknowledged to the stub)"
    echo "(gate: half the users asked for as +digits, half as bare digits; send proxy: POST /v1/messages"
    echo " through waguard to the stub, against the ceiling's gated forward (one HMGET, one keep-alive"
    echo " forward to the same stub); stub only: the same requests to the stub directly, the floor)"
    echo
    echo "Where the time goes (CPU from /proc, % of one core / req/s; Redis from INFO commandstats:"
    echo "the time in commands per request, a script's time includes the commands it calls):"
    printf '%s' "$WHERE"
    echo "BENCH_RATIOS $MEDIANS"
    echo "BENCH_P99 $P99S"
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
