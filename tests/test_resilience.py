"""Resilience of the running daemon (issue 8, items 5 to 7), through the real build/waguard:

  * a reload builds everything, then swaps: it cannot remove authentication from a public
    listener, a bad [upstream] ca_file is refused by --check-config, at start (exit 78) and on
    reload, and a refusal keeps the running configuration whole and is counted;
  * a Redis that cannot be used is not used: a database index Redis refuses (SELECT), a Redis
    that accepts and never answers, a Redis paused while connected ([redis] timeout_ms);
  * a bounded upstream: queue_max, timeout_ms counted from enqueue, failed logins back off,
    and two instances never both wait on a PUT of one user's identity (the simulator's record
    of every call, with its time and the instance's login token, is the evidence).

Users come from several countries (helpers.WORLD).  Timings are small: [redis] timeout_ms =
500, [upstream] timeout_ms = 500 or 1500."""
import datetime
import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from daemon import (ADMIN_TOKEN, API_TOKEN, API_TOKEN_NEW, DEFAULT_FILES, NO_REDIS_URL, WAGUARD_BIN,
                    clean_env, default_config, merge_config, render_config)
from helpers import (assert_error_body, check_gate_response, free_port, identity_change, inbound_text,
                     now_s, wait_for, world_wa_id)
from waba_sim import make_test_ca

EX_CONFIG = 78
REDIS_TIMEOUT_MS = 500


# --------------------------------------------------------------------------- helpers

def reloads(wg, result):
    return wg.metric("waguard_config_reloads_total", result=result)


def readyz(wg):
    return requests.get(wg.url + "/readyz", timeout=5)


def timed(fn, *a, **kw):
    """(answer, seconds it took)."""
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def store_unavailable(r, w=None):
    """A gate answer refused for store_unavailable (fail = closed); returns the decision."""
    assert r.status_code == 423, (r.status_code, r.text)
    d = check_gate_response(r, w)
    assert d["allowed"] is False and "store_unavailable" in d["reasons"], d
    return d


def not_a_certificate(tmp_path):
    p = tmp_path / "not-a-ca.pem"
    p.write_text("-----BEGIN NONSENSE-----\nthis is not a certificate\n-----END NONSENSE-----\n")
    return str(p)


def identity_puts(sim, w=None):
    return [c for c in sim.calls_matching(method="PUT", path_prefix="/v1/contacts/")
            if c["path"].endswith("/identity") and (w is None or c["path"].split("/")[3] == w)]


def logins(sim):
    return sim.calls_matching(method="POST", path="/v1/users/login")


def overlapping(calls):
    """Pairs (a, b) of simulator calls where b arrived while a was still being answered."""
    calls = sorted(calls, key=lambda c: c["time"])
    out = []
    for i, a in enumerate(calls):
        assert a["duration_ms"] is not None, a
        end = a["time"] + a["duration_ms"] / 1000.0
        out += [(a, b) for b in calls[i + 1:] if b["time"] < end]
    return out


class HungRedis:
    """A TCP server that accepts connections, reads whatever is sent and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.accepted = 0
        self.received = 0
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.received += len(data)

    def close(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------- 5: reloads

def test_reload_cannot_remove_authentication_from_a_public_listener(waguard_factory):
    port = free_port()
    wg = waguard_factory(listen="0.0.0.0:%d" % port, port=port)
    w = world_wa_id("GB")
    failed0, ok0 = reloads(wg, "failed"), reloads(wg, "ok")

    # The new file: a loopback listener, and no token for any role.
    text = render_config(merge_config(default_config(port, wg.config["redis"]["url"]), {
        "server": {"listen": "127.0.0.1:%d" % port},
        "webhook": {"token_file": "", "hmac_secret_file": ""},
        "api": {"tokens_file": "", "admin_tokens_file": ""}}))
    wg.write_config(text=text)
    start = wg.log_size()
    wg.reload()
    wait_for(lambda: reloads(wg, "failed") == failed0 + 1, 5, "reloads_total{failed} + 1",
             diag=lambda: wg.log(start))
    log = wg.wait_log("reload refused", start=start)
    line = [ln for ln in log.splitlines() if "reload refused" in ln][0]
    assert "0.0.0.0" in line and "loopback" in line and "token" in line, line
    assert reloads(wg, "ok") == ok0

    # Every role still needs its token on the public listener...
    assert wg.gate(w, token=None).status_code == 401
    assert wg.webhook(identity_change(w, "NoToken0001=", now_s()), token=None).status_code == 401
    assert wg.get("/v1/identities?state=pending").status_code == 401
    assert wg.get("/v1/identities/%s" % w).status_code == 401
    # ...and works with it.
    assert wg.webhook(identity_change(w, "WithToken01=", now_s())).status_code == 200
    r = wg.gate(w, type="template")
    d = check_gate_response(r, w)
    assert r.status_code in (200, 423) and d["identity"]["hash"] == "WithToken01=", d
    assert wg.get("/v1/identities?state=pending", token=ADMIN_TOKEN).status_code == 200
    assert wg.alive()


def test_reload_changing_only_a_restart_only_key_keeps_it_and_logs_it(waguard_factory):
    wg = waguard_factory()
    w = world_wa_id("IN")
    ok0, failed0 = reloads(wg, "ok"), reloads(wg, "failed")
    wg.write_config({"webhook": {"path": "/hook-moved"}})
    start = wg.log_size()
    wg.reload()
    log = wg.wait_log("webhook.path", start=start)
    line = [ln for ln in log.splitlines() if "webhook.path" in ln][0]
    assert "restart" in line and "keeping the running value" in line, line
    wait_for(lambda: reloads(wg, "ok") == ok0 + 1, 5, "reloads_total{ok} + 1")
    assert reloads(wg, "failed") == failed0
    # The running path is kept, the new one is not served.
    assert wg.webhook(identity_change(w, "KeptPath001=", now_s())).status_code == 200
    assert wg.webhook(identity_change(w, "MovedPath01=", now_s()), path="/hook-moved").status_code == 404
    assert check_gate_response(wg.gate(w, type="template"), w)["identity"]["hash"] == "KeptPath001="


def _write_config(tmp_path, overrides):
    cfg = merge_config(default_config(free_port(), NO_REDIS_URL), overrides)
    for name, content in DEFAULT_FILES.items():
        (tmp_path / name).write_text(content)
    p = tmp_path / "waguard.conf"
    p.write_text(render_config(cfg))
    return p


def test_bad_ca_file_refused_by_check_config_and_at_start(tmp_path):
    bad = not_a_certificate(tmp_path)
    p = _write_config(tmp_path, {"upstream": {"url": "https://127.0.0.1:%d" % free_port(), "ca_file": bad}})
    r = subprocess.run([str(WAGUARD_BIN), "--check-config", "--config", str(p)], capture_output=True,
                       text=True, timeout=20, env=clean_env(), cwd=str(tmp_path))
    assert r.returncode == EX_CONFIG, (r.returncode, r.stdout, r.stderr)
    assert "ca_file" in r.stderr and bad in r.stderr, r.stderr
    assert "is valid" not in r.stdout, r.stdout
    try:
        r = subprocess.run([str(WAGUARD_BIN), "--config", str(p)], capture_output=True, text=True,
                           timeout=10, env=clean_env(), cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("waguard started with a ca_file that is not a certificate")
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert "ca_file" in r.stderr, r.stderr


def test_relative_ca_file_is_found_as_every_file_key(tmp_path):
    """A relative ca_file is looked up as the other *_file keys are: $CREDENTIALS_DIRECTORY
    first, then beside the configuration file; never in the working directory (/ under
    systemd), and a missing one is named with the file, line and key."""
    ca, _, _ = make_test_ca(str(tmp_path / "pki"))
    pem = open(ca).read()
    conf = tmp_path / "etc"
    conf.mkdir()
    creds = tmp_path / "creds"
    creds.mkdir()
    (conf / "waba-ca.pem").write_text(pem)
    (creds / "cred-ca.pem").write_text(pem)
    url = "https://127.0.0.1:%d" % free_port()

    def check(name, env_extra=None):
        p = _write_config(conf, {"upstream": {"url": url, "ca_file": name}})
        env = dict(clean_env(), **(env_extra or {}))
        return subprocess.run([str(WAGUARD_BIN), "--check-config", "--config", str(p)], capture_output=True,
                              text=True, timeout=20, env=env, cwd="/")
    r = check("waba-ca.pem")                                   # beside the configuration
    assert r.returncode == 0 and "is valid" in r.stdout, (r.returncode, r.stderr)
    r = check("cred-ca.pem", {"CREDENTIALS_DIRECTORY": str(creds)})      # systemd's credentials
    assert r.returncode == 0 and "is valid" in r.stdout, (r.returncode, r.stderr)
    r = check("cred-ca.pem")                                   # not beside the configuration
    assert r.returncode == EX_CONFIG, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"waguard\.conf:\d+: .*ca_file", r.stderr) and str(conf / "cred-ca.pem") in r.stderr, r.stderr


def test_bad_ca_file_reload_refused_and_https_upstream_kept(procs, tmp_path):
    ca, crt, key = make_test_ca(str(tmp_path / "pki"))
    _, sim, wg = procs.stack(sim_options=dict(tls_cert=crt, tls_key=key),
                             overrides={"upstream": {"ca_file": ca}})
    assert sim.url.startswith("https://")
    br = world_wa_id("BR")
    failed0, ok0 = reloads(wg, "failed"), reloads(wg, "ok")

    bad = not_a_certificate(tmp_path)
    wg.write_config({"upstream": {"ca_file": bad}})
    wg.write_file("api_tokens", "svc:%s\n" % API_TOKEN_NEW)    # must not be half-applied
    start = wg.log_size()
    wg.reload()
    wait_for(lambda: reloads(wg, "failed") == failed0 + 1, 5, "reloads_total{failed} + 1",
             diag=lambda: wg.log(start))
    log = wg.wait_log("reload refused", start=start)
    line = [ln for ln in log.splitlines() if "reload refused" in ln][0]
    assert "ca_file" in line, line
    assert reloads(wg, "ok") == ok0

    # The old configuration is whole: the old token, and the upstream over TLS with the old CA.
    assert wg.gate(br, token=API_TOKEN_NEW).status_code == 401
    r = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+" + br]})
    assert r.status_code == 200, r.text
    assert r.json()["contacts"][0]["status"] == "valid", r.json()
    assert sim.calls_matching(method="POST", path="/v1/contacts"), "nothing reached the simulator"
    h, t = "CaKept00001=", now_s() - 60
    sim.set_identity(br, h, t * 1000)
    wg.webhook_ok(identity_change(br, h, t))
    wait_for(lambda: (wg.identity(br) or {}).get("identity", {}).get("state") == "acknowledged", 10,
             "%s acknowledged over TLS after the refused reload" % br, diag=lambda: wg.identity(br))
    assert sim.get_identity(br)["acknowledged"] is True
    assert sim.state()["tls_failures"] == 0


# --------------------------------------------------------------------------- 6: Redis not usable

def test_redis_database_that_cannot_be_selected_is_not_used(waguard_factory, private_redis):
    url = "redis://127.0.0.1:%d/99" % private_redis.port
    wg = waguard_factory({"redis": {"url": url, "timeout_ms": REDIS_TIMEOUT_MS}}, wait=False)
    wait_for(lambda: requests.get(wg.url + "/healthz", timeout=2).status_code == 200, 10, "/healthz")
    w = world_wa_id("NG")

    def refused():
        r = readyz(wg)
        return r.json() if r.status_code == 503 and "SELECT" in r.json().get("reason", "") else None
    j = wait_for(refused, 5, "/readyz 503 naming SELECT", diag=lambda: wg.log()[-2000:])
    assert j["ready"] is False and "out of range" in j["reason"], j

    store_unavailable(wg.gate(w, type="template"), w)
    assert_error_body(wg.webhook(identity_change(w, "Db99Hash001=", now_s())), 503)
    assert_error_body(wg.webhook(inbound_text(w)), 503)

    # It keeps trying (a new connection each time), and never says ready meanwhile.
    def tries():
        n = wg.log().count("Redis refused SELECT: ERR DB index is out of range; not using this connection")
        return n if n >= 3 else None
    n = wait_for(tries, 10, "three refused SELECTs in the log", diag=lambda: wg.log()[-3000:])
    assert readyz(wg).status_code == 503
    assert "connected to Redis" not in wg.log(), wg.log()[-2000:]
    assert wg.metric("waguard_redis_up") == 0
    # Nothing at all was written: not database 0, not any other.
    c = private_redis.client()
    assert c.dbsize() == 0, c.keys("*")[:10]
    assert c.info("keyspace") == {}, c.info("keyspace")
    print("refused SELECTs seen in the log: %d" % n)


def test_redis_that_accepts_and_never_answers(waguard_factory):
    hung = HungRedis()
    try:
        wg = waguard_factory({"redis": {"url": hung.url, "timeout_ms": REDIS_TIMEOUT_MS}}, wait=False)
        wait_for(lambda: requests.get(wg.url + "/healthz", timeout=2).status_code == 200, 10, "/healthz")
        wait_for(lambda: hung.accepted >= 1 and hung.received > 0, 5, "the daemon's handshake sent")
        w = world_wa_id("PH")
        limit = REDIS_TIMEOUT_MS / 1000.0 + 1.0
        r, took_ready = timed(readyz, wg)
        assert r.status_code == 503 and r.json()["ready"] is False, r.text
        r, took_gate = timed(wg.gate, w, "template")
        store_unavailable(r, w)
        r, took_hook = timed(wg.webhook, identity_change(w, "HungHash001=", now_s()))
        assert_error_body(r, 503)
        for what, took in (("/readyz", took_ready), ("gate", took_gate), ("webhook", took_hook)):
            assert took < limit, "%s took %.2fs with a Redis that never answers" % (what, took)
        # The handshake has a time limit: the connection is dropped and made again.
        wait_for(lambda: hung.accepted >= 3, 10, "three connections to the hung Redis",
                 diag=lambda: wg.log()[-3000:])
        assert "did not complete the connection and handshake within %d ms" % REDIS_TIMEOUT_MS in wg.log()
        j = readyz(wg).json()
        assert j["ready"] is False and j["reason"], j
        print("hung Redis: /readyz %.3fs, gate %.3fs, webhook %.3fs, connections %d"
              % (took_ready, took_gate, took_hook, hung.accepted))
    finally:
        hung.close()


def test_redis_paused_while_connected_then_resumed(waguard_factory, private_redis):
    wg = waguard_factory({"redis": {"timeout_ms": REDIS_TIMEOUT_MS}}, redis=private_redis)
    w, h = world_wa_id("DE"), "Paused00001="
    assert wg.webhook(identity_change(w, h, now_s() - 30)).status_code == 200
    before = check_gate_response(wg.gate(w, type="template"), w)
    assert before["identity"]["hash"] == h, before
    reconnects0 = wg.metric("waguard_redis_reconnects_total")
    limit = REDIS_TIMEOUT_MS / 1000.0 + 1.0
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        # The first request goes to the connected, silent Redis: answered once timeout_ms is up.
        r, took_gate = timed(wg.gate, w, "template")
        store_unavailable(r, w)
        r, took_hook = timed(wg.webhook, identity_change(w, "Paused00002=", now_s()))
        assert_error_body(r, 503)
        r, took_ready = timed(readyz, wg)
        assert r.status_code == 503, r.text
        r2, took_gate2 = timed(wg.gate, w, "template")
        store_unavailable(r2, w)
        for what, took in (("gate", took_gate), ("webhook", took_hook), ("/readyz", took_ready),
                           ("second gate", took_gate2)):
            assert took < limit, "%s took %.2fs while Redis was paused" % (what, took)
        wg.wait_log("Redis has not answered for", timeout=5)
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: readyz(wg).status_code == 200, 10, "/readyz 200 after SIGCONT",
             diag=lambda: wg.log()[-3000:])
    assert wg.metric("waguard_redis_reconnects_total") > reconnects0
    after = check_gate_response(wg.gate(w, type="template"), w)
    assert after["identity"]["hash"] == h, after        # the refused change was not half-written
    assert wg.webhook(identity_change(w, "Resumed0001=", now_s())).status_code == 200
    assert check_gate_response(wg.gate(w, type="template"), w)["identity"]["hash"] == "Resumed0001="
    print("paused Redis: gate %.3fs (the connected request), webhook %.3fs, /readyz %.3fs, gate %.3fs"
          % (took_gate, took_hook, took_ready, took_gate2))


# --------------------------------------------------------------------------- 7: bounded upstream

def test_bounded_queue_and_timeout_counted_from_enqueue(procs):
    timeout_ms, queue_max, n = 1500, 2, 10
    _, sim, wg = procs.stack(overrides={
        "upstream": {"queue_max": queue_max, "max_in_flight": 1, "timeout_ms": timeout_ms},
        "identity": {"lease_s": 4}})
    users = [world_wa_id(c) for c in ("GB", "IN", "BR", "NG", "AR")]
    for w in users:
        wg.webhook_ok(inbound_text(w))           # the 24-hour window is open: a text is allowed
    # One send first: the login and a connection are done before the burst.
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": users[0], "type": "text", "text": {"body": "0"}})
    assert r.status_code == 201, r.text
    sim.delay(4000, count=-1, path_prefix="/v1/messages", method="POST")

    results = [None] * n
    go = threading.Barrier(n)

    def send(i):
        w = users[i % len(users)]
        go.wait()
        t0 = time.monotonic()
        try:
            r = requests.post(wg.url + "/v1/messages", timeout=10,
                              headers={"Authorization": "Bearer " + API_TOKEN},
                              json={"to": w, "type": "text", "text": {"body": "burst %d" % i}})
            results[i] = (r.status_code, r.text, time.monotonic() - t0)
        except requests.RequestException as e:
            results[i] = (None, repr(e), time.monotonic() - t0)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    sim.clear_rules()
    assert all(r is not None for r in results), results
    details = [json.loads(x[1])["errors"][0]["details"] if x[0] in (502, 504) else x for x in results]
    full = [x for x, d in zip(results, details) if x[0] == 502 and "queue_max" in d]
    # A queued send whose time runs out while its connection is being opened is answered 502
    # "could not connect" (test_connect_that_runs_out_of_time_is_a_timeout, xfail): counted
    # with the timeouts here, which it is.
    timed_out = [x for x, d in zip(results, details)
                 if (x[0] == 504 and "timed out" in d) or (x[0] == 502 and "could not connect" in d)]
    assert len(full) + len(timed_out) == n, results
    # At most one in flight and queue_max waiting: every other one refused at once.
    assert n - 1 - queue_max <= len(full) <= n - 1, results
    for status, text, took in full:
        assert took < 0.5, "a refusal for a full queue took %.2fs" % took
    # The queued ones time out timeout_ms after they were sent, not after their dispatch.
    for status, text, took in timed_out:
        assert timeout_ms / 1000.0 - 0.1 <= took < timeout_ms / 1000.0 + 0.6, \
            "a queued send answered %d after %.2fs (timeout_ms %d): %s" % (status, took, timeout_ms, text)
    reached = [c for c in sim.calls_matching(method="POST", path="/v1/messages")
               if c["body"]["text"]["body"].startswith("burst")]
    assert 1 <= len(reached) <= 1 + queue_max, reached
    print("burst of %d: %d refused (queue full) in ≤ %.3fs, %d timed out after %s s, "
          "%d reached the WABA client" % (n, len(full), max(x[2] for x in full), len(timed_out),
             ", ".join("%.3f" % x[2] for x in timed_out), len(reached)))


def test_failed_logins_back_off(procs):
    r = procs.redis()
    sim = procs.sim(password="not-the-daemon's-password")
    wg = procs.daemon(r, sim)
    users = [world_wa_id(c) for c in ("GB", "IN", "BR", "NG", "ID", "MX")]
    t = now_s() - 600
    for i, w in enumerate(users):
        sim.set_identity(w, "LoginBack%02d=" % i, t * 1000)
        wg.webhook_ok(identity_change(w, "LoginBack%02d=" % i, t))
    t0 = time.time()

    # The workers keep trying (every user several attempts) for about 3 seconds.
    def busy():
        if time.time() - t0 < 3.0:
            return None
        return all((wg.identity(w) or {}).get("identity", {}).get("attempts", 0) >= 4 for w in users)
    wait_for(busy, 10, "every user tried four times, three seconds on",
             diag=lambda: [(wg.identity(w) or {}).get("identity") for w in users])
    elapsed = time.time() - t0
    calls = logins(sim)
    attempts = sum(wg.identity(w)["identity"]["attempts"] for w in users)
    assert 1 <= len(calls) <= 4, "%d logins in %.1fs for %d attempts: %r" % (
        len(calls), elapsed, attempts, [round(c["time"] - t0, 2) for c in calls])
    assert all(c["status"] == 401 for c in calls), calls
    gaps = [b["time"] - a["time"] for a, b in zip(calls, calls[1:])]
    assert all(g >= 0.9 for g in gaps), gaps
    assert sim.state()["login_count"] == 0
    assert not identity_puts(sim), "a PUT went out without a login"
    assert "next try in" in wg.log()
    for w in users:
        assert wg.identity(w)["identity"]["state"] == "pending", wg.identity(w)
    print("%d logins in %.1fs (gaps %s) while the workers made %d attempts"
          % (len(calls), elapsed, ", ".join("%.2f" % g for g in gaps), attempts))


_LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def abandoned_puts(wg, w):
    """Wall-clock times (epoch s) at which wg logged that its PUT for w got no answer (it gave
    the PUT up: timeout_ms, counted from enqueue, ran out)."""
    out = []
    for line in wg.log().splitlines():
        m = _LOG_TS.match(line)
        if m and ("ack: %s: PUT identity got no answer" % w) in line:
            out.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
                       .replace(tzinfo=datetime.timezone.utc).timestamp())
    return out


def login_each(sim, wgs, wa_id):
    """Makes each daemon call the simulator, one after the other (a forwarded contact check);
    returns {"Bearer <token>": daemon}, to tell whose call the simulator recorded."""
    token_of = {}
    for wg in wgs:
        resp = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+" + wa_id]})
        assert resp.status_code == 200, resp.text
        token_of[sim.calls_matching(method="POST", path="/v1/contacts")[-1]["headers"]["Authorization"]] = wg
    assert len(token_of) == len(wgs)
    return token_of


def concurrent_puts(sim, users, token_of):
    """The PUTs of one user that reached the simulator while an earlier one was still being
    answered, as (waiting_together, abandoned_then_retaken): in the first list the earlier
    PUT's instance still waited for it (a violation), in the second it had already logged
    that it gave the PUT up (the WABA client may still work on a call its client left)."""
    waiting_together, abandoned_then_retaken = [], []
    for w in users:
        calls = identity_puts(sim, w)
        for c in calls:
            assert c["headers"].get("Authorization") in token_of, "a PUT with an unknown token: %r" % c
        for a, b in overlapping(calls):
            owner = token_of[a["headers"]["Authorization"]]
            gave_up = [ts for ts in abandoned_puts(owner, w)
                       if a["time"] - 0.005 <= ts <= b["time"] + 0.005]
            pair = (w, a["body"]["hash"], owner.name, b["body"]["hash"],
                    token_of[b["headers"]["Authorization"]].name, round(b["time"] - a["time"], 3))
            (abandoned_then_retaken if gave_up else waiting_together).append(pair)
    return waiting_together, abandoned_then_retaken


def test_two_instances_slow_upstream_never_put_one_user_at_once(procs):
    """Two instances on one Redis and one WABA client that takes 0.8 x timeout_ms to answer a
    PUT; every change reaches both instances, and a newer one arrives for some users while the
    first PUTs are under way.  No two PUTs of one user are waited on at once, and every user
    ends acknowledged with the newest hash."""
    timeout_ms = 500                                 # daemon.ACK_OVERRIDES; lease_s = 2
    r = procs.redis()
    sim = procs.sim()
    wg1 = procs.daemon(r, sim)
    wg2 = procs.daemon(r, sim)
    token_of = login_each(sim, (wg1, wg2), world_wa_id("US"))
    sim.delay(int(timeout_ms * 0.8), count=-1, path_prefix="/v1/contacts/", method="PUT")
    countries = ("GB", "IN", "BR", "NG", "DE", "AR", "MX", "PH", "ID", "US")
    users = [world_wa_id(c) for c in countries]
    t = now_s() - 600
    newest = {}
    for i, w in enumerate(users):
        h = "TwoInst%03d=" % i
        sim.set_identity(w, h, t * 1000)
        newest[w] = h
        # Each change reaches both instances (a redelivered webhook), one first, then the other.
        first, second = (wg1, wg2) if i % 2 == 0 else (wg2, wg1)
        first.webhook_ok(identity_change(w, h, t))
        second.webhook_ok(identity_change(w, h, t))
    # A newer change for every third user while the first PUTs are under way, to the other one.
    wait_for(lambda: identity_puts(sim), 5, "a first PUT")
    for i, w in enumerate(users[::3]):
        h = "TwoInstNew%03d=" % i
        sim.set_identity(w, h, (t + 30) * 1000)
        newest[w] = h
        (wg2 if i % 2 == 0 else wg1).webhook_ok(identity_change(w, h, t + 30))

    def all_acked():
        for w in users:
            j = wg1.identity(w)
            if not j or j["identity"]["hash"] != newest[w] or j["identity"]["state"] != "acknowledged":
                return None
        return True
    wait_for(all_acked, 20, "every user acknowledged with the newest hash",
             diag=lambda: [wg1.identity(w)["identity"] for w in users if wg1.identity(w)])
    for w in users:
        assert identity_puts(sim, w), "no PUT for %s" % w
        for wg in (wg1, wg2):
            d = check_gate_response(wg.gate(w, type="template"), w)
            assert d["allowed"] and d["identity"]["hash"] == newest[w], d
        s = sim.get_identity(w)
        assert s["hash"] == newest[w] and s["acknowledged"] is True, (w, s)

    all_puts = identity_puts(sim)
    together, retaken = concurrent_puts(sim, users, token_of)
    assert not together, "a second PUT for one user while the first one's instance still waited: %r" % together
    per = {wg.name: len([c for c in all_puts if token_of[c["headers"]["Authorization"]] is wg])
           for wg in (wg1, wg2)}
    assert all(per.values()), "both instances should have PUT: %r" % per
    assert all(c["status"] in (200, 400) for c in all_puts), [(c["path"], c["status"]) for c in all_puts]
    print("two instances: %d PUTs %r; %d reached the WABA client after the earlier PUT was abandoned "
          "but before it was answered %r" % (len(all_puts), per, len(retaken), retaken[:3]))


def test_two_instances_one_squeezed_queue_no_put_while_another_waits(procs):
    """One instance's single connection is kept busy by slow sends, so its acknowledgements
    wait in the queue; the other instance is idle.  A PUT may reach the WABA client while an
    earlier one for the same user is still being answered only when the earlier one's instance
    had already given up on it (timeout_ms counted from enqueue; it logged so): two instances
    never both wait on a PUT for one user, and every user ends acknowledged."""
    timeout_ms = 500                                 # daemon.ACK_OVERRIDES; lease_s = 2
    r = procs.redis()
    sim = procs.sim()
    over = {"upstream": {"max_in_flight": 1}}
    wg1 = procs.daemon(r, sim, overrides=over)
    wg2 = procs.daemon(r, sim, overrides=over)
    sender = world_wa_id("US")
    wg1.webhook_ok(inbound_text(sender))
    token_of = login_each(sim, (wg1, wg2), sender)
    slow = int(timeout_ms * 0.8)
    sim.delay(slow, count=-1, path_prefix="/v1/contacts/", method="PUT")
    sim.delay(slow, count=-1, path_prefix="/v1/messages", method="POST")

    stop = threading.Event()
    codes = []

    def send_forever():
        s = requests.Session()
        while not stop.is_set():
            try:
                resp = s.post(wg1.url + "/v1/messages", timeout=5,
                              headers={"Authorization": "Bearer " + API_TOKEN},
                              json={"to": sender, "type": "text", "text": {"body": "busy"}})
                codes.append(resp.status_code)
            except requests.RequestException as e:
                codes.append(repr(e))
    threads = [threading.Thread(target=send_forever) for _ in range(6)]
    for th in threads:
        th.start()
    countries = ("GB", "IN", "BR", "NG", "DE", "AR", "MX", "PH", "ID", "US")
    users = [world_wa_id(c) for c in countries]
    t = now_s() - 600
    newest = {}
    try:
        for i, w in enumerate(users):
            newest[w] = "Squeeze%03d=" % i
            sim.set_identity(w, newest[w], t * 1000)
            wg1.webhook_ok(identity_change(w, newest[w], t))
        # Under pressure until most users' PUTs went out.
        wait_for(lambda: len({c["path"] for c in identity_puts(sim)}) >= 7, 15,
                 "PUTs under a squeezed queue", diag=lambda: wg1.log()[-3000:])
    finally:
        stop.set()
        for th in threads:
            th.join(10)

    def all_acked():
        return all((wg2.identity(w) or {}).get("identity", {}).get("state") == "acknowledged" for w in users)
    wait_for(all_acked, 15, "every user acknowledged once the pressure is off",
             diag=lambda: [wg2.identity(w)["identity"] for w in users])
    for w in users:
        s = sim.get_identity(w)
        assert s["hash"] == newest[w] and s["acknowledged"] is True, (w, s)

    together, retaken = concurrent_puts(sim, users, token_of)
    assert not together, "a second PUT for one user while the first one's instance still waited: %r" % together
    sends = [c for c in sim.calls_matching(method="POST", path="/v1/messages")
             if c["body"]["text"]["body"] == "busy"]
    print("squeezed queue: %d PUTs; %d reached the WABA client after the earlier PUT was abandoned "
          "but before it was answered %r; busy sends: %d answered %r, %d reached the WABA client"
          % (len(identity_puts(sim)), len(retaken), retaken[:3], len(codes),
             {k: codes.count(k) for k in set(codes)}, len(sends)))


class UnreachableListener:
    """A loopback port whose listen queue is full and never accepted from: a connect to it
    neither succeeds nor fails (the SYN is dropped), as with a WABA host that does not answer."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.fill = []
        for _ in range(3):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fill.append(c)

    def close(self):
        for c in self.fill:
            c.close()
        self.sock.close()


def test_connect_that_runs_out_of_time_is_a_timeout(procs):
    """A WABA host that never completes the TCP handshake: the forwarded call is answered
    504 'timed out' once timeout_ms is up."""
    lst = UnreachableListener()
    try:
        r = procs.redis()
        wg = procs.daemon(r, upstream_url=lst.url, overrides={"upstream": {"auth": "none"}})
        resp, took = timed(wg.post, "/v1/contacts", token=API_TOKEN,
                           json={"blocking": "wait", "contacts": ["+" + world_wa_id("GB")]})
        print("connect that never completes: %d after %.3fs: %s" % (resp.status_code, took, resp.text))
        assert took < 0.5 + 1.0, took
        assert resp.status_code == 504 and "timed out" in resp.text, resp.text
    finally:
        lst.close()
