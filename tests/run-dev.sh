#!/usr/bin/env bash
# `make run`: a private Redis on a unix socket under ./.run/, the WABA client
# simulator on 127.0.0.1:9090 and waguard in the foreground with
# deploy/waguard.dev.conf on 127.0.0.1:8080.  Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run
printf 'secret\n' > .run/waba_password
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

redis-server --port 0 --unixsocket "$PWD/.run/redis.sock" --unixsocketperm 700 \
    --dir "$PWD/.run" --save '' --appendonly no --logfile "$PWD/.run/redis.log" &
pids+=($!)
/usr/bin/python3 tests/waba_sim.py --host 127.0.0.1 --port 9090 --auth login \
    --username admin --password secret > .run/waba_sim.log 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    [ -S .run/redis.sock ] && grep -q listening .run/waba_sim.log 2>/dev/null && break
    sleep 0.1
done
[ -S .run/redis.sock ] || { echo "redis-server did not start: see .run/redis.log" >&2; exit 1; }
grep -q listening .run/waba_sim.log || { echo "the WABA simulator did not start: see .run/waba_sim.log" >&2; exit 1; }
echo "make run: Redis on .run/redis.sock, WABA simulator on http://127.0.0.1:9090, waguard on http://127.0.0.1:8080"
build/waguard --config deploy/waguard.dev.conf &
pids+=($!)
wait "${pids[-1]}"
