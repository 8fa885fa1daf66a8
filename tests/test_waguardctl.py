"""waguardctl, the operator's command line (ctl/, man/waguardctl.8): against a real daemon, Redis
and the WABA simulator (procs.stack), it reads the daemon's own configuration file and token
files (wg.config_path), lists and shows what webhooks brought, acknowledges, lifts holds, retries
failed acknowledgements, shows the audit trail, over TCP and a unix socket; its exit statuses
(0 done, 1 refused, 2 usage) and messages; and its manual page.  A stand-in for waguard's admin
API (StubWaguard) checks what it sends (the token, the pages it follows, retry --all's count) and
what it does with answers a real daemon gives rarely (the count changed under retry --all, text
with control characters)."""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from daemon import ADMIN_TOKEN, API_TOKEN, ROOT, WAGUARD_BIN, WEBHOOK_TOKEN, clean_env
from helpers import identity_change, new_wa_id, now_s, wait_for

CTL = WAGUARD_BIN.with_name("waguardctl")
MANPAGE = ROOT / "man" / "waguardctl.8"
VERSION = re.search(r"^VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
MANUAL = {"identity": {"ack": "manual"}}
HOLD = {"hold": {"authentication_s": "600", "authentication_templates": "otp_login"}}


@pytest.fixture(scope="module", autouse=True)
def waguardctl_built():
    if not CTL.exists():
        pytest.fail("%s is missing: run `make` first" % CTL)


def ctl(config, *args, env=None, timeout=30):
    """Runs waguardctl --config <config> args; returns the CompletedProcess (text)."""
    argv = [str(CTL)] + (["--config", str(config)] if config is not None else []) + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env(env))


def ok(config, *args, **kw):
    res = ctl(config, *args, **kw)
    assert res.returncode == 0, (args, res.returncode, res.stdout, res.stderr)
    return res


def ctl_json(config, *args, **kw):
    res = ok(config, "--json", *args, **kw)
    return json.loads(res.stdout)


def rows(text):
    """A table's lines as lists of cells (split on runs of two spaces or more), header included."""
    return [re.split(r"\s{2,}", ln.strip()) for ln in text.splitlines() if ln.strip()]


def block(text):
    """A "label: value" block as {label: value} (up to the first empty line)."""
    out = {}
    for ln in text.split("\n\n")[0].splitlines():
        k, _, v = ln.partition(":")
        out[k.strip()] = v.strip()
    return out


def change(sim, wg, w, h, ts=None):
    """The WABA client sees a new identity for w and posts the notification."""
    ts = ts or now_s()
    sim.set_identity(w, h, ts * 1000)
    wg.webhook_ok(identity_change(w, h, ts))
    return ts


# ----------------------------------------------------------------------------- listing, showing


def test_pending_lists_what_a_webhook_brought_as_table_and_json(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    cfg = wg.config_path
    assert ok(cfg, "pending").stdout.strip() == "no identity change is pending"
    assert ctl_json(cfg, "pending") == []

    w, h = new_wa_id(), "PeNdInG001="
    change(sim, wg, w, h)
    table = rows(ok(cfg, "pending").stdout)
    head = table[0]
    assert head[:4] == ["WA_ID", "HASH", "STATE", "ATTEMPTS"], table
    line = [r for r in table[1:] if r[0] == w]
    assert line and line[0][1] == h and line[0][2] == "pending", table

    items = ctl_json(cfg, "pending")
    assert isinstance(items, list) and [i["wa_id"] for i in items] == [w], items
    assert items[0]["hash"] == h and items[0]["state"] == "pending" and items[0]["acknowledged"] is False
    # options may come after the command too
    assert json.loads(ok(cfg, "pending", "--json").stdout) == items
    assert ok(cfg, "failed").stdout.strip() == "no acknowledgement has failed"

    st = block(ok(cfg, "status").stdout)
    assert st["pending"] == "1" and st["failed"] == "0" and st["ready"] == "yes", st
    assert st["ack"] == "manual" and st["caller"] == "ops (admin)" and st["redis"] == "up", st
    j = ctl_json(cfg, "status")
    assert j["pending"] == 1 and j["failed"] == 0 and j["redis"]["up"] is True, j
    assert j["ready"] is True and j["readyz"]["ready"] is True and j["caller"] == "ops", j


def test_show_by_wa_id_and_by_plus_number(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w, h = new_wa_id(), "ShOwMe0001="
    ts = change(sim, wg, w, h)
    for who in (w, "+" + w, "+1 (%s) %s-%s" % (w[1:4], w[4:7], w[7:])):
        out = ok(wg.config_path, "show", who).stdout
        b = block(out)
        assert b["wa_id"] == w and b["hash"] == h and b["state"] == "pending", (who, out)
        assert b["acknowledged"] == "no", out
        assert b["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), out
        hist = out.split("history (newest first):\n")[1]
        assert rows(hist)[0][:2] == ["RECEIVED", "HASH"] and rows(hist)[1][1] == h, out
        j = ctl_json(wg.config_path, "show", who)
        assert j["wa_id"] == w and j["identity"]["hash"] == h and j["identity"]["state"] == "pending", j
        assert j["history"][0]["hash"] == h, j


# ----------------------------------------------------------------------------- acting


def test_ack_with_reason_opens_the_gate_and_the_audit_names_the_operator(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w, h = new_wa_id(), "AcKnOw0001="
    change(sim, wg, w, h)
    assert wg.gate(w, type="template").status_code == 423
    reason = "called the customer back on the number on file"

    res = ok(wg.config_path, "ack", w, "--reason", reason)
    assert "%s: queued" % w in res.stdout and "ops" in res.stdout, res.stdout
    wait_for(lambda: wg.gate(w, type="template").status_code == 200, 10, "the gate open after waguardctl ack")
    assert sim.get_identity(w)["acknowledged"] is True
    assert ctl_json(wg.config_path, "pending") == []

    # the audit trail: who (the admin token's name) and why, newest first
    table = rows(ok(wg.config_path, "audit", w).stdout)
    assert table[0] == ["AT", "WA_ID", "WHO", "RESULT", "HASH", "REASON"], table
    requested = [r for r in table[1:] if r[3] == "requested"]
    assert requested and requested[0][1] == w and requested[0][2] == "ops" and requested[0][5] == reason, table
    entries = ctl_json(wg.config_path, "audit", w)
    assert [e["result"] for e in entries][:2] == ["acknowledged", "requested"], entries
    assert entries[1]["who"] == "ops" and entries[1]["reason"] == reason and entries[1]["wa_id"] == w
    assert len(ctl_json(wg.config_path, "audit", "--limit", "1")) == 1
    # show tells who acknowledged it
    b = block(ok(wg.config_path, "show", w).stdout)
    assert b["state"] == "acknowledged" and b["acknowledged"].startswith("yes, by ops"), b

    # nothing left to do: 200, exit 0
    res = ok(wg.config_path, "ack", w, "--reason", "again")
    assert "already acknowledged" in res.stdout, res.stdout
    assert ctl_json(wg.config_path, "ack", w, "--reason", "again") == {"wa_id": w, "state": "acknowledged"}


def test_release_lifts_a_hold_for_one_category_or_all(procs):
    _, sim, wg = procs.stack(overrides=HOLD)
    w1, w2 = new_wa_id(), new_wa_id()
    for w in (w1, w2):
        change(sim, wg, w, "HoLd%s=" % w[-4:])
    auth = "/v1/gate/%s?type=template&category=authentication"
    for w in (w1, w2):
        wait_for(lambda: wg.gate(w, type="template").status_code == 200, 10, "acknowledged by the worker")
        assert wg.get(auth % w, token=API_TOKEN).status_code == 423
    held = {i["wa_id"] for i in ctl_json(wg.config_path, "held")}
    assert {w1, w2} <= held, held

    res = ok(wg.config_path, "release", w1, "authentication", "--reason", "identity verified in branch")
    assert res.stdout.startswith("%s: hold lifted for category authentication" % w1), res.stdout
    assert "by ops" in res.stdout
    assert wg.get(auth % w1, token=API_TOKEN).status_code == 200
    assert wg.get(auth % w2, token=API_TOKEN).status_code == 423
    entry = ctl_json(wg.config_path, "audit", w1)[0]
    assert entry["result"] == "hold_released:authentication" and entry["who"] == "ops", entry
    assert entry["reason"] == "identity verified in branch", entry

    # all: no category sent, waguard lifts every one
    j = ctl_json(wg.config_path, "release", w2, "all", "--reason", "verified by video call")
    assert j["released"] is True and j["category"] == "*" and j["wa_id"] == w2 and j["released_by"] == "ops", j
    assert wg.get(auth % w2, token=API_TOKEN).status_code == 200
    # a category [hold] does not name: a note, and waguard refuses it as the gate does (exit 1)
    res = ctl(wg.config_path, "release", w2, "payments", "--reason", "x")
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "configures no category 'payments'" in res.stderr and "400 Unknown category" in res.stderr, res.stderr


def test_retry_one_user_and_all_after_failed_acknowledgements(procs):
    _, sim, wg = procs.stack()
    sim.fail(count=-1, status=400, method="PUT")         # the WABA client refuses every PUT
    users = sorted(new_wa_id() for _ in range(3))
    for w in users:
        change(sim, wg, w, "FaIl%s=" % w[-4:])

    def all_failed():
        return {i["wa_id"] for i in wg.identities("failed")} == set(users)
    wait_for(all_failed, 15, "the acknowledgements parked as failed")
    table = rows(ok(wg.config_path, "failed").stdout)
    assert [r[0] for r in table[1:]] == users and all(r[2] == "failed" for r in table[1:]), table
    assert all("400" in r[-1] for r in table[1:]), table        # LAST_ERROR: the PUT's answer
    assert block(ok(wg.config_path, "status").stdout)["failed"] == "3"

    sim.clear_rules()                                    # the WABA side is fixed
    res = ok(wg.config_path, "retry", users[0])
    assert "%s: queued" % users[0] in res.stdout, res.stdout
    wait_for(lambda: wg.gate(users[0], type="template").status_code == 200, 10, "the first user acknowledged")
    asked = [e for e in ctl_json(wg.config_path, "audit", users[0]) if e["result"] == "requested"]
    assert asked and asked[0]["reason"] == "retry by waguardctl" and asked[0]["who"] == "ops", asked

    res = ok(wg.config_path, "retry", "--all", "--reason", "the WABA client's disk was full; fixed")
    assert res.stdout.strip() == "asked again for 2 failed acknowledgement(s); 0 failed now", res.stdout
    for w in users[1:]:
        wait_for(lambda: wg.gate(w, type="template").status_code == 200, 10, "retried and acknowledged")
        asked = [e for e in ctl_json(wg.config_path, "audit", w) if e["result"] == "requested"]
        assert asked and asked[0]["reason"] == "the WABA client's disk was full; fixed", asked
    assert ok(wg.config_path, "failed").stdout.strip() == "no acknowledgement has failed"
    assert ok(wg.config_path, "retry", "--all").stdout.strip() == "no acknowledgement has failed: nothing to retry"
    assert ctl_json(wg.config_path, "retry", "--all") == {"retried": 0, "failed": 0}


# ----------------------------------------------------------------------------- exit statuses


def test_exit_statuses_and_messages(procs, tmp_path):
    _, sim, wg = procs.stack(overrides=MANUAL)
    cfg = wg.config_path
    w = new_wa_id()
    change(sim, wg, w, "ExIt000001=")

    # 1: refused by waguard
    res = ctl(cfg, "show", "19995550000")
    assert res.returncode == 1 and "404" in res.stderr and res.stdout == "", res
    res = ctl(cfg, "--json", "show", "19995550000")
    assert res.returncode == 1 and json.loads(res.stdout)["errors"][0]["code"] == 404, res
    res = ctl(cfg, "ack", "19995550000", "--reason", "x")
    assert res.returncode == 1 and "404" in res.stderr, res
    res = ctl(cfg, "show", "not a number")
    assert res.returncode == 1 and "400" in res.stderr, res

    # 2: usage errors, said before anything is read or sent
    cases = [
        (("ack", w), "ack needs --reason TEXT (the audit trail keeps it)"),
        (("ack", w, "--reason", "  "), "ack: --reason must say why"),
        (("ack", w, "--reason", "x" * 501), "ack: --reason is 501 bytes; waguard keeps at most 500"),
        (("ack",), "ack needs USER"),
        (("release", w, "--reason", "x"), "release needs USER CATEGORY"),
        (("release", w, "authentication"), "release needs --reason"),
        (("release", w, "Bad-Name", "--reason", "x"), "release: 'Bad-Name' is not a category name"),
        (("retry",), "retry needs USER"),
        (("retry", w, "--all"), "retry takes USER or --all, not both"),
        (("show",), "show needs USER"),
        (("show", w, "extra"), "show takes USER only; unexpected 'extra'"),
        (("pending", "--reason", "x"), "pending takes no --reason"),
        (("status", "--all"), "status takes no --all"),
        (("audit", "--limit", "0"), "--limit takes a number from 1 to 1000"),
        (("frobnicate",), "unknown command 'frobnicate'"),
        (("--bogus", "status"), "unknown option '--bogus'"),
        ((), "no command given"),
    ]
    for args, message in cases:
        res = ctl(cfg, *args)
        assert res.returncode == 2 and res.stdout == "", (args, res)
        assert "waguardctl: " + message in res.stderr, (args, res.stderr)
    # the refused ack sent nothing: still pending, nothing audited
    assert [i["wa_id"] for i in ctl_json(cfg, "pending")] == [w]
    assert ctl_json(cfg, "audit", w) == []
    # usage errors come before the configuration is read
    assert ctl(tmp_path / "missing.conf", "ack", w).returncode == 2

    # 0: help and version
    res = ok(None, "--help")
    for command in ("status", "pending", "failed", "show", "ack", "release", "retry", "audit"):
        assert re.search(r"^  %s\b" % command, res.stdout, re.M), command
    assert ok(None, "--version").stdout == "waguardctl %s\n" % VERSION

    # 1: the configuration cannot be read, or is not valid
    res = ctl(tmp_path / "missing.conf", "status")
    assert res.returncode == 1 and "missing.conf" in res.stderr, res
    bad = tmp_path / "bad.conf"
    bad.write_text("[server]\nlisten = nowhere\n")
    res = ctl(bad, "status")
    assert res.returncode == 1 and "bad.conf:2: server.listen" in res.stderr, res
    # ... or waguard is not running
    wg.stop()
    res = ctl(cfg, "status")
    assert res.returncode == 1 and "cannot reach waguard" in res.stderr and "Connection refused" in res.stderr, res
    assert ctl(cfg, "pending").returncode == 1


def test_status_is_refused_while_redis_is_down(procs):
    r, _, wg = procs.stack()
    r.stop()
    wait_for(lambda: wg.get("/readyz").status_code == 503, 10, "/readyz 503")
    res = ctl(wg.config_path, "status")
    assert res.returncode == 1, res
    b = block(res.stdout)
    assert b["ready"].startswith("no (503") and b["redis"].startswith("down"), res.stdout
    assert "not ready" in res.stderr, res.stderr
    res = ctl(wg.config_path, "--json", "status")
    assert res.returncode == 1 and json.loads(res.stdout)["ready"] is False, res
    assert ctl(wg.config_path, "pending").returncode == 1


# ----------------------------------------------------------------------------- a unix socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def test_unix_socket_listen(procs):
    sockdir = tempfile.mkdtemp(prefix="wgctl-")             # short: sun_path is 108 bytes
    try:
        path = os.path.join(sockdir, "waguard.sock")
        r, sim = procs.redis(), procs.sim()
        wg = procs.daemon(r, sim, overrides={"server": {"listen": "unix:" + path}, **MANUAL}, wait=False)
        wait_for(lambda: ctl(wg.config_path, "status").returncode == 0, 15, "waguardctl status over the unix socket",
                 diag=lambda: wg.log()[-3000:])
        w, h = new_wa_id(), "UnIxSoCk01="
        sim.set_identity(w, h, now_s() * 1000)
        conn = UnixHTTPConnection(path)
        conn.request("POST", "/webhook", body=json.dumps(identity_change(w, h, now_s())),
                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + WEBHOOK_TOKEN})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()

        assert [i["wa_id"] for i in ctl_json(wg.config_path, "pending")] == [w]
        assert block(ok(wg.config_path, "show", "+" + w).stdout)["hash"] == h
        ok(wg.config_path, "ack", w, "--reason", "over the unix socket")
        wait_for(lambda: ctl_json(wg.config_path, "show", w)["identity"]["acknowledged"], 10, "acknowledged")
        assert block(ok(wg.config_path, "status").stdout)["waguard"].startswith("unix:" + path)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# ----------------------------------------------------------------------------- a stand-in for waguard


class StubWaguard:
    """Answers waguard's admin routes from `routes` ({(method, path): (status, body or callable)});
    records (method, path, query, headers, body) of every request."""

    def __init__(self, routes):
        self.routes = routes
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                path = unquote(u.path)
                stub.requests.append((self.command, path, q, dict(self.headers), raw))
                status, answer = stub.routes.get((self.command, path), (404, {"errors": [
                    {"code": 404, "title": "Not found", "details": "no route"}]}))
                if callable(answer):
                    answer = answer(q, raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = StubWaguard({})
    yield s
    s.close()


def stub_config(tmp_path, port, tokens=None):
    """A configuration waguardctl (and waguard) accepts, listening where the stub does."""
    text = "[server]\nlisten = 127.0.0.1:%d\n" % port
    if tokens is not None:
        (tmp_path / "admin_tokens").write_text(tokens)
        text += "[api]\nadmin_tokens_file = admin_tokens\n"
    p = tmp_path / "waguard.conf"
    p.write_text(text)
    return p


OVERVIEW = {"redis": {"up": True, "status": "ok"}, "pending": 0, "failed": 3, "held": 0, "blocked": 0,
            "queued": 0, "identity_changes_24h": 0, "identity_refusals_24h": 0, "oldest_pending_s": None,
            "waba": {"answered_2xx": 0, "answered_5xx": 0, "no_answer": 0}, "api": "onprem", "ack": "auto",
            "caller": "ops", "role": "admin"}


def test_the_first_admin_token_or_none(stub, tmp_path):
    stub.routes[("GET", "/v1/overview")] = (200, OVERVIEW)
    stub.routes[("GET", "/readyz")] = (200, {"ready": True})
    cfg = stub_config(tmp_path, stub.port, tokens="# operators\nops:%s\nbackup:second-token-Zx9\n" % ADMIN_TOKEN)
    ok(cfg, "status")
    hdrs = stub.requests[0][3]
    assert hdrs["Authorization"] == "Bearer " + ADMIN_TOKEN and hdrs["Connection"] == "close", hdrs
    assert hdrs["Host"] == "127.0.0.1:%d" % stub.port
    stub.requests.clear()
    (tmp_path / "api").mkdir()
    ok(stub_config(tmp_path / "api", stub.port), "status")          # no admin tokens (loopback)
    assert all("Authorization" not in r[3] for r in stub.requests), stub.requests
    # a token waguard does not take: refused, saying which token was presented
    stub.routes[("GET", "/v1/overview")] = (401, {"errors": [{"code": 401, "title": "Unauthorized",
                                                              "details": "unknown token"}]})
    res = ctl(cfg, "status")
    assert res.returncode == 1 and "401 Unauthorized" in res.stderr and "'ops'" in res.stderr, res


def test_retry_all_sends_the_count_it_was_shown_and_says_when_it_changed(stub, tmp_path):
    cfg = stub_config(tmp_path, stub.port)
    stub.routes[("GET", "/v1/overview")] = (200, OVERVIEW)
    stub.routes[("POST", "/v1/identities/retry")] = (409, {"errors": [{
        "code": 409, "title": "The count changed",
        "details": "4 acknowledgement(s) are failed now, not the number you were shown: look again"}]})
    res = ctl(cfg, "retry", "--all")
    assert res.returncode == 1, res
    assert "changed meanwhile (3 when asked, 4 now)" in res.stderr and "nothing was retried" in res.stderr, res
    post = [r for r in stub.requests if r[0] == "POST"]
    assert len(post) == 1 and json.loads(post[0][4]) == {"expected": 3}, post
    assert post[0][3]["Content-Type"] == "application/json"

    stub.routes[("POST", "/v1/identities/retry")] = (202, {"retried": 3, "failed": 0})
    assert ok(cfg, "retry", "--all").stdout.strip() == "asked again for 3 failed acknowledgement(s); 0 failed now"


def test_pages_reasons_encoding_and_control_characters(stub, tmp_path):
    cfg = stub_config(tmp_path, stub.port)
    item = {"wa_id": "16315550001", "hash": "AAAA=", "created_timestamp": 1700000000, "acknowledged": False,
            "state": "pending", "attempts": 2, "last_error": "PUT identity answered HTTP 503: \x1b[2Jgone",
            "name": "\x1b]0;owned\x07Eve", "user_id": None, "old_hash": None, "since": 1700000000,
            "changed_at": 1700000000, "next_attempt": None, "leased_until": None, "hold_released": None}

    def page(q, raw):
        if q.get("cursor") == "16315550001":
            return {"identities": [dict(item, wa_id="16315550002")], "next_cursor": None}
        return {"identities": [item], "next_cursor": "16315550001"}
    stub.routes[("GET", "/v1/identities")] = (200, page)
    assert [i["wa_id"] for i in ctl_json(cfg, "pending")] == ["16315550001", "16315550002"]
    gets = [r[2] for r in stub.requests]
    assert gets[0] == {"state": "pending", "limit": "1000"} and gets[1]["cursor"] == "16315550001", gets
    out = ok(cfg, "pending").stdout
    assert "\x1b" not in out and "\x07" not in out and "?]0;owned?Eve" in out, repr(out)

    # USER is percent-encoded; the reason is JSON
    stub.routes[("POST", "/v1/identities/+1 (631) 555-0001/ack")] = (202, {
        "wa_id": "16315550001", "state": "queued", "requested_by": "ops"})
    stub.requests.clear()
    reason = 'said "yes" \\ on the phone'
    ok(cfg, "ack", "+1 (631) 555-0001", "--reason", reason)
    assert json.loads(stub.requests[0][4]) == {"reason": reason}
    ambiguous = {"errors": [{"code": 409, "title": "Ambiguous user", "details": "name one"}],
                 "considered": ["5215512340001", "525512340001"]}
    stub.routes[("GET", "/v1/identities/5512340001")] = (409, ambiguous)
    res = ctl(cfg, "show", "5512340001")
    assert res.returncode == 1 and "5215512340001 525512340001" in res.stderr, res


# ----------------------------------------------------------------------------- the manual page


def render_man(width):
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8")
    env.pop("MAN_KEEP_FORMATTING", None)
    return subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(MANPAGE)], capture_output=True,
                          text=True, env=env, timeout=60)


def test_man_page_renders_without_warnings_and_documents_every_command():
    assert shutil.which("man"), "man is missing: `make deps` installs man-db"
    for width in (80, 100):
        res = render_man(width)
        assert res.returncode == 0 and res.stderr == "", res.stderr
        if width == 80:
            assert all(len(ln) <= 80 for ln in res.stdout.splitlines()), \
                [ln for ln in res.stdout.splitlines() if len(ln) > 80]
    groff = shutil.which("groff")
    if groff:
        res = subprocess.run([groff, "-ww", "-man", "-z", str(MANPAGE)], capture_output=True, text=True)
        assert res.returncode == 0 and res.stderr == "", res.stderr
    text = render_man(250).stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "FILES",
                    "EXAMPLES", "SEE ALSO"):
        assert re.search(r"^%s$" % section, text, re.M), section
    commands = text.split("\nCOMMANDS\n")[1].split("\nEXIT STATUS\n")[0]
    usage = ok(None, "--help").stdout
    for command in re.findall(r"^  (\w+)", usage.split("commands:\n")[1].split("\n\n")[0], re.M):
        assert re.search(r"^\s+%s\b" % command, commands, re.M), "COMMANDS lacks %s" % command
    for option in re.findall(r"(--[a-z]+)", usage.split("options:\n")[1]):
        assert option in text.split("\nOPTIONS\n")[1].split("\nCOMMANDS\n")[0], option
    exit_status = text.split("\nEXIT STATUS\n")[1]
    for status in ("0", "1", "2"):
        assert re.search(r"^\s+%s\s" % status, exit_status, re.M), status
    assert "waguard(8)" in text.split("\nSEE ALSO\n")[1]
