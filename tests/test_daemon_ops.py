"""Operating the daemon: sd_notify, reloads on SIGHUP, graceful stop on SIGTERM, exit codes,
journal and JSON logging.  Real build/waguard, real redis-server (procs.py)."""
import json
import re
import signal
import threading
import time

import pytest
import requests

from daemon import ADMIN_TOKEN, API_TOKEN, API_TOKEN_NEW, WEBHOOK_TOKEN
from helpers import free_port, identity_change, new_wa_id, now_s, wait_for
from procs import NotifySocket, raw_http, read_http, server_has_read


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def api_status(wg, token, port=None):
    return wg.get("/v1/gate/16315550000?type=template", token=token, port=port).status_code


def reloads(wg, result):
    return wg.metric("waguard_config_reloads_total", result=result)


# --------------------------------------------------------------------------- sd_notify

def test_sd_notify_ready_reloading_stopping(procs, notify):
    r = procs.redis()
    wg = procs.daemon(r, env={"NOTIFY_SOCKET": notify.path}, wait=False)
    i, f = notify.wait("READY", "1", timeout=10)
    # READY=1 comes after the listener is bound: a connection works at once.
    assert requests.get(wg.url + "/healthz", timeout=2).status_code == 200
    wg.wait_ready()

    before = time.monotonic_ns() // 1000
    wg.reload()
    j, f = notify.wait("RELOADING", "1", after=i + 1, timeout=5)
    after = time.monotonic_ns() // 1000
    assert "MONOTONIC_USEC" in f, "RELOADING=1 without MONOTONIC_USEC: %r" % notify.messages[j][2]
    usec = int(f["MONOTONIC_USEC"])
    assert before - 1_000_000 <= usec <= after + 1_000_000, (before, usec, after)
    k, _ = notify.wait("READY", "1", after=j, timeout=5)
    assert k > j

    # A refused reload still ends with READY=1 (else systemd waits in "reloading").
    good = open(wg.config_path).read()
    wg.write_config(text=good.replace("lease_s = 2", "lease_s = whenever"))
    wg.reload()
    j, f = notify.wait("RELOADING", "1", after=k + 1, timeout=5)
    assert "MONOTONIC_USEC" in f, notify.messages[j][2]
    k, _ = notify.wait("READY", "1", after=j, timeout=5)
    wg.write_config(text=good)
    assert requests.get(wg.url + "/healthz", timeout=2).status_code == 200

    wg.send_signal(signal.SIGTERM)
    notify.wait("STOPPING", "1", after=k + 1, timeout=5)
    assert wg.wait_exit(10) == 0


@pytest.mark.parametrize("pid", ["own", "unset"])
def test_sd_notify_watchdog(procs, notify, pid):
    r = procs.redis()
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"}
    prefix = "WATCHDOG_PID=$$; export WATCHDOG_PID;" if pid == "own" else None
    wg = procs.daemon(r, env=env, shell_prefix=prefix)
    i, _ = notify.wait("READY", "1", timeout=5)
    first, _ = notify.wait("WATCHDOG", "1", after=0, timeout=2)
    n = first
    for _ in range(4):
        n, _ = notify.wait("WATCHDOG", "1", after=n + 1, timeout=1)
    stamps = [m[0] for m in notify.messages if m[1].get("WATCHDOG") == "1"]
    # on average well within the 200 ms watchdog period (each one came within 1 s)
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert mean < 0.2, stamps
    assert wg.alive()


# --------------------------------------------------------------------------- reloads

def test_sighup_rotates_api_tokens(procs):
    r = procs.redis()
    wg = procs.daemon(r)
    pid = wg.pid
    assert api_status(wg, API_TOKEN) == 200
    assert api_status(wg, API_TOKEN_NEW) == 401
    ok_before = reloads(wg, "ok")
    wg.write_file("api_tokens", "svc:%s\n" % API_TOKEN_NEW)
    wg.reload()
    wait_for(lambda: api_status(wg, API_TOKEN_NEW) == 200, 5, "the new token accepted")
    assert api_status(wg, API_TOKEN) == 401
    assert wg.pid == pid and wg.alive()
    assert reloads(wg, "ok") == ok_before + 1
    # admin routes still take the admin token, and the api token is not an admin token
    assert wg.get("/v1/identities?state=pending", token=ADMIN_TOKEN).status_code == 200
    # an api token reads identity state, and acts on none of it
    assert wg.get("/v1/identities?state=pending", token=API_TOKEN_NEW).status_code == 200
    assert wg.post("/v1/identities/16315550000/ack", token=API_TOKEN_NEW).status_code == 403


@pytest.mark.parametrize("broken", ["bad_value", "unknown_key", "missing_secret"])
def test_broken_reload_keeps_running_config(procs, broken):
    r = procs.redis()
    wg = procs.daemon(r)
    failed_before = reloads(wg, "failed")
    good = open(wg.config_path).read()
    if broken == "bad_value":
        text = good.replace("timeout_ms = 500", "timeout_ms = banana")
        key = "timeout_ms"
    elif broken == "unknown_key":
        text = good.replace("[identity]\n", "[identity]\nacknowledge_everything = yes\n")
        key = "acknowledge_everything"
    else:
        text = good.replace("tokens_file = api_tokens", "tokens_file = no_such_tokens_file")
        key = "tokens_file"
    assert text != good
    wg.write_config(text=text)
    wg.write_file("api_tokens", "svc:%s\n" % API_TOKEN_NEW)   # must not be taken either
    start = wg.log_size()
    wg.reload()
    log = wg.wait_log(lambda t: key in t, start=start, timeout=5)
    line = [ln for ln in log.splitlines() if key in ln][0]
    assert re.search(r"waguard\.conf:\d+", line), "the log does not name file:line: %r" % line
    assert re.search(r"refus|keep|fail|invalid|error", line, re.I), line
    wait_for(lambda: reloads(wg, "failed") == failed_before + 1, 5, "reloads_total{failed} + 1")
    assert api_status(wg, API_TOKEN) == 200, "the running configuration was not kept"
    assert api_status(wg, API_TOKEN_NEW) == 401
    assert wg.alive()

    # repaired: the next SIGHUP applies it
    wg.write_config(text=good)
    wg.reload()
    wait_for(lambda: api_status(wg, API_TOKEN_NEW) == 200, 5, "the repaired reload applied")
    assert api_status(wg, API_TOKEN) == 401


def test_restart_only_change_is_logged_and_kept(procs):
    r = procs.redis()
    wg = procs.daemon(r)
    old_port, new_port = wg.port, free_port()
    wg.write_config({"server": {"listen": "127.0.0.1:%d" % new_port}})
    wg.write_file("api_tokens", "svc:%s\n" % API_TOKEN_NEW)   # a reloadable change alongside
    start = wg.log_size()
    wg.reload()
    log = wg.wait_log("listen", start=start, timeout=5)
    line = [ln for ln in log.splitlines() if "listen" in ln][0]
    assert "restart" in line, line
    wait_for(lambda: api_status(wg, API_TOKEN_NEW) == 200, 5, "the token change applied")
    assert requests.get("http://127.0.0.1:%d/healthz" % old_port, timeout=2).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:%d/healthz" % new_port, timeout=2)
    # a second SIGHUP with the same file logs it again and still keeps the old listener
    wg.reload()
    wait_for(lambda: wg.log(start).count("needs a restart") >= 2 or
             len([ln for ln in wg.log(start).splitlines() if "listen" in ln]) >= 2, 5,
             "the second reload's message")
    assert requests.get("http://127.0.0.1:%d/healthz" % old_port, timeout=2).status_code == 200


# --------------------------------------------------------------------------- stopping

def test_sigterm_answers_forwarded_send_in_flight(procs):
    _, sim, wg = procs.stack(overrides={"upstream": {"timeout_ms": "5000"}, "identity": {"lease_s": "30"}})
    w = new_wa_id()
    sim.delay(1000, count=1, path_prefix="/v1/messages", method="POST")
    msg = {"to": w, "type": "template", "template": {"namespace": "ns", "name": "hello",
                                                     "language": {"policy": "deterministic", "code": "en"}}}
    result = {}

    def send():
        try:
            result["r"] = requests.post(wg.url + "/v1/messages", json=msg, timeout=10,
                                        headers={"Authorization": "Bearer " + API_TOKEN})
        except requests.RequestException as e:
            result["e"] = e
    th = threading.Thread(target=send)
    th.start()
    sim.wait_for_calls(1, method="POST", path="/v1/messages", answered=False, timeout=5)
    wg.send_signal(signal.SIGTERM)

    # it stops accepting while the send is held
    def refused():
        try:
            requests.get(wg.url + "/healthz", timeout=0.5)
            return False
        except requests.ConnectionError:
            return True
    wait_for(refused, 0.8, "new connections refused while draining", interval=0.05)
    th.join(10)
    assert "e" not in result, result
    assert result["r"].status_code == 201, (result["r"].status_code, result["r"].text)
    assert result["r"].json().get("messages"), result["r"].text
    assert wg.wait_exit(10) == 0
    assert sim.calls_matching(method="POST", path="/v1/messages")[0]["status"] == 201


def test_sigterm_answers_webhook_while_redis_sleeps(procs):
    r = procs.redis()
    wg = procs.daemon(r)
    w = new_wa_id()
    sleeper = threading.Thread(target=lambda: r.client(socket_timeout=10).execute_command("DEBUG", "SLEEP", "1.2"))
    sleeper.start()

    def asleep():
        try:
            r.client(socket_timeout=0.1).ping()
            return False
        except Exception:  # noqa: BLE001 - a timeout: Redis is busy sleeping
            return True
    wait_for(asleep, 2, "Redis busy with DEBUG SLEEP")
    raw = json.dumps(identity_change(w, "SlEePy0001=", now_s() - 60)).encode()
    s = raw_http(wg.port, "POST", "/webhook", raw, {"Authorization": "Bearer " + WEBHOOK_TOKEN,
                                                    "Content-Type": "application/json"})
    client_port = s.getsockname()[1]
    wait_for(lambda: server_has_read(wg.port, client_port), 2, "waguard read the webhook")
    wg.send_signal(signal.SIGTERM)
    status, _, body = read_http(s, timeout=10)
    assert status == 200, (status, body)
    assert json.loads(body)["items"] == 1
    assert wg.wait_exit(10) == 0
    sleeper.join(5)
    assert r.client().hget("waguard:user:{%s}" % w, "id_hash") == "SlEePy0001="


def held_send(procs, shutdown_timeout_s, hold_ms):
    """A daemon (shutdown_timeout_s) with a forwarded send that the simulator holds for hold_ms,
    once the simulator has it: (daemon, the client's socket)."""
    _, sim, wg = procs.stack(overrides={"upstream": {"timeout_ms": "10000"},
                                        "server": {"shutdown_timeout_s": str(shutdown_timeout_s)},
                                        "identity": {"lease_s": "30"}})
    sim.delay(hold_ms, count=1, path_prefix="/v1/messages", method="POST")
    s = raw_http(wg.port, "POST", "/v1/messages",
                 json.dumps({"to": new_wa_id(), "type": "template", "template": {"name": "x"}}),
                 {"Authorization": "Bearer " + API_TOKEN, "Content-Type": "application/json"})
    sim.wait_for_calls(1, method="POST", path="/v1/messages", answered=False, timeout=5)
    return wg, s


def test_second_sigterm_exits_at_once(procs):
    wg, s = held_send(procs, shutdown_timeout_s=30, hold_ms=8000)
    start = wg.log_size()
    wg.send_signal(signal.SIGTERM)
    wg.wait_log("SIGTERM", start=start, timeout=3)
    assert wg.alive(), "exited with a request in flight after one SIGTERM"
    t0 = time.monotonic()
    wg.send_signal(signal.SIGTERM)
    wg.wait_exit(2)
    assert time.monotonic() - t0 < 2
    s.close()


def test_shutdown_timeout_bounds_the_drain(procs):
    wg, s = held_send(procs, shutdown_timeout_s=1, hold_ms=6000)
    t0 = time.monotonic()
    wg.send_signal(signal.SIGTERM)
    rc = wg.wait_exit(4)
    took = time.monotonic() - t0
    assert rc == 0, rc
    assert 0.8 <= took < 3, took
    assert "deadline" in wg.log() or "shutdown" in wg.log()
    s.close()


def test_shutdown_deadline_with_an_acknowledgement_in_flight(procs):
    """The drain's deadline passes with an identity PUT unanswered: waguard exits cleanly (the
    PUT's answer "none" reaches the worker after Redis is closed; it once crashed there), and
    the acknowledgement is made after its lease by the next waguard on the same Redis."""
    r, sim, wg = procs.stack(overrides={"upstream": {"timeout_ms": "2500"},
                                        "server": {"shutdown_timeout_s": "1"},
                                        "identity": {"lease_s": "6"}})
    w = new_wa_id()
    put = "/v1/contacts/%s/identity" % w
    sim.set_identity(w, "LeAsEd0001=")
    sim.delay(6000, count=1, path_prefix=put, method="PUT")
    wg.webhook_ok(identity_change(w, "LeAsEd0001=", now_s() - 30))
    sim.wait_for_calls(1, method="PUT", path=put, answered=False, timeout=5)
    wg.send_signal(signal.SIGTERM)
    assert wg.wait_exit(6) == 0, wg.log()
    assert "retried after their lease" in wg.log(), wg.log()
    wg2 = procs.daemon(r, sim)
    wait_for(lambda: wg2.identity(w)["identity"]["acknowledged"], 15,
             what="the acknowledgement made by the next waguard once the lease ran out")
    assert wg2.gate(w, type="text").status_code in (200, 423)
    assert wg2.gate(w, type="template").status_code == 200


# --------------------------------------------------------------------------- start-up and logs

@pytest.mark.parametrize("broken", ["bad_value", "unknown_key", "bad_enum"])
def test_bad_config_exits_78_naming_file_line_key(procs, broken):
    over = {"bad_value": {"identity": {"lease_s": "soon"}},
            "unknown_key": {"server": {"listen_twice": "yes"}},
            "bad_enum": {"identity": {"ack": "sometimes"}}}[broken]
    key = {"bad_value": "lease_s", "unknown_key": "listen_twice", "bad_enum": "ack"}[broken]
    wg = procs.daemon(None, overrides=over, wait=False)
    rc = wg.wait_exit(10)
    assert rc == 78, (rc, wg.log())
    log = wg.log()
    assert re.search(r"waguard\.conf:\d+: (\w+\.)?%s" % key, log), log
    assert "READY" not in log


def journal_lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def exercise(wg):
    """Some log lines at several levels: requests, a refused reload (error), a restart-only
    change (warning), SIGTERM (notice)."""
    w = new_wa_id()
    wg.webhook_ok(identity_change(w, "LoGgEd0001=", now_s() - 60))
    good = open(wg.config_path).read()
    wg.write_config(text=good.replace("lease_s = 2", "lease_s = never"))
    start = wg.log_size()
    wg.reload()
    wg.wait_log("lease_s", start=start)
    wg.write_config(text=good)
    assert wg.stop() == 0


def test_journal_stream_priority_prefix(procs):
    r = procs.redis()
    wg = procs.daemon(r, env={"JOURNAL_STREAM": "8:123456"})
    exercise(wg)
    lines = journal_lines(wg.log())
    assert len(lines) >= 4, lines
    bad = [ln for ln in lines if not re.match(r"^<[0-7]>", ln)]
    assert not bad, bad
    prios = {int(ln[1]) for ln in lines}
    assert 3 in prios and 5 in prios, prios     # the refused reload is an error; start/stop notices
    # the level is carried by the prefix, not repeated as a timestamp + word
    assert not any(re.match(r"^<\d>\d{4}-\d\d-\d\dT", ln) for ln in lines), lines[:3]


def test_journal_stream_config_error_has_priority(procs):
    wg = procs.daemon(None, overrides={"identity": {"lease_s": "soon"}},
                      env={"JOURNAL_STREAM": "8:123456"}, wait=False)
    assert wg.wait_exit(10) == 78
    lines = journal_lines(wg.log())
    assert lines and all(re.match(r"^<[0-3]>", ln) for ln in lines), \
        "a start-up configuration error under journald should carry an error priority: %r" % lines


@pytest.mark.parametrize("journal", [False, True], ids=["plain", "journal"])
def test_json_log_format(procs, journal):
    r = procs.redis()
    env = {"JOURNAL_STREAM": "8:123456"} if journal else None
    wg = procs.daemon(r, overrides={"log": {"format": "json"}}, env=env)
    exercise(wg)
    lines = journal_lines(wg.log())
    assert len(lines) >= 4, lines
    levels = set()
    for ln in lines:
        if journal:
            m = re.match(r"^<([0-7])>(.*)$", ln)
            assert m, ln
            ln = m.group(2)
        try:
            o = json.loads(ln)
        except ValueError:
            raise AssertionError("not a JSON line: %r" % ln)
        assert isinstance(o, dict) and isinstance(o.get("msg"), str) and o.get("level"), o
        levels.add(o["level"])
    assert "error" in levels and "notice" in levels, levels


def test_the_daemon_allocates_with_jemalloc(waguard):
    """The release build links jemalloc (Makefile: MALLOC) and the running daemon uses it: its
    memory map holds libjemalloc, which the binary needs before libc, so that every malloc in the
    process (libevent's, hiredis's, cJSON's) finds jemalloc's first.  (Linked with
    --no-as-needed: no symbol of waguard's names it, so a linker that drops unneeded libraries
    would otherwise leave libc's malloc in place without a word.)  The sanitizer build keeps
    libc's malloc, which ASan replaces, and memcheck preloads its own."""
    import subprocess
    from daemon import WAGUARD_BIN, WAGUARD_WRAPPER
    needed = subprocess.run(["readelf", "-d", str(WAGUARD_BIN)], capture_output=True, text=True).stdout
    if "libasan" in needed or WAGUARD_WRAPPER:
        pytest.skip("a sanitizer or memcheck build: its allocator is the tool's")
    assert "[libjemalloc.so.2]" in needed, needed
    assert needed.index("[libjemalloc.so.2]") < needed.index("[libc.so.6]"), needed
    maps = open("/proc/%d/maps" % waguard.proc.pid).read()
    assert "libjemalloc.so" in maps, "the running daemon has not mapped jemalloc"
