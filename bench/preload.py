#!/usr/bin/python3
"""Helpers for bench/run.sh (standard library only; shares bench/benchlib.py with ack_bench.py).

  preload.py freeport
      print a free TCP port on 127.0.0.1
  preload.py config --port N --redis-port N --upstream URL [--username U] [--max-in-flight N]
                    [--ack auto|manual] [--key-prefix P]
      print the waguard.conf of the benchmark (benchlib.waguard_config)
  preload.py wait URL [SECONDS]
      wait until GET URL answers 200 (exit 1 on timeout)
  preload.py users URL (--pool D | --base N) --count N [--batch 100] [--token T]
      POST On-Premises webhooks with one inbound text message per user of the
      pool (--pool D: benchlib.pool_wa_id(D, 0..count-1), users from several
      countries; --base N: wa_ids N..N+count-1), BATCH messages per body, so that
      the 24 h session window is open for each of them
  preload.py check URL (--pool D | --base N) --count N [--type text]
      GET /v1/gate/INPUT for every user (--pool: benchlib.gate_input, "+" or bare
      digits; --base: "+WA_ID"); print "allowed=A denied=D other=O"
  preload.py sim-identities SIM_URL --base N --count N
      tell the WABA simulator the identity "Bk<wa_id>A=" of each user of the pool
      (the hash bench/webhook.lua sends in its user_identity_changed messages)
  preload.py metric URL NAME...
      print the sum of the samples of each named Prometheus metric at URL
  preload.py cmdstats FILE REQUESTS
      read Redis's INFO commandstats saved in FILE and print, per HTTP request, the time
      Redis spent in commands, the functions (FCALL) and the commands they called
"""
import http.client
import json
import sys
import time
import urllib.parse

from benchlib import freeport, gate_input, metric_sum, pool_wa_id, wait_for, waguard_config


def conn_for(url, timeout=10):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), u


def get_status(url):
    c, u = conn_for(url, timeout=1)
    try:
        c.request("GET", u.path or "/")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def wait(url, seconds=15.0):
    try:
        wait_for(lambda: get_status(url) == 200, seconds, url, interval=0.05)
    except RuntimeError:
        return 1
    return 0


def opt(args, name, default=None):
    if name in args:
        i = args.index(name)
        return args[i + 1]
    return default


def headers(token, json_body=True):
    h = {"Content-Type": "application/json"} if json_body else {}
    if token:
        h["Authorization"] = "Bearer " + token
    return h


def pool_of(args):
    """The wa_ids of the pool that --pool D or --base N names, and how the gate is asked
    for each."""
    count = int(opt(args, "--count"))
    pool = opt(args, "--pool")
    if pool is not None:
        return ([pool_wa_id(pool, i) for i in range(count)],
                [gate_input(pool, i) for i in range(count)])
    base = int(opt(args, "--base"))
    return [str(base + i) for i in range(count)], ["+%d" % (base + i) for i in range(count)]


def users(url, args):
    ids, _ = pool_of(args)
    count = len(ids)
    batch = int(opt(args, "--batch", "100"))
    token = opt(args, "--token")
    c, u = conn_for(url)
    now = int(time.time())
    bad = 0
    for start in range(0, count, batch):
        wa_ids = ids[start:start + batch]
        body = {
            "contacts": [{"profile": {"name": "Gate User " + w}, "wa_id": w} for w in wa_ids],
            "messages": [{"from": w, "id": "ABGGpreload%s%d" % (w, now), "timestamp": str(now),
                          "text": {"body": "hi"}, "type": "text"} for w in wa_ids],
        }
        c.request("POST", u.path, body=json.dumps(body), headers=headers(token))
        r = c.getresponse()
        r.read()
        if r.status != 200:
            bad += 1
            sys.stderr.write("preload: %s answered %d\n" % (url, r.status))
    c.close()
    return 1 if bad else 0


def check(url, args):
    _, inputs = pool_of(args)
    mtype = opt(args, "--type", "text")
    token = opt(args, "--token")
    c, _ = conn_for(url)
    counts = {"allowed": 0, "denied": 0, "other": 0}
    reasons = {}
    for inp in inputs:
        c.request("GET", "/v1/gate/%s?type=%s" % (inp, mtype), headers=headers(token, False))
        r = c.getresponse()
        data = r.read()
        if r.status == 200:
            counts["allowed"] += 1
        elif r.status == 423:
            counts["denied"] += 1
            try:
                for reason in json.loads(data).get("reasons", []):
                    reasons[reason] = reasons.get(reason, 0) + 1
            except ValueError:
                pass
        else:
            counts["other"] += 1
    c.close()
    extra = " reasons=" + ",".join("%s:%d" % kv for kv in sorted(reasons.items())) if reasons else ""
    print("allowed=%(allowed)d denied=%(denied)d other=%(other)d" % counts + extra)
    return 0


def sim_identities(url, args):
    base = int(opt(args, "--base"))
    count = int(opt(args, "--count"))
    c, _ = conn_for(url)
    now_ms = int(time.time() * 1000)
    for i in range(count):
        w = base + i
        body = {"wa_id": str(w), "hash": "Bk%dA=" % w, "created_timestamp": now_ms,
                "acknowledged": False}
        c.request("POST", "/_sim/identity", body=json.dumps(body), headers=headers(None))
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.stderr.write("sim-identities: %s answered %d\n" % (url, r.status))
            return 1
    c.close()
    return 0


def metric(url, names):
    c, u = conn_for(url)
    c.request("GET", u.path or "/metrics")
    r = c.getresponse()
    text = r.read().decode("utf-8", "replace")
    c.close()
    totals = [metric_sum(text, name) for name in names]
    print(" ".join("-" if t is None else ("%g" % t) for t in totals))
    return 0


def cmdstats(path, requests):
    stats = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("cmdstat_"):
                continue
            name, _, rest = line[len("cmdstat_"):].partition(":")
            kv = dict(x.split("=", 1) for x in rest.split(",") if "=" in x)
            if name.startswith("config") or name in ("info", "ping", "zcard"):
                continue    # the benchmark's own calls
            stats[name] = (int(kv.get("calls", 0)), int(kv.get("usec", 0)))
    if requests <= 0:
        print("-")
        return 0
    # below one call in a hundred requests: waguard's timers, not the requests
    stats = {n: v for n, v in stats.items() if v[0] / requests >= 0.01}
    # containers: a function (or script) and a transaction (EXEC: the gate's plain reads);
    # the commands they run are counted both on their own and inside the container's time
    scripts = {n: v for n, v in stats.items() if n in ("evalsha", "eval", "fcall", "exec")}
    plain = {n: v for n, v in stats.items() if n not in scripts}
    total = sum(v[1] for v in scripts.values()) if scripts else sum(v[1] for v in plain.values())
    parts = ["%.1f us/req in Redis commands" % (total / requests)]
    for n, (calls, usec) in sorted(scripts.items()):
        parts.append("%s %.2f/req %.1f us/req" % (n, calls / requests, usec / requests))
    inner = sorted(plain.items(), key=lambda kv: -kv[1][1])
    label = "the commands in them: " if scripts else ""
    parts.append(label + ", ".join("%s %.2f/req %.1f us" % (n, c / requests, u / requests)
                                   for n, (c, u) in inner[:8]))
    print("; ".join(parts))
    return 0


def config(args):
    sys.stdout.write(waguard_config(int(opt(args, "--port")), int(opt(args, "--redis-port")),
                                    opt(args, "--upstream"), username=opt(args, "--username", "admin"),
                                    generator="bench/run.sh",
                                    max_in_flight=int(opt(args, "--max-in-flight", "0")) or None,
                                    ack=opt(args, "--ack", "auto"), key_prefix=opt(args, "--key-prefix", "waguard")))
    return 0


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport":
        print(freeport())
        return 0
    if cmd == "config":
        return config(args)
    if cmd == "wait":
        return wait(args[0], float(args[1]) if len(args) > 1 else 15.0)
    if cmd == "users":
        return users(args[0], args[1:])
    if cmd == "check":
        return check(args[0], args[1:])
    if cmd == "sim-identities":
        return sim_identities(args[0], args[1:])
    if cmd == "metric":
        return metric(args[0], args[1:])
    if cmd == "cmdstats":
        return cmdstats(args[0], float(args[1]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
