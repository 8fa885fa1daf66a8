#!/usr/bin/python3
"""Redis memory and Redis time per user and per webhook of each kind (issue 12), for make bench.

  bench/memory.py [--waguard PATH] [--users 10000] [--webhooks 20000] [--threads 8]

Starts its own redis-server and waguard (ack = manual: no upstream), then sends, one item
per body and --threads bodies at a time:
  users      one inbound text message from each of --users new users
  status     --webhooks statuses (sent, delivered, read) of new message ids to known users:
             the first statuses those users get
  status+    as many again: statuses once every user has had some
  inbound    --webhooks inbound messages from known users
  identity   one user_identity_changed for each of --users / 5 known users
  retry      --webhooks / 4 status bodies sent again (the WABA client's retries)
After each phase: INFO memory, INFO commandstats and MEMORY USAGE … SAMPLES 0 of the
capped streams (events, audit, deadletter).  The figure that matters, "outside the
streams", is the change of used_memory less the client buffers (mem_clients_normal):
what the keyspace (keys, their values, the main dictionary and its expiry table) gained.
The streams are capped, so they are kept out of it by running with the smallest
[redis] events_maxlen (100: the events stream stays between 100 and 200 entries, a
few kilobytes that come and go, and its change is subtracted too); with ack = manual
nothing is audited and nothing here is a dead letter.  Their own cost per entry
(MEMORY USAGE / XLEN) is printed apart: multiply by the caps for their share.  Redis time is the change of
the usec of FCALL (and EVALSHA, EVAL) in INFO commandstats, per webhook.
Standard library only; prints a table (also appended to build/bench-results.txt by run.sh).
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import freeport, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = 15550300000
STREAMS = ("events", "audit", "deadletter")


def opt(name, default):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


class Redis:
    def __init__(self, port):
        self.port = port

    def cmd(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=60)
        return r.stdout.strip()

    def info(self, section):
        out = {}
        for line in self.cmd("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def snapshot(self):
        mem = self.info("memory")
        streams = 0
        for s in STREAMS:
            v = self.cmd("MEMORY", "USAGE", "waguard:" + s, "SAMPLES", "0")
            streams += int(v) if v.isdigit() else 0
        usec = 0
        for k, v in self.info("commandstats").items():
            if k in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval"):
                usec += int(dict(kv.split("=") for kv in v.split(","))["usec"])
        keys = int(self.cmd("DBSIZE") or 0)
        cpu = self.info("cpu")
        return {"used": int(mem["used_memory"]), "clients": int(mem.get("mem_clients_normal", 0)),
                "streams": streams, "usec": usec, "keys": keys,
                "cpu_us": 1e6 * (float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"]))}


def send_all(port, bodies, threads):
    """POSTs every body (a list of dicts) to /webhook over `threads` keep-alive connections;
    returns (answers by status, duplicates counted by waguard)."""
    lock = threading.Lock()
    it = iter(bodies)
    codes, dups = {}, [0]

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                b = next(it, None)
            if b is None:
                break
            c.request("POST", "/webhook", json.dumps(b), {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            with lock:
                codes[r.status] = codes.get(r.status, 0) + 1
                if r.status == 200:
                    dups[0] += json.loads(data).get("duplicates", 0)
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes, dups[0]


def inbound(w, mid, ts):
    return {"contacts": [{"profile": {"name": "Bench " + w}, "wa_id": w}],
            "messages": [{"from": w, "id": mid, "timestamp": str(ts), "type": "text",
                          "text": {"body": "hello"}}]}


def status(w, mid, st, ts):
    return {"statuses": [{"id": mid, "recipient_id": w, "status": st, "timestamp": str(ts)}]}


def identity(w, h, ts, mid):
    return {"messages": [{"from": w, "id": mid, "timestamp": str(ts), "type": "system",
                          "system": {"body": "identity changed", "customer": w,
                                     "type": "user_identity_changed", "identity": h}}]}


def mid(kind, i):
    # the shape of an On-Premises message id (wamid-like, 28 characters)
    return "gBEGkZ%s%020d" % (kind, i)


def main():
    waguard = opt("--waguard", os.path.join(ROOT, "build", "waguard"))
    n_users = int(opt("--users", "10000"))
    n_hooks = int(opt("--webhooks", "20000"))
    threads = int(opt("--threads", "8"))
    tmp = tempfile.mkdtemp(prefix="waguard-mem.")
    procs = []
    try:
        rport, wport = freeport(), freeport()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(tmp, "redis.log")]))
        r = Redis(rport)
        wait_for(lambda: r.cmd("PING") == "PONG", 10, "redis-server")
        conf = os.path.join(tmp, "waguard.conf")
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:%d\n[redis]\nurl = redis://127.0.0.1:%d/0\nevents_maxlen = 100\n"
                    "[upstream]\nurl = http://127.0.0.1:1\nauth = none\n[webhook]\ntoken_file =\n"
                    "hmac_secret_file =\n[api]\ntokens_file =\nadmin_tokens_file =\n"
                    "[identity]\nack = manual\n[log]\nlevel = warning\n" % (wport, rport))
        log = open(os.path.join(tmp, "waguard.log"), "w")
        procs.append(subprocess.Popen([waguard, "--config", conf], stdout=log, stderr=log))

        def ready():
            c = http.client.HTTPConnection("127.0.0.1", wport, timeout=1)
            c.request("GET", "/readyz")
            return c.getresponse().status == 200
        wait_for(ready, 15, "waguard /readyz")

        now = int(time.time()) - 3600
        users = [str(BASE + i) for i in range(n_users)]
        sts = ("sent", "delivered", "read")
        phases = [
            ("users", "new user, inbound", [inbound(w, mid("U", i), now) for i, w in enumerate(users)]),
            ("status", "status, first to the user",
             [status(users[i % n_users], mid("S", i // 3), sts[i % 3], now + 1) for i in range(n_hooks)]),
            ("status+", "status, known user",
             [status(users[i % n_users], mid("T", i // 3), sts[i % 3], now + 2) for i in range(n_hooks)]),
            ("inbound", "inbound, known user",
             [inbound(users[i % n_users], mid("I", i), now + 3 + i // n_users) for i in range(n_hooks)]),
            ("identity", "identity change",
             [identity(users[i], "Id%07d=" % i, now + 10, mid("D", i)) for i in range(n_users // 5)]),
            ("retry", "status sent again",
             [status(users[i % n_users], mid("T", i // 3), sts[i % 3], now + 2) for i in range(n_hooks // 4)]),
        ]
        rows = []
        before = r.snapshot()
        for name, what, bodies in phases:
            t0 = time.monotonic()
            codes, dups = send_all(wport, bodies, threads)
            secs = time.monotonic() - t0
            time.sleep(0.3)
            after = r.snapshot()
            n = len(bodies)
            outside = (after["used"] - after["streams"] - after["clients"]) - \
                      (before["used"] - before["streams"] - before["clients"])
            rows.append((name, what, n, codes.get(200, 0), dups, outside / n,
                         (after["streams"] - before["streams"]) / n, (after["usec"] - before["usec"]) / n,
                         after["keys"] - before["keys"], n / secs, (after["cpu_us"] - before["cpu_us"]) / n))
            before = after
        ver = subprocess.run([waguard, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        print("Redis memory per webhook (bench/memory.py; %s; %d users; used_memory less the client "
              "buffers, events_maxlen 100)" % (ver, n_users))
        fmt = "%-9s %-27s %7s %7s %6s %10s %10s %9s %9s %7s %8s"
        print(fmt % ("phase", "webhook", "bodies", "200", "dups", "B outside", "B streams", "script us",
                     "Redis us", "keys+", "bodies/s"))
        for row in rows:
            print(fmt % (row[0], row[1], row[2], row[3], row[4], "%.1f" % row[5], "%.1f" % row[6],
                         "%.1f" % row[7], "%.1f" % row[10], row[8], "%.0f" % row[9]))
        print("(B outside: bytes per webhook outside the capped streams; B streams: what the streams (capped "
              "at 100 here) changed by; script us: Redis time in the functions (FCALL) per webhook (INFO commandstats); Redis us: CPU of "
              "Redis's main thread per webhook, network included (INFO cpu); %d bodies in flight)" % threads)
        xlen = int(r.cmd("XLEN", "waguard:events") or 0)
        xmem = r.cmd("MEMORY", "USAGE", "waguard:events", "SAMPLES", "0")
        if xlen and xmem.isdigit():
            print("events stream: %.0f bytes an entry (%s bytes for %d entries): about %.1f MB at the "
                  "default events_maxlen of 100,000" % (int(xmem) / xlen, xmem, xlen, int(xmem) / xlen * 0.1))
        total = r.snapshot()
        per_user = (total["used"] - total["streams"] - total["clients"]) / n_users
        print("keyspace after all phases: %d keys, %.0f bytes outside the streams per user "
              "(%d users, %d of them with an identity); streams %d bytes"
              % (total["keys"], per_user, n_users, n_users // 5, total["streams"]))
        w0, w1 = users[0], users[-1]
        parts = []
        for label, key in (("user hash", "user:{%s}" % w0), ("duplicate rings", "seen:{%s}" % w0),
                           ("identity history", "user:{%s}:history" % w0)):
            v = r.cmd("MEMORY", "USAGE", "waguard:" + key, "SAMPLES", "0")
            parts.append("%s %s B" % (label, v or "-"))
        print("one user with an identity (%s): %s; without (%s): user hash %s B, rings %s B (MEMORY USAGE)"
              % (w0, ", ".join(parts), w1, r.cmd("MEMORY", "USAGE", "waguard:user:{%s}" % w1, "SAMPLES", "0") or "-",
                 r.cmd("MEMORY", "USAGE", "waguard:seen:{%s}" % w1, "SAMPLES", "0") or "-"))
        if any(row[3] != row[2] for row in rows):
            print("NOTE: some webhooks were not answered 200; see %s" % tmp)
            return 1
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
