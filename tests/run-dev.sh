#!/usr/bin/env bash
# `make run` (API=cloud, the default) or `make run API=onprem`: a private Redis on a unix
# socket under ./.run/, the WABA simulator on 127.0.0.1:9090 and waguard in the foreground
# on 127.0.0.1:8080 (deploy/waguard.dev.conf, or waguard.dev-onprem.conf).  Ctrl-C stops
# all three.
#
# Cloud: the simulator plays Meta's Graph API for two business numbers, takes waguard's
# bearer token, and signs the webhooks it posts to waguard with the app secret
# (POST localhost:9090/_sim/cloud_event).  On-Premises: it plays the /v1 client with a login.
# Both: an admin token for the console and waguardctl, written once into .run/admin_tokens
# and printed below.
set -euo pipefail
cd "$(dirname "$0")/.."
api=${1:-cloud}
case "$api" in
    cloud) conf=deploy/waguard.dev.conf ;;
    onprem) conf=deploy/waguard.dev-onprem.conf ;;
    *) echo "make run: API must be cloud or onprem, not '$api'" >&2; exit 2 ;;
esac
mkdir -p .run
chmod 700 .run
umask 077
printf 'secret\n' > .run/waba_password
printf 'dev-graph-token\n' > .run/waba_token
printf 'dev-app-secret\n' > .run/app_secret
printf 'dev-verify-token\n' > .run/verify_token
[ -s .run/admin_tokens ] || printf 'dev:%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > .run/admin_tokens
admin_token=$(sed -n '1s/^dev://p' .run/admin_tokens)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

rm -f .run/redis.sock .run/waba_sim.log
redis-server --port 0 --unixsocket "$PWD/.run/redis.sock" --unixsocketperm 700 \
    --dir "$PWD/.run" --save '' --appendonly no --logfile "$PWD/.run/redis.log" &
pids+=($!)
if [ "$api" = cloud ]; then
    /usr/bin/python3 tests/waba_sim.py --host 127.0.0.1 --port 9090 --auth bearer \
        --bearer-token dev-graph-token > .run/waba_sim.log 2>&1 &
else
    /usr/bin/python3 tests/waba_sim.py --host 127.0.0.1 --port 9090 --auth login \
        --username admin --password secret > .run/waba_sim.log 2>&1 &
fi
pids+=($!)

for _ in $(seq 100); do
    [ -S .run/redis.sock ] && grep -q listening .run/waba_sim.log 2>/dev/null && break
    sleep 0.1
done
[ -S .run/redis.sock ] || { echo "redis-server did not start: see .run/redis.log" >&2; exit 1; }
grep -q listening .run/waba_sim.log || { echo "the WABA simulator did not start (is port 9090 taken?): see .run/waba_sim.log" >&2; exit 1; }
if [ "$api" = cloud ]; then
    # Where Meta would post: waguard's webhook, signed with the app secret.
    curl -sf -X POST localhost:9090/_sim/config -d '{"app_secret":"dev-app-secret",
        "cloud_webhook_url":"http://127.0.0.1:8080/webhook",
        "default_phone_number_id":"106540352242922"}' > /dev/null
else
    curl -sf -X POST localhost:9090/_sim/config -d '{"show_security_notifications":true}' > /dev/null
fi
cat <<MSG
make run ($api): Redis on .run/redis.sock, the WABA simulator on http://127.0.0.1:9090,
waguard on http://127.0.0.1:8080 ($conf).
  console:      http://127.0.0.1:8080/console/
  admin token:  $admin_token   (console sign-in; also in .run/admin_tokens)
  waguardctl:   build/waguardctl --config $conf pending
MSG
build/waguard --config "$conf" &
pids+=($!)
wait "${pids[-1]}"
