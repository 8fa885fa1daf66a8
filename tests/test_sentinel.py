"""Redis Sentinel (issue 12): a primary, a replica and three sentinels (Debian's redis-sentinel)
on loopback ports, and two daemons that find the primary through the sentinels:
A with [redis] min_replicas = 1, B with min_replicas = 0.

  * configuration: sentinels without master_name, and the reverse, stop the start;
  * WAIT: a frozen replica (SIGSTOP) makes A answer 503 (NOREPLICAS) while B answers 200;
    the body sent again once the replica is back is answered 200 as a duplicate;
  * READONLY: the roles swapped by hand (and the sentinels told with REMOVE/MONITOR, which
    publishes no +switch-master): the next write answers READONLY and both daemons
    find the new primary by themselves;
  * failover: under a steady stream of identity changes (users of several countries) and
    their acknowledgements (the WABA simulator knows each hash) the primary is killed with
    SIGKILL; the sentinels promote the replica, the daemons follow, every webhook A
    answered 200 is on the new primary (B's losses are reported), and no gate is open on
    the new primary for a hash the WABA client has not acknowledged.

The whole module is one scenario (the processes are shared, the parts run in order)."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from daemon import (ACK_OVERRIDES, NO_REDIS_URL, WABA_PASSWORD, WABA_USER, RedisServer, default_config,
                    merge_config)
from helpers import WORLD, free_port, identity_change, wait_for, world_wa_id

SENTINEL_BIN = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
MASTER = "wgmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
T0 = 1700000000

pytestmark = pytest.mark.skipif(not os.path.exists(SENTINEL_BIN),
                                reason="redis-sentinel is not installed (make deps)")


class Sentinel:
    """One redis-sentinel on a loopback port, with its own (rewritable) config file."""

    def __init__(self, master_port):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="wgt-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\n"
                    "logfile %s/sentinel.log\n" % (self.port, self.dir, self.dir))
            f.write(monitor_lines(master_port))
        self.proc = subprocess.Popen([SENTINEL_BIN, self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        self.client = RedisServer(port=self.port, dir=self.dir).client

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "sentinel.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def monitor_lines(port):
    return ("sentinel monitor %s 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds %s %d\n"
            "sentinel failover-timeout %s %d\n"
            "sentinel parallel-syncs %s 1\n"
            % (MASTER, port, MASTER, DOWN_AFTER_MS, MASTER, FAILOVER_TIMEOUT_MS, MASTER))


def make_replica(replica, primary):
    replica.client().replicaof("127.0.0.1", primary.port)
    wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up", 10,
             "replica of %d in sync" % primary.port)


def sentinels_settled(sentinels, primary_port):
    """Every sentinel names primary_port, knows the other two and one replica."""
    for s in sentinels:
        c = s.client()
        addr = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
        assert addr and int(addr[1]) == primary_port, addr
        assert len(c.execute_command("SENTINEL", "sentinels", MASTER)) == 2
        reps = c.execute_command("SENTINEL", "replicas", MASTER)
        assert len(reps) == 1 and "s_down" not in str(reps[0]), reps
    return True


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    from daemon import Daemons
    r1, r2 = RedisServer().start(), RedisServer().start()
    for r in (r1, r2):                     # a replica's full sync starts at once
        r.client().config_set("repl-diskless-sync-delay", 0)
    make_replica(r2, r1)
    sentinels = [Sentinel(r1.port) for _ in range(3)]
    daemons = Daemons(tmp_path_factory.mktemp("sentinel"))
    from waba_sim import WabaSim
    sim = WabaSim(auth="login", username=WABA_USER, password=WABA_PASSWORD).start()
    env = {"r1": r1, "r2": r2, "sentinels": sentinels, "daemons": daemons, "sim": sim}
    try:
        wait_for(lambda: sentinels_settled(sentinels, r1.port), 20, "the sentinels know each other",
                 diag=lambda: sentinels[0].log_text())
        for name, n in (("A", 1), ("B", 0)):
            port = free_port()
            cfg = default_config(port, NO_REDIS_URL, sim.url)   # the url's address is not used
            merge_config(cfg, ACK_OVERRIDES)
            merge_config(cfg, {"redis": {
                "sentinels": ",".join("127.0.0.1:%d" % s.port for s in sentinels),
                "master_name": MASTER, "min_replicas": str(n), "timeout_ms": "1000"},
                "log": {"level": "info"}})
            env[name] = daemons.start_daemon(cfg, port=port)
        yield env
    finally:
        bad = daemons.cleanup()
        if request.session.testsfailed:
            daemons.dump_logs("sentinel")
            for s in sentinels:
                print("----- sentinel %d -----\n%s" % (s.port, s.log_text()))
        for s in sentinels:
            s.cleanup()
        sim.stop()
        r1.cleanup()
        r2.cleanup()
        assert not bad, bad


def user_hash(redis, w):
    return redis.client().hget("waguard:user:{%s}" % w, "id_hash")


def test_config_needs_both_keys(tmp_path):
    from daemon import WAGUARD_BIN, render_config
    for redis_keys, needle in (({"sentinels": "127.0.0.1:26379"}, "master_name"),
                               ({"master_name": "x"}, "needs [redis] sentinels"),
                               ({"sentinels": "127.0.0.1", "master_name": "x"}, "not host:port")):
        cfg = default_config(free_port(), NO_REDIS_URL)
        merge_config(cfg, {"redis": redis_keys})
        p = tmp_path / "w.conf"
        p.write_text(render_config(cfg))
        for n in ("api_tokens", "admin_tokens", "webhook_token", "verify_token"):
            (tmp_path / n).write_text("x:tok-%s\n" % n if "tokens" in n else "tok\n")
        r = subprocess.run([str(WAGUARD_BIN), "--config", str(p), "--check-config"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and needle in r.stderr, (redis_keys, r.stderr)


def test_found_through_the_sentinels(cluster):
    a, b, r1 = cluster["A"], cluster["B"], cluster["r1"]
    for d in (a, b):
        d.wait_log("connected to Redis at 127.0.0.1:%d" % r1.port)
        d.wait_log("watching +switch-master")
        w = world_wa_id("IN")
        assert d.webhook(identity_change(w, "FOUND=", T0)).status_code == 200
        assert user_hash(r1, w) == "FOUND="


def test_min_replicas_waits_for_the_replica(cluster):
    a, b, r1, r2 = cluster["A"], cluster["B"], cluster["r1"], cluster["r2"]
    wa, wb = world_wa_id("BR"), world_wa_id("BR")
    body_a = identity_change(wa, "WAIT=", T0)
    os.kill(r2.proc.pid, signal.SIGSTOP)
    try:
        ra = a.webhook(body_a)
        rb = b.webhook(identity_change(wb, "WAIT=", T0))
    finally:
        os.kill(r2.proc.pid, signal.SIGCONT)
    # A: the write is on the primary but no replica confirmed it: not answered 200.
    assert ra.status_code == 503 and "NOREPLICAS" in ra.text, ra.text
    assert rb.status_code == 200, rb.text
    # The WABA client sends it again: recognised, answered 200 as a duplicate.
    def again():
        r = a.webhook(body_a)
        assert r.status_code == 200, r.text
        return r.json()
    j = wait_for(again, 10, "A's retry answered 200")
    assert j["duplicates"] == 1, j
    assert user_hash(r1, wa) == "WAIT="


def test_readonly_sends_to_the_new_primary(cluster):
    a, b, r1, r2, sentinels = cluster["A"], cluster["B"], cluster["r1"], cluster["r2"], cluster["sentinels"]
    marks = {d: d.log_size() for d in (a, b)}
    # Swap the roles by hand: r2 primary, r1 its replica; the sentinels are told without a
    # +switch-master (REMOVE then MONITOR), so only the READONLY answer can move the daemons.
    r2.client().replicaof("NO", "ONE")
    make_replica(r1, r2)
    for s in sentinels:
        c = s.client()
        c.execute_command("SENTINEL", "REMOVE", MASTER)
        c.execute_command("SENTINEL", "MONITOR", MASTER, "127.0.0.1", r2.port, 2)
        for k, v in (("down-after-milliseconds", DOWN_AFTER_MS), ("failover-timeout", FAILOVER_TIMEOUT_MS)):
            c.execute_command("SENTINEL", "SET", MASTER, k, v)
    for d in (a, b):
        w = world_wa_id("DE")
        def moved():
            r = d.webhook(identity_change(w, "RO=", T0))
            assert r.status_code == 200, r.text
            return True
        wait_for(moved, 10, "%s writes again after READONLY" % d.name)
        assert user_hash(r2, w) == "RO="
        d.wait_log("READONLY", start=marks[d])
        d.wait_log("connected to Redis at 127.0.0.1:%d" % r2.port, start=marks[d])
    wait_for(lambda: sentinels_settled(sentinels, r2.port), 20, "the sentinels know each other again",
             diag=lambda: sentinels[0].log_text())


class Stream:
    """A steady stream (at most RATE a second) of identity changes to one daemon, each for a
    new user (world_wa_id numbers repeat after 10,000: a repeat is skipped)."""
    RATE = 150
    used = set()

    def __init__(self, daemon, tag, sim):
        self.daemon, self.tag, self.sim = daemon, tag, sim
        self.ok = []            # (wa_id, hash, sent at, answered at)
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        countries = sorted(WORLD)
        i = 0
        while not self.stop.is_set():
            i += 1
            w = world_wa_id(countries[i % len(countries)])
            if w in Stream.used:
                continue
            Stream.used.add(w)
            h = "%s%05d=" % (self.tag, i)
            self.sim.set_identity(w, h, created_timestamp=T0 + i)
            sent = time.monotonic()
            try:
                r = self.daemon.webhook(identity_change(w, h, T0 + i))
                code = r.status_code
            except Exception:
                code = 0
            if code == 200:
                self.ok.append((w, h, sent, time.monotonic()))
                time.sleep(max(0.0, 1.0 / self.RATE - (time.monotonic() - sent)))
            else:
                self.failed += 1
                time.sleep(0.02)

    def first_ok_sent_after(self, t):
        """When the first request sent after t was answered 200 (None: none yet)."""
        return next((at for _, _, sent, at in self.ok if sent > t), None)


def test_failover_under_load(cluster):
    a, b, r1, r2, sentinels = cluster["A"], cluster["B"], cluster["r1"], cluster["r2"], cluster["sentinels"]
    streams = [Stream(a, "A", cluster["sim"]), Stream(b, "B", cluster["sim"])]
    for s in streams:
        s.thread.start()
    try:
        wait_for(lambda: all(len(s.ok) >= 150 for s in streams), 10, "webhooks flowing")
        t_kill = time.monotonic()
        r2.stop(kill=True)                         # the primary, SIGKILL
        wait_for(lambda: int(sentinels[0].client().execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER)[1]) == r1.port,
            DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000 + 10, "the sentinels promote the replica",
            diag=lambda: sentinels[0].log_text())
        t_promoted = time.monotonic()
        # B needs only the primary: it follows within a few seconds of the promotion.
        wait_for(lambda: streams[1].first_ok_sent_after(t_kill) is not None, 10, "B writes to the new primary")
        # A needs a replica too: the old primary comes back as one (as its config would say).
        r2.start()
        r2.client().config_set("repl-diskless-sync-delay", 0)
        make_replica(r2, r1)
        wait_for(lambda: streams[0].first_ok_sent_after(t_kill) is not None, 10, "A writes again")
        wait_for(lambda: all(len([x for x in s.ok if x[2] > t_promoted]) >= 10 for s in streams), 10,
                 "both streams steady again")
    finally:
        for s in streams:
            s.stop.set()
        for s in streams:
            s.thread.join(10)
    promoted = t_promoted - t_kill
    follow_b = streams[1].first_ok_sent_after(t_kill) - t_kill
    follow_a = streams[0].first_ok_sent_after(t_kill) - t_kill
    new = r1.client()
    lost = {}
    for s in streams:
        pipe = new.pipeline(transaction=False)
        for w, _, _, _ in s.ok:
            pipe.hget("waguard:user:{%s}" % w, "id_hash")
        got = pipe.execute()
        lost[s.tag] = [(w, h) for (w, h, _, _), g in zip(s.ok, got) if g != h]
    print("\nfailover: promoted %.1f s after the kill; first 200 to a webhook sent after the kill: "
          "B %.1f s, A %.1f s (A waits for the old primary to come back as a replica); answered "
          "200: A %d, B %d; lost: A %d (min_replicas 1), B %d (min_replicas 0)"
          % (promoted, follow_b, follow_a, len(streams[0].ok), len(streams[1].ok),
             len(lost["A"]), len(lost["B"])))
    for s in streams:
        lat = sorted(at - sent for _, _, sent, at in s.ok)
        print("stream %s: %d answered 200 (median %.1f ms), %d not" % (s.tag, len(lat), 1000 * lat[len(lat) // 2], s.failed))
    # The promise: a gate open on the new primary is open for the hash the WABA client has
    # acknowledged (an acknowledgement lost with the old primary is only done again).
    sim, opened = cluster["sim"], 0
    for s in streams:
        for w, h, _, _ in s.ok:
            v = new.hmget("waguard:user:{%s}" % w, "id_hash", "id_ack")
            if v[1] == "1":
                opened += 1
                got = sim.get_identity(w)
                assert v[0] == h and got["hash"] == h and got["acknowledged"] is True, (w, v, got)
    print("gates open on the new primary: %d, each for a hash the WABA client acknowledged" % opened)
    assert opened > 0
    assert lost["A"] == [], "min_replicas = 1 lost webhooks answered 200: %r" % lost["A"][:5]
    # waguard's own share of the outage: a few seconds beyond the sentinels' failover.
    assert follow_b < promoted + 5, (follow_b, promoted)
    for d in (a, b):
        d.wait_log("connected to Redis at 127.0.0.1:%d" % r1.port)
