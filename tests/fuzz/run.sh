#!/usr/bin/env bash
# tests/fuzz/run.sh SECONDS BINARY... — what `make fuzz` runs (docs/testing.md: "Fuzzing, sanitizers and
# the fault suite").  For each build/fuzz/fuzz_<target>:
#   1. replays every file in tests/fuzz/regressions/<target>/ (each a past finding: it must
#      now pass);
#   2. fuzzes for SECONDS on a copy of tests/fuzz/corpus/<target>/ in build/fuzz/work/<target>
#      (the checked-in corpus is never written), with tests/fuzz/<target>.dict when present.
# A crash, leak, sanitizer report, time-out (10 s an input) or memory blow-up (2 GB) fails the
# run; the input is kept in build/fuzz/artifacts/<target>/ and its path printed: copy it
# to tests/fuzz/regressions/<target>/ with a name saying what it found.
# Prints one line a target: executions, executions a second, corpus size, coverage.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:?usage: run.sh SECONDS BINARY...}
shift
status=0
summary=()
for bin in "$@"; do
    t=${bin##*/fuzz_}
    corpus=tests/fuzz/corpus/$t
    regs=tests/fuzz/regressions/$t
    work=build/fuzz/work/$t
    art=build/fuzz/artifacts/$t
    log=build/fuzz/$t.log
    mkdir -p "$art"
    rm -rf "$work" && mkdir -p "$work"
    [ -d "$corpus" ] && cp -a "$corpus"/. "$work"/
    opts=(-timeout=10 -rss_limit_mb=2048 -max_len=16384 -artifact_prefix="$art/" -print_final_stats=1)
    [ -f "tests/fuzz/$t.dict" ] && opts+=(-dict="tests/fuzz/$t.dict")

    shopt -s nullglob
    replay=("$regs"/*)
    shopt -u nullglob
    if [ ${#replay[@]} -gt 0 ]; then
        if ! "$bin" "${opts[@]}" "${replay[@]}" >"$log.replay" 2>&1; then
            echo "fuzz $t: a regression input fails again:" >&2
            grep -E "Running:|ERROR|runtime error|broken rule|SUMMARY" "$log.replay" | head -20 >&2
            echo "(full output: $log.replay)" >&2
            status=1
            summary+=("$t: REGRESSION FAILS (${#replay[@]} inputs replayed; see $log.replay)")
            continue
        fi
    fi
    if [ "$secs" -le 0 ]; then
        summary+=("$t: ${#replay[@]} regression inputs replayed, no fuzzing (FUZZ_SECONDS=0)")
        continue
    fi
    echo "fuzz $t: ${#replay[@]} regression inputs pass; fuzzing ${secs}s on $(ls "$work" | wc -l) seeds"
    if "$bin" "${opts[@]}" -max_total_time="$secs" "$work" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
        summary+=("$t: ${execs:-?} execs (${rate:-?}/s) in ${secs}s, corpus $(ls "$work" | wc -l), ${cov:-cov ?}, ${#replay[@]} regressions pass")
    else
        status=1
        echo "fuzz $t: FAILED" >&2
        grep -E "ERROR|runtime error|broken rule|SUMMARY|Test unit written|^  op:" "$log" | head -20 >&2
        echo "(full output: $log)" >&2
        summary+=("$t: FAILED, input in $art/ (see $log)")
    fi
done
echo "== fuzz summary"
printf '   %s\n' "${summary[@]}"
exit $status
