#!/usr/bin/python3
"""waguard acknowledgement benchmark (run by bench/run.sh after the wrk part).

Starts a private redis-server, the WABA simulator (tests/waba_sim.py, as its own process so
that it does not share this interpreter's lock) and waguard with [upstream] pointing at the
simulator (auth login), then measures:

  1. throughput: the simulator is told the new identity of USERS distinct users, USERS
     user_identity_changed webhooks (On-Premises shape) are posted by a few client threads,
     and the gates are polled (POST /v1/gate, type=template) until every one is open:
     (a) backlog: the simulator is paused (SIGSTOP) while the webhooks arrive and resumed
         after, so the figure is waguard's (and the simulator's) ack rate, not the rate at
         which this script can post; (b) live: acks flow while the webhooks are posted;
  2. latency: SAMPLE further webhooks sent one at a time; after each webhook's 200 the gate
     (GET /v1/gate/+WA_ID?type=template) is polled every POLL_MS until it opens: the time from
     the 200 to the open gate, p50 / p99.

A gate counts as open only when it answers allowed with the webhook's hash acknowledged.

usage: ack_bench.py [--waguard build/waguard] [--users 1000] [--sample 200]
                    [--poll-ms 0.5] [--budget-s 40] [--keep]
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import freeport, metric_sum, wait_for, waguard_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THROUGHPUT_BASE = 15550300000
LATENCY_BASE = 15550400000
LIVE_BASE = 15550500000


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Client:
    """A keep-alive HTTP/1.1 client for one host (reconnects when the server closes)."""

    def __init__(self, port, timeout=10):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, raw
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        status, raw = self.request(method, path, body)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, logdir, **kw):
        log = open(os.path.join(logdir, name + ".log"), "w+b")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)
        p.bench_name = name
        p.bench_log = log
        self.procs.append(p)
        return p

    def stop_all(self):
        """SIGTERM to each process (newest first; each one waited for before the next, so
        waguard stops while Redis and the simulator still answer); returns {name: status}."""
        out = {}
        for p in reversed(self.procs):
            was_running = p.poll() is None
            if was_running:
                p.send_signal(signal.SIGCONT)  # in case it was left paused
            if was_running:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                out[p.bench_name + " (killed after 15 s)"] = p.returncode
            out.setdefault(p.bench_name, p.returncode if was_running else
                           "exited early with %s" % p.returncode)
        return out

    @staticmethod
    def tail(p, n=20):
        p.bench_log.flush()
        p.bench_log.seek(0)
        lines = p.bench_log.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def hash_for(wa_id):
    # Opaque, base64-looking, unique per user and run.
    return "Bk%s%04x=" % (wa_id, os.getpid() & 0xFFFF)


def identity_webhook(wa_id, hash_, msg_id):
    return {"messages": [{
        "from": wa_id, "id": msg_id, "timestamp": str(int(time.time())), "type": "system",
        "system": {"body": "User %s changed their security code." % wa_id, "customer": wa_id,
                   "identity": hash_, "type": "user_identity_changed"}}]}


def is_open(decision, hash_):
    ident = decision.get("identity") if isinstance(decision, dict) else None
    return (decision.get("allowed") is True and isinstance(ident, dict)
            and ident.get("hash") == hash_ and ident.get("acknowledged") is True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="waguard-ackbench.")
        self.procs = Procs()
        self.notes = []

    # ------------------------------------------------------------------ setup
    def start(self):
        a = self.args
        self.rport = freeport()
        self.redis = self.procs.start("redis", [
            "redis-server", "--port", str(self.rport), "--bind", "127.0.0.1", "--dir", self.tmp,
            "--save", "", "--appendonly", "no", "--daemonize", "no"], self.tmp)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.rport), 0.2).close() or True,
                 10, "redis-server")

        password = "ack-bench-%d" % os.getpid()
        with open(os.path.join(self.tmp, "waba_password"), "w") as f:
            f.write(password + "\n")
        self.sport = freeport()
        self.sim_proc = self.procs.start("waba_sim", [
            "/usr/bin/python3", os.path.join(ROOT, "tests", "waba_sim.py"), "--port",
            str(self.sport), "--auth", "login", "--username", "admin", "--password", password],
            self.tmp)
        self.sim = Client(self.sport)
        wait_for(lambda: self.sim.request("GET", "/_sim/health")[0] == 200, 10, "waba_sim")

        self.wport = freeport()
        conf = os.path.join(self.tmp, "waguard.conf")
        with open(conf, "w") as f:
            f.write(waguard_config(self.wport, self.rport, "http://127.0.0.1:%d" % self.sport,
                                   generator="bench/ack_bench.py"))
        self.wg_proc = self.procs.start("waguard", [a.waguard, "--config", conf], self.tmp)
        self.wg = Client(self.wport)
        try:
            wait_for(lambda: self.wg.request("GET", "/readyz")[0] == 200, 15, "waguard /readyz")
        except RuntimeError:
            sys.stderr.write(Procs.tail(self.wg_proc) + "\n")
            raise
        time.sleep(0.5)
        self.rss_idle = rss_kb(self.wg_proc.pid)

    def stop(self):
        status = self.procs.stop_all()
        wg = status.get("waguard")
        if wg is not None and wg != 0:
            sig = " (signal %d)" % -wg if isinstance(wg, int) and wg < 0 else ""
            print("  waguard stopped on SIGTERM: EXIT STATUS %s%s; last log lines:\n%s"
                  % (wg, sig, "\n".join("    " + l for l in
                                        Procs.tail(self.wg_proc, 5).splitlines())))
        elif wg == 0:
            print("  waguard stopped on SIGTERM: exit 0")
        for p in self.procs.procs:
            p.bench_log.close()
        if self.args.keep:
            print("ack_bench: logs kept in %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def set_identities(self, wa_ids):
        now_ms = int(time.time() * 1000)
        for w in wa_ids:
            st, _ = self.sim.request("POST", "/_sim/identity", {
                "wa_id": w, "hash": hash_for(w), "created_timestamp": now_ms,
                "acknowledged": False})
            if st != 200:
                raise RuntimeError("waba_sim /_sim/identity answered %d" % st)

    # ------------------------------------------------------------------ gates
    def open_among(self, client, wa_ids):
        """The subset of wa_ids whose gate is open (batch route; per-user GET as fallback)."""
        if not getattr(self, "no_batch", False):
            st, j = client.json("POST", "/v1/gate", {"type": "template",
                                                     "wa_ids": ["+" + w for w in wa_ids]})
            if st == 200 and isinstance(j, dict) and isinstance(j.get("results"), list) \
                    and len(j["results"]) == len(wa_ids):
                return {w for w, d in zip(wa_ids, j["results"]) if is_open(d, hash_for(w))}
            self.no_batch = True
            self.notes.append("POST /v1/gate answered %d; polled GET /v1/gate/{wa_id} instead" % st)
        out = set()
        for w in wa_ids:
            st, d = client.json("GET", "/v1/gate/+%s?type=template" % w)
            if st == 200 and is_open(d, hash_for(w)):
                out.add(w)
        return out

    # ------------------------------------------------------------------ 1. throughput
    def post_all(self, wa_ids, nthreads=4):
        """POST one identity-change webhook per user from nthreads clients; returns
        (seconds taken, [(wa_id, status, body)] of the answers that were not 200)."""
        errors = []

        def poster(part):
            c = Client(self.wport)
            for w in part:
                st, raw = c.request("POST", "/webhook",
                                    identity_webhook(w, hash_for(w), "ABGGack%s" % w))
                if st != 200:
                    errors.append((w, st, raw[:200]))
            c.close()

        threads = [threading.Thread(target=poster, args=(wa_ids[i::nthreads],))
                   for i in range(nthreads)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0, errors

    def wait_open(self, wa_ids, t0, interval=0.025):
        """Poll until every gate is open (or the budget ends); returns {wa_id: seconds after t0}."""
        poll = Client(self.wport)
        pending = list(wa_ids)
        opened = {}
        deadline = t0 + self.args.budget_s
        while pending and time.monotonic() < deadline:
            for i in range(0, len(pending), 500):
                now_open = self.open_among(poll, pending[i:i + 500])
                now = time.monotonic()
                for w in now_open:
                    opened[w] = now - t0
            pending = [w for w in pending if w not in opened]
            if pending:
                time.sleep(interval)
        poll.close()
        return opened

    @staticmethod
    def rates(opened, n):
        """(all-open seconds, acks/s overall, acks/s between 10 % and 90 % open)."""
        if not opened:
            return float("nan"), 0.0, float("nan")
        times = sorted(opened.values())
        t_all = times[-1]
        steady = float("nan")
        if len(times) >= 10:
            i10, i90 = int(len(times) * 0.1), int(len(times) * 0.9) - 1
            if times[i90] > times[i10]:
                steady = (i90 - i10) / (times[i90] - times[i10])
        return t_all, len(opened) / t_all if t_all > 0 else float("inf"), steady

    def upstream_span(self, wa_ids):
        """(PUT count, seconds from the first to the last answered PUT) for these users."""
        st, j = self.sim.json("GET", "/_sim/calls?method=PUT&path_prefix=/v1/contacts/")
        if st != 200 or not isinstance(j, dict):
            return 0, float("nan")
        want = set("/v1/contacts/%s/identity" % w for w in wa_ids)
        ts = [c["time"] + (c.get("duration_ms") or 0) / 1000.0 for c in j.get("calls", [])
              if c.get("path") in want and c.get("status") == 200]
        if len(ts) < 2:
            return len(ts), float("nan")
        return len(ts), max(ts) - min(ts)

    def throughput(self):
        n = self.args.users
        # (a) backlog: the WABA client is paused (SIGSTOP) while the webhooks arrive, so that
        # every acknowledgement is queued; then it is resumed and the queue drains.
        backlog = [str(THROUGHPUT_BASE + i) for i in range(n)]
        self.set_identities(backlog)
        self.sim.close()
        os.kill(self.sim_proc.pid, signal.SIGSTOP)
        try:
            post_s, errors = self.post_all(backlog)
            closed = min(200, n) - len(self.open_among(Client(self.wport), backlog[:200]))
        finally:
            t_release = time.monotonic()
            os.kill(self.sim_proc.pid, signal.SIGCONT)
        opened = self.wait_open(backlog, t_release)
        t_all, rate, steady = self.rates(opened, n)
        puts, span = self.upstream_span(backlog)
        self.tp = {"users": n, "opened": len(opened), "post_s": post_s, "all_open_s": t_all,
                   "acks_per_s": rate, "steady_per_s": steady, "closed_sample": closed,
                   "puts": puts, "put_span_s": span}
        if errors:
            self.notes.append("backlog: %d webhooks not answered 200, first: %r"
                              % (len(errors), errors[0]))
        # (b) live: the same number of webhooks posted while acknowledgements flow; time from
        # the first post to the last gate open.
        live = [str(LIVE_BASE + i) for i in range(n)]
        self.set_identities(live)
        t0 = time.monotonic()
        holder = {}
        th = threading.Thread(target=lambda: holder.update(r=self.post_all(live)))
        th.start()
        opened = self.wait_open(live, t0)
        th.join()
        post_s, errors = holder.get("r", (float("nan"), []))
        t_all, rate, steady = self.rates(opened, n)
        self.live = {"users": n, "opened": len(opened), "post_s": post_s, "all_open_s": t_all,
                     "acks_per_s": rate}
        if errors:
            self.notes.append("live: %d webhooks not answered 200, first: %r"
                              % (len(errors), errors[0]))

    # ------------------------------------------------------------------ 2. latency
    def latency(self):
        n = self.args.sample
        wa_ids = [str(LATENCY_BASE + i) for i in range(n)]
        self.set_identities(wa_ids)
        c = Client(self.wport)
        poll_s = self.args.poll_ms / 1000.0
        lat = []
        closed_first = 0
        timeouts = 0
        bad = 0
        deadline = time.monotonic() + self.args.budget_s
        for w in wa_ids:
            if time.monotonic() > deadline:
                self.notes.append("latency: stopped after %d of %d samples (time budget)"
                                  % (len(lat), n))
                break
            h = hash_for(w)
            st, _ = c.request("POST", "/webhook", identity_webhook(w, h, "ABGGackL%s" % w))
            t200 = time.monotonic()
            if st != 200:
                bad += 1
                continue
            first = True
            limit = t200 + 10.0
            while True:
                st, d = c.json("GET", "/v1/gate/+%s?type=template" % w)
                now = time.monotonic()
                if st == 200 and is_open(d, h):
                    lat.append(now - t200)
                    break
                if first:
                    closed_first += 1  # the gate was closed when first asked
                first = False
                if now > limit:
                    timeouts += 1
                    break
                time.sleep(poll_s)
        c.close()
        self.lt = {"samples": len(lat), "closed_first": closed_first, "timeouts": timeouts,
                   "webhook_errors": bad,
                   "p50_ms": percentile(lat, 50) * 1000, "p90_ms": percentile(lat, 90) * 1000,
                   "p99_ms": percentile(lat, 99) * 1000,
                   "min_ms": (min(lat) * 1000) if lat else float("nan"),
                   "max_ms": (max(lat) * 1000) if lat else float("nan")}

    # ------------------------------------------------------------------ report
    def report(self):
        st, raw = self.wg.request("GET", "/metrics")
        text = raw.decode("utf-8", "replace") if st == 200 else ""
        outcomes = {o: metric_sum(text, "waguard_ack_attempts_total", outcome=o) or 0.0
                    for o in ("ok", "retry", "reconciled", "failed")}
        st, j = self.sim.json("GET", "/_sim/calls?method=PUT&path_prefix=/v1/contacts/")
        puts = j.get("count") if st == 200 and isinstance(j, dict) else "?"
        st, s = self.sim.json("GET", "/_sim/state")
        logins = s.get("login_count") if isinstance(s, dict) else "?"
        tp, lt = self.tp, self.lt
        print("acknowledgements (waguard ack=auto -> tests/waba_sim.py, auth login, defaults "
              "for max_in_flight/retry)")
        lv = self.live
        print("  throughput, backlog: %d webhooks posted in %.2f s while the WABA client was "
              "paused (%d/%d sampled gates closed); after resuming it, %d/%d gates open in "
              "%.3f s: %.0f acks/s (%.0f acks/s between 10%% and 90%% open; upstream answered "
              "%d PUTs in %.3f s)"
              % (tp["users"], tp["post_s"], tp["closed_sample"], min(200, tp["users"]),
                 tp["opened"], tp["users"], tp["all_open_s"], tp["acks_per_s"],
                 tp["steady_per_s"], tp["puts"], tp["put_span_s"]))
        print("  throughput, live: %d webhooks posted by 4 clients in %.2f s while acks flow; "
              "%d/%d gates open %.3f s after the first post: %.0f acks/s end to end (bounded "
              "by the posting rate when close to it)"
              % (lv["users"], lv["post_s"], lv["opened"], lv["users"], lv["all_open_s"],
                 lv["acks_per_s"]))
        print("  webhook 200 -> gate open (%d sent one at a time, polled every %.1f ms): "
              "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms (min %.2f, max %.2f); still closed at "
              "the first poll %d/%d; timeouts %d"
              % (lt["samples"], self.args.poll_ms, lt["p50_ms"], lt["p90_ms"], lt["p99_ms"],
                 lt["min_ms"], lt["max_ms"], lt["closed_first"], lt["samples"] + lt["timeouts"],
                 lt["timeouts"]))
        print("  upstream: %s identity PUTs received, %s logins; waguard ack attempts: %s"
              % (puts, logins, " ".join("%s=%d" % kv for kv in outcomes.items())))
        print("  waguard RSS (this instance): idle %d kB, after %d kB"
              % (self.rss_idle, rss_kb(self.wg_proc.pid)))
        for n in self.notes:
            print("  note: " + n)
        if self.wg_proc.poll() is not None:
            print("  note: waguard exited with %s; log:\n%s"
                  % (self.wg_proc.returncode, Procs.tail(self.wg_proc)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--waguard", default=os.path.join(ROOT, "build", "waguard"))
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--poll-ms", type=float, default=0.5)
    ap.add_argument("--budget-s", type=float, default=40.0,
                    help="upper bound of each of the two phases, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = ap.parse_args(argv)

    b = Bench(args)
    rc = 0
    try:
        b.start()
        b.throughput()
        b.latency()
        b.report()
    except (RuntimeError, OSError, http.client.HTTPException) as e:
        print("ack_bench: %s" % e, file=sys.stderr)
        for p in b.procs.procs:
            if p.poll() is not None and p.returncode != 0:
                print("---- %s exited %s:\n%s" % (p.bench_name, p.returncode, Procs.tail(p)),
                      file=sys.stderr)
        rc = 1
    finally:
        b.stop()
    return rc


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
