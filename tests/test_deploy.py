"""Checks of the operator-facing files: systemd units, man page, deploy/ examples.

Run from anywhere with /usr/bin/python3 -m pytest tests/test_deploy.py.
Each test skips (never fails) when the tool it needs is not installed.
"""

import configparser
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import DECISION_REASONS, GiveUp, free_port, wait_for

TOP = Path(__file__).resolve().parent.parent
DEPLOY = TOP / "deploy"
SERVICE = TOP / "systemd" / "waguard.service"
SOCKET_UNIT = TOP / "systemd" / "waguard.socket"
MANPAGE = TOP / "man" / "waguard.8"

MAX_EXPOSURE = 1.2

# The configuration keys, their defaults and what a change needs, from the configuration
# table itself (waguard --list-keys), so that no document can drift from it; [hold]'s
# per-category keys as the examples give them (authentication_s, authentication_templates).
from daemon import WAGUARD_BIN  # noqa: E402  (the binary under test: make sets WAGUARD_BIN)


def _keys_from_binary():
    out = subprocess.run([str(WAGUARD_BIN), "--list-keys"], capture_output=True, text=True, check=True).stdout
    keys, restart = {}, set()
    for line in out.splitlines():
        section, key, default, change = line.split("\t")
        key = key.replace("<category>", "authentication")
        keys.setdefault(section, {})[key] = default
        if change == "restart":
            restart.add("%s.%s" % (section, key))
    return keys, restart


KEYS, RESTART_KEYS = _keys_from_binary()

# Secrets the unit passes with LoadCredential=.
CREDENTIALS = ["waba_password", "api_tokens", "admin_tokens", "webhook_token", "hmac_secret"]

METRICS = [
    "waguard_http_requests_total",
    "waguard_http_request_duration_seconds",
    "waguard_webhook_items_total",
    "waguard_webhook_duplicates_total",
    "waguard_identity_late_total",
    "waguard_dead_letters_total",
    "waguard_identities_pending",
    "waguard_identities_failed",
    "waguard_ack_attempts_total",
    "waguard_ack_queue_depth",
    "waguard_ack_queue_oldest_age_seconds",
    "waguard_upstream_requests_total",
    "waguard_upstream_request_duration_seconds",
    "waguard_redis_up",
    "waguard_redis_errors_total",
    "waguard_redis_reconnects_total",
    "waguard_decisions_total",
    "waguard_decision_reasons_total",
    "waguard_fail_open_total",
    "waguard_holds_applied_total",
    "waguard_holds_lifted_total",
    "waguard_identity_future_total",
    "waguard_blocklist_syncs_total",
    "waguard_contact_checks_refused_total",
    "waguard_contact_checks_unsent",
    "waguard_contact_check_budget",
    "waguard_identity_check",
    "waguard_build_info",
]

REASONS = list(DECISION_REASONS)

ROUTES = [
    "/webhook",
    "/v1/gate/{wa_id}",
    "/v1/gate",
    "/v1/messages",
    "/v1/contacts",
    "/v1/contacts/{wa_id}/identity",
    "/v1/contacts/{phone}/block",
    "/unblock",
    "/report",
    "/v1/contacts/blocklist",
    "/v1/identities",
    "/v1/identities/{wa_id}",
    "/v1/identities/{wa_id}/ack",
    "/v1/identities/{wa_id}/release",
    "/identity-change/check",
    "/identity-change/retrieve-date",
    "/block_users",
    "/healthz",
    "/readyz",
    "/metrics",
]

ENVIRONMENT = [
    "WAGUARD_",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
]


def need(tool):
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}", f"/usr/bin/{tool}") if os.access(p, os.X_OK)),
        None,
    )
    if not path:
        pytest.skip(f"{tool} is not installed")
    return path


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


def read_ini(path):
    cp = configparser.ConfigParser(
        interpolation=None,
        comment_prefixes=(";", "#"),
        inline_comment_prefixes=None,
        strict=True,
        empty_lines_in_values=False,
    )
    with open(path, encoding="utf-8") as f:
        cp.read_file(f)
    return cp


def read_unit(path):
    """A systemd unit as {section: [(key, value), ...]}, keeping repeated keys."""
    unit, section = {}, None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            unit.setdefault(section, [])
            continue
        assert section, f"{path}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a key=value line: {line}"
        unit[section].append((key.strip(), value.strip()))
    return unit


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def wait_port(port, proc, timeout=10.0):
    def listening():
        if proc.poll() is not None:
            raise GiveUp(f"process exited early with {proc.returncode}")
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    wait_for(listening, timeout, f"something listening on port {port}", interval=0.05)


def render_man(width=80):
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8")
    env.pop("MAN_KEEP_FORMATTING", None)
    return run(["man", "--warnings", "-l", str(MANPAGE)], env=env)


# --------------------------------------------------------------------------
# Configuration examples


def test_example_config_has_every_key_with_its_default():
    cp = read_ini(DEPLOY / "waguard.conf")
    assert set(cp.sections()) == set(KEYS)
    # The production example differs from the code's defaults where a server needs
    # it: secrets point at the unit's credentials, and the On-Premises login is on.
    secrets = {
        ("webhook", "token_file"): "webhook_token",
        ("upstream", "auth"): "login",
        ("upstream", "password_file"): "waba_password",
        ("api", "tokens_file"): "api_tokens",
        ("api", "admin_tokens_file"): "admin_tokens",
    }
    for section, keys in KEYS.items():
        assert set(cp[section]) == set(keys), f"[{section}] keys differ"
        for key, default in keys.items():
            want = secrets.get((section, key), default)
            assert cp[section][key] == want, f"[{section}] {key}"
    # Every *_file naming a secret names one the unit loads (or is empty).
    unit = read_unit(SERVICE)
    loaded = {v.partition(":")[0] for v in unit_values(unit, "Service", "LoadCredential")}
    for section in cp.sections():
        for key, value in cp[section].items():
            if key.endswith("_file") and value and key != "ca_file":
                assert value in loaded, f"[{section}] {key} = {value}: no LoadCredential={value}"


def _every_key(cp, name):
    assert set(cp.sections()) == set(KEYS), name
    for section, keys in KEYS.items():
        assert set(cp[section]) == set(keys), f"{name}: [{section}] keys differ"


def _check_config(path, tmp_path, credentials):
    cred = tmp_path / "cred"
    cred.mkdir()
    for name in credentials:
        (cred / name).write_text(("ops:%s\n" if "tokens" in name else "%s\n") % ("x" * 32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAGUARD_")}
    env["CREDENTIALS_DIRECTORY"] = str(cred)
    return run([str(WAGUARD_BIN), "--config", str(path), "--check-config"], env=env)


def test_dev_config_is_for_make_run():
    """make run (tests/run-dev.sh): the Cloud by default, On-Premises with API=onprem."""
    run_dev = (TOP / "tests" / "run-dev.sh").read_text(encoding="utf-8")
    for name, api in (("waguard.dev.conf", "cloud"), ("waguard.dev-onprem.conf", "onprem")):
        cp = read_ini(DEPLOY / name)
        _every_key(cp, name)
        assert name in run_dev
        assert cp["server"]["listen"] == "127.0.0.1:8080"
        assert cp["redis"]["url"] == "unix:.run/redis.sock"
        assert cp["upstream"]["url"] == "http://127.0.0.1:9090"
        assert cp["upstream"]["api"] == api
        # Secrets are looked up next to the configuration file (deploy/): these are the
        # repository top's .run/ files, written by make run, which prints the admin token.
        assert cp["api"]["admin_tokens_file"] == "../.run/admin_tokens"
        assert ".run/admin_tokens" in run_dev and "admin token" in run_dev
        assert cp["api"]["tokens_file"] == ""
        assert cp["webhook"]["token_file"] == ""
        assert cp["log"]["level"] == "debug"
        if api == "cloud":
            # Signed webhooks as Meta sends them; the simulator's Graph token; two numbers.
            assert cp["upstream"]["auth"] == "bearer"
            assert cp["upstream"]["token_file"] == "../.run/waba_token"
            assert cp["webhook"]["hmac_secret_file"] == "../.run/app_secret"
            assert len(cp["upstream"]["phone_number_id"].split(",")) == 2
            assert cp["identity"]["ack"] == "manual"
        else:
            assert cp["upstream"]["auth"] == "login"
            assert cp["upstream"]["password_file"] == "../.run/waba_password"
            assert cp["webhook"]["hmac_secret_file"] == ""


def test_cloud_config_is_complete_and_passes_check_config_as_shipped(tmp_path):
    cp = read_ini(DEPLOY / "waguard.cloud.conf")
    _every_key(cp, "waguard.cloud.conf")
    assert cp["upstream"]["api"] == "cloud"
    assert cp["upstream"]["url"] == "https://graph.facebook.com"
    assert cp["upstream"]["identity_check"] == "on"
    # Meta's signature is the credential; no token stands in for it (DEPLOYING.md).
    assert cp["webhook"]["hmac_secret_file"] and cp["webhook"]["token_file"] == ""
    assert int(cp["server"]["max_body_bytes"]) >= 3 * 1024 * 1024
    unit = read_unit(SERVICE)
    loaded = {v.partition(":")[0] for v in unit_values(unit, "Service", "LoadCredential")}
    named = [v for sect in cp.sections() for k, v in cp[sect].items()
             if k.endswith("_file") and v and k != "ca_file"]
    for value in named:
        assert value in loaded, f"{value}: no LoadCredential={value}"
    res = _check_config(DEPLOY / "waguard.cloud.conf", tmp_path, named)
    assert res.returncode == 0 and "is valid" in res.stdout, res.stderr


def test_redis_config_is_durable_and_never_evicts(tmp_path):
    text = (DEPLOY / "redis-waguard.conf").read_text(encoding="utf-8")
    settings = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings[key] = value.strip()
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] in ("everysec", "always")
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["no-appendfsync-on-rewrite"] == "no"
    assert "# appendfsync always" in text  # the alternative is there, explained

    server = need("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [server, str(DEPLOY / "redis-waguard.conf"),
         "--port", str(port), "--bind", "127.0.0.1",
         "--unixsocket", str(tmp_path / "redis.sock"),
         "--dir", str(tmp_path), "--daemonize", "no", "--save", ""],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_port(port, proc)
        import redis  # redis-py, installed for /usr/bin/python3

        r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("appendfsync")["appendfsync"] == settings["appendfsync"]
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.set("waguard:test", "1")
        r.shutdown(nosave=True)
    except Exception:
        proc.kill()
        raise
    finally:
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Bad directive" not in out and "FATAL" not in out, out


# --------------------------------------------------------------------------
# Prometheus rules


def test_promtool_check_rules():
    promtool = need("promtool")
    res = run([promtool, "check", "rules", str(DEPLOY / "waguard.rules.yml")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_rule_unit_tests():
    promtool = need("promtool")
    res = run([promtool, "test", "rules", "waguard.rules.test.yml"], cwd=DEPLOY)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_use_only_known_metrics_and_cover_the_brief():
    text = (DEPLOY / "waguard.rules.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\bwaguard_[a-z_]+\b", text))
    assert used <= set(METRICS), f"unknown metrics: {used - set(METRICS)}"
    for metric in ("waguard_ack_attempts_total", "waguard_ack_queue_oldest_age_seconds",
                   "waguard_redis_up", "waguard_http_requests_total",
                   "waguard_identities_failed"):
        assert metric in used, metric
    for word in ("for:", "severity:", "summary:", "description:"):
        assert word in text


# --------------------------------------------------------------------------
# nginx


def stop_nginx(proc):
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def nginx_wrapper(tmp_path, *, live=False, https_port=443, http_port=80, upstream_port=8080, site=None,
                  auth_line='proxy_set_header Authorization "Bearer test-webhook-token";\n'):
    """Write a self-contained nginx.conf in tmp_path including the site file (deploy's, or
    `site` as text) and the webhook auth include holding auth_line."""
    need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    res = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
               "-keyout", str(key), "-out", str(cert), "-days", "2",
               "-subj", "/CN=waguard.example.com"])
    assert res.returncode == 0, res.stderr
    auth = tmp_path / "waguard-webhook-auth.conf"
    if not auth.exists():
        auth.write_text(auth_line)

    if site is None:
        site = (DEPLOY / "nginx-waguard.conf").read_text(encoding="utf-8")
    for old, new in [
        ("/etc/ssl/certs/waguard.example.com.pem", str(cert)),
        ("/etc/ssl/private/waguard.example.com.key", str(key)),
        ("/var/log/nginx/", f"{tmp_path}/"),
        ("/etc/nginx/waguard-webhook-auth.conf", str(auth)),
    ]:
        assert old in site, f"nginx-waguard.conf no longer mentions {old}"
        site = site.replace(old, new)
    if live:
        site = re.sub(r"^\s*listen \[::\].*\n", "", site, flags=re.M)  # no IPv6 needed
        site = re.sub(r"listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl", site)
        site = re.sub(r"listen 80;", f"listen 127.0.0.1:{http_port};", site)
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
    (tmp_path / "site.conf").write_text(site)

    temp = "\n".join(f"    {d}_temp_path {tmp_path}/{d};" for d in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(f"""\
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
{"daemon off;" if live else ""}
{"master_process off;" if live else ""}
events {{
    worker_connections 64;
}}
http {{
    access_log {tmp_path}/access.log;
{temp}
    include {tmp_path}/site.conf;
}}
""")
    return tmp_path / "nginx.conf"


def test_nginx_config_is_valid(tmp_path):
    nginx = need("nginx")
    conf = nginx_wrapper(tmp_path)
    res = run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)])
    assert res.returncode == 0, res.stderr
    assert "test is successful" in res.stderr


def test_nginx_body_limit_matches_max_body_bytes():
    site = (DEPLOY / "nginx-waguard.conf").read_text(encoding="utf-8")
    m = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmM]?);", site, re.M)
    assert m, "client_max_body_size missing"
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    cp = read_ini(DEPLOY / "waguard.conf")
    assert size == int(cp["server"]["max_body_bytes"])
    assert f"location = {cp['webhook']['path']}" in site


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        _Upstream.seen.append((self.command, self.path, dict(self.headers), body))
        out = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


def test_nginx_routes_only_the_public_paths(tmp_path):
    nginx = need("nginx")
    requests = pytest.importorskip("requests")
    import urllib3

    urllib3.disable_warnings()
    if os.geteuid() != 0:
        pytest.skip("the live nginx test runs nginx as root")

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    https_port, http_port = free_port(), free_port()
    conf = nginx_wrapper(tmp_path, live=True, https_port=https_port, http_port=http_port,
                         upstream_port=upstream.server_address[1])
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"https://127.0.0.1:{https_port}"
    try:
        wait_port(https_port, proc)
        _Upstream.seen.clear()

        # The webhook body reaches waguard byte for byte, with the signature
        # header untouched, the token added and the client address forwarded.
        body = '{"messages":[{"text":{"body":"caf\\u00e9 \u00e9t\u00e9"}}] }\n'.encode()
        r = requests.post(f"{base}/webhook", data=body, verify=False, timeout=10,
                          headers={"Content-Type": "application/json",
                                   "X-Hub-Signature-256": "sha256=00ff"})
        assert r.status_code == 200, r.text
        method, path, headers, got = _Upstream.seen[-1]
        assert (method, path, got) == ("POST", "/webhook", body)
        assert headers["X-Hub-Signature-256"] == "sha256=00ff"
        assert headers["Authorization"] == "Bearer test-webhook-token"
        assert headers["X-Forwarded-For"] == "127.0.0.1"

        # The Cloud API handshake keeps its query string.
        r = requests.get(f"{base}/webhook?hub.mode=subscribe&hub.verify_token=t&hub.challenge=42",
                         verify=False, timeout=10)
        assert r.status_code == 200
        assert _Upstream.seen[-1][1] == "/webhook?hub.mode=subscribe&hub.verify_token=t&hub.challenge=42"

        # Exactly max_body_bytes passes, one byte more is refused by nginx.
        limit = int(read_ini(DEPLOY / "waguard.conf")["server"]["max_body_bytes"])
        r = requests.post(f"{base}/webhook", data=b" " * limit, verify=False, timeout=10)
        assert r.status_code == 200
        r = requests.post(f"{base}/webhook", data=b" " * (limit + 1), verify=False, timeout=10)
        assert r.status_code == 413

        for path in ("/healthz", "/readyz"):
            r = requests.get(base + path, verify=False, timeout=10)
            assert r.status_code == 200 and _Upstream.seen[-1][1] == path

        # Nothing else gets through.
        n = len(_Upstream.seen)
        for method, path in [("GET", "/v1/gate/16315551234"), ("POST", "/v1/gate"),
                             ("POST", "/v1/messages"), ("GET", "/v1/identities?state=pending"),
                             ("POST", "/v1/identities/1/ack"), ("GET", "/metrics"),
                             ("POST", "/v17.0/123/messages"), ("PUT", "/webhook"),
                             ("GET", "/")]:
            r = requests.request(method, base + path, verify=False, timeout=10)
            assert r.status_code in (403, 404, 405), (method, path, r.status_code)
        assert len(_Upstream.seen) == n

        r = requests.get(f"http://127.0.0.1:{http_port}/webhook", allow_redirects=False, timeout=10)
        assert r.status_code == 301 and r.headers["Location"].startswith("https://")

        # Secrets in the query string stay out of the access log.
        assert "verify_token" not in (tmp_path / "waguard.access.log").read_text()
    finally:
        stop_nginx(proc)
        upstream.shutdown()
        upstream.server_close()


def cloud_nginx_site(tmp_path):
    """Follow DEPLOYING.md's Cloud nginx step as written: its shell lines run against
    copies (the installed paths mapped into tmp_path; the sites-enabled link left out).
    Returns the site text it leaves and the auth include's text."""
    guide = (DEPLOY / "DEPLOYING.md").read_text(encoding="utf-8")
    mark = "<!-- cloud nginx: tests/test_deploy.py runs these lines -->"
    assert mark in guide, "DEPLOYING.md lost the Cloud nginx step's marker"
    block = guide.split(mark, 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    site, auth = tmp_path / "sites-available-waguard", tmp_path / "waguard-webhook-auth.conf"
    lines = []
    for line in block.splitlines():
        if line.startswith("ln -s"):
            continue
        line = line.replace("/usr/share/doc/waguard/nginx-waguard.conf", str(DEPLOY / "nginx-waguard.conf"))
        line = line.replace("/etc/nginx/sites-available/waguard", str(site))
        line = line.replace("/etc/nginx/waguard-webhook-auth.conf", str(auth))
        assert "/etc/" not in line, "a Cloud step this test cannot map: " + line
        lines.append(line)
    res = run(["bash", "-ec", "\n".join(lines)])
    assert res.returncode == 0, res.stderr
    text = site.read_text(encoding="utf-8")
    assert not re.search(r"^\s*allow \S+;", text, re.M), "the allow-list is still there"
    assert "location = /webhook" in text
    assert auth.read_text() == "", "the Cloud step must leave the auth include empty"
    return text


def test_nginx_cloud_path_as_the_guide_says_finds_no_way_around_the_signature(tmp_path, procs):
    """DEPLOYING.md's Cloud path, nginx in front of the real waguard with Meta's app secret:
    nothing posted from outside is taken without Meta's valid signature, whatever token,
    path spelling or header it carries; Meta's signed body and the handshake go through."""
    nginx = need("nginx")
    requests = pytest.importorskip("requests")
    import hashlib
    import hmac as hmac_mod
    import urllib3

    urllib3.disable_warnings()
    if os.geteuid() != 0:
        pytest.skip("the live nginx test runs nginx as root")
    site = cloud_nginx_site(tmp_path)
    secret = "the-app-secret"
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={
        "upstream": {"api": "cloud", "auth": "none"},
        "webhook": {"hmac_secret_file": "hmac_secret", "token_file": "webhook_token",
                    "verify_token_file": "verify_token"}},
        files={"hmac_secret": secret + "\n"})
    https_port, http_port = free_port(), free_port()
    conf = nginx_wrapper(tmp_path, live=True, https_port=https_port, http_port=http_port,
                         upstream_port=wg.port, site=site)
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"https://127.0.0.1:{https_port}"
    w = "447700900777"
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
                                        "metadata": {"phone_number_id": "PN1"},
                                        "contacts": [{"wa_id": w, "identity_key_hash": "OUTSIDE="}],
                                        "messages": [{"from": w, "id": "wamid.x1", "timestamp": "1",
                                                      "type": "text", "text": {"body": "hi"}}]}}]}]}).encode()
    good = "sha256=" + hmac_mod.new(secret.encode(), body, hashlib.sha256).hexdigest()
    try:
        wait_port(https_port, proc)
        from daemon import WEBHOOK_TOKEN
        attempts = [
            ("/webhook", {}),
            ("/webhook", {"Authorization": "Bearer " + WEBHOOK_TOKEN}),
            ("/webhook", {"Authorization": "Bearer " + WEBHOOK_TOKEN, "X-Hub-Signature-256": "sha256=" + "0" * 64}),
            ("/webhook", {"X-Hub-Signature-256": good.upper()}),
            ("/webhook", {"X-Hub-Signature-256": "sha1=" + good[7:]}),
            ("/webhook?hub.mode=subscribe", {}),
            ("//webhook", {"Authorization": "Bearer " + WEBHOOK_TOKEN}),
            ("/webhook/", {"Authorization": "Bearer " + WEBHOOK_TOKEN}),
            ("/./webhook", {}),
            ("/%77ebhook", {}),
            ("/Webhook", {}),
            ("/v1/messages", {}),
        ]
        for path, headers in attempts:
            h = {"Content-Type": "application/json", "X-Forwarded-For": "127.0.0.1"}
            h.update(headers)
            res = requests.post(base + path, data=body, headers=h, verify=False, timeout=10)
            assert res.status_code in (401, 403, 404, 405), (path, headers, res.status_code, res.text)
        # Nothing of it reached the store.
        assert r.client().exists(wg.user_key(w)) == 0
        # Meta's body, signed, goes through, byte for byte.
        res = requests.post(base + "/webhook", data=body, verify=False, timeout=10,
                            headers={"Content-Type": "application/json", "X-Hub-Signature-256": good})
        assert res.status_code == 200, res.text
        assert r.client().exists(wg.user_key(w)) == 1
        # The handshake: the right verify token only.
        res = requests.get(base + "/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=7",
                           verify=False, timeout=10)
        assert res.status_code == 403
        from daemon import VERIFY_TOKEN
        res = requests.get(base + "/webhook?hub.mode=subscribe&hub.verify_token=%s&hub.challenge=7" % VERIFY_TOKEN,
                           verify=False, timeout=10)
        assert res.status_code == 200 and res.text == "7"
    finally:
        stop_nginx(proc)


# --------------------------------------------------------------------------
# man page


def test_man_page_has_no_warnings():
    need("man")
    for width in (80, 100):
        res = render_man(width)
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", res.stderr
    groff = need("groff")
    res = run([groff, "-ww", "-man", "-z", str(MANPAGE)])
    assert res.returncode == 0 and res.stderr == "", res.stderr


def man_text():
    need("man")
    res = render_man(250)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_man_page_sections():
    text = man_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "SIGNALS",
                    "ROUTES", "SEND DECISION", "METRICS", "ENVIRONMENT", "FILES",
                    "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.M), section
    for option in ("--config", "--check-config", "--version", "--help"):
        assert option in text
    for signal in ("SIGHUP", "SIGTERM", "SIGINT"):
        assert signal in text
    exit_status = text.split("\nEXIT STATUS\n")[1]
    for status in ("0", "1", "2", "78"):
        assert re.search(rf"^\s+{status}\s", exit_status, re.M), status


def test_man_page_documents_every_key_of_the_example_config():
    text = man_text()
    cp = read_ini(DEPLOY / "waguard.conf")
    config = text.split("\nCONFIGURATION\n")[1].split("\nAUTHENTICATION\n")[0]
    for section in cp.sections():
        m = re.search(rf"^\s+\[{section}\]\n(.*?)(?=^\s+\[\w+\]\n|\Z)", config, re.M | re.S)
        assert m, f"no [{section}] subsection"
        for key in cp[section]:
            default = KEYS[section][key] or "(empty)"
            assert re.search(rf"^\s+{key} = {re.escape(default)}$", m.group(1), re.M), \
                f"[{section}] {key} = {default} not documented"


def test_man_page_documents_routes_metrics_reasons_environment():
    text = man_text()
    for word in ROUTES + METRICS + REASONS + ENVIRONMENT:
        assert word in text, word
    for code in ("200", "400", "401", "403", "404", "413", "423", "202", "503"):
        assert code in text, code


# --------------------------------------------------------------------------
# systemd units


def test_service_unit_settings():
    unit = read_unit(SERVICE)
    svc = dict(unit["Service"])  # last value of each key
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == "/usr/bin/waguard --config /etc/waguard/waguard.conf"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["WatchdogSec"] == "30s"
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == "78"
    assert svc["DynamicUser"] == "yes"
    after = " ".join(unit_values(unit, "Unit", "After")).split()
    wants = " ".join(unit_values(unit, "Unit", "Wants")).split()
    assert {"network-online.target", "redis-server.service"} <= set(after)
    assert {"network-online.target", "redis-server.service"} <= set(wants)
    loaded = {v.partition(":")[0] for v in unit_values(unit, "Service", "LoadCredential")}
    assert set(CREDENTIALS) <= loaded

    # TimeoutStopSec a bit above the drain deadline of the configuration.
    stop = svc["TimeoutStopSec"]
    assert stop.endswith("s")
    drain = int(read_ini(DEPLOY / "waguard.conf")["server"]["shutdown_timeout_s"])
    assert drain < int(stop[:-1]) <= drain + 30

    # What the daemon needs must stay allowed.
    families = svc["RestrictAddressFamilies"].split()
    assert not families[0].startswith("~")
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    filters = unit_values(unit, "Service", "SystemCallFilter")
    assert "@system-service" in filters
    denied = " ".join(f[1:] for f in filters if f.startswith("~")).split()
    assert "@network-io" not in denied and "@io-event" not in denied
    assert svc.get("PrivateNetwork", "no") == "no"
    assert svc["ProtectSystem"] == "strict"
    assert svc["CapabilityBoundingSet"] == ""
    assert unit_values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_service_unit_exposure():
    analyze = need("systemd-analyze")
    res = run([analyze, "security", "--offline=yes", "--no-pager", str(SERVICE)])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout
    # No setting the analyzer (hence systemd 252) does not know.
    assert "Unknown" not in res.stderr and "unknown" not in res.stderr, res.stderr


def test_socket_unit_matches_the_listener():
    unit = read_unit(SOCKET_UNIT)
    listen = unit_values(unit, "Socket", "ListenStream")
    assert listen == ["127.0.0.1:8080"]
    assert listen[0] == read_ini(DEPLOY / "waguard.conf")["server"]["listen"]
    assert unit_values(unit, "Socket", "Accept") in ([], ["no"])
    assert unit_values(unit, "Install", "WantedBy") == ["sockets.target"]


# --------------------------------------------------------------------------
# make install / uninstall (the Makefile belongs to the lead)


def make_install_available():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    if not (TOP / "Makefile").exists():
        pytest.skip("no Makefile yet")
    res = run(["make", "-C", str(TOP), "-n", "install", "DESTDIR=/nonexistent", "PREFIX=/usr"])
    if res.returncode != 0 and "No rule to make target 'install'" in res.stderr:
        pytest.skip("the Makefile has no install target yet")


def make(target, destdir, prefix="/usr"):
    res = run(["make", "-C", str(TOP), target, f"DESTDIR={destdir}", f"PREFIX={prefix}"],
              timeout=600)
    assert res.returncode == 0, f"make {target} failed:\n{res.stdout}\n{res.stderr}"
    return res


def installed_tree(prefix):
    p = prefix.lstrip("/")
    return {
        "binary": f"{p}/bin/waguard",
        "service": f"{p}/lib/systemd/system/waguard.service",
        "socket": f"{p}/lib/systemd/system/waguard.socket",
        "man": f"{p}/share/man/man8/waguard.8",
        "config": "etc/waguard/waguard.conf",
        "doc": f"{p}/share/doc/waguard",
    }


@pytest.mark.parametrize("prefix", ["/usr", "/usr/local"])
def test_make_install_layout(tmp_path, prefix):
    make_install_available()
    dest = tmp_path / "root"
    make("install", dest, prefix)
    tree = {k: dest / v for k, v in installed_tree(prefix).items()}

    assert tree["binary"].is_file() and os.access(tree["binary"], os.X_OK)
    service = tree["service"].read_text()
    assert f"ExecStart={prefix}/bin/waguard --config /etc/waguard/waguard.conf" in service
    assert "DESTDIR" not in service and str(dest) not in service
    assert tree["socket"].read_text() == SOCKET_UNIT.read_text()
    assert tree["man"].read_bytes() == MANPAGE.read_bytes() or \
        tree["man"].with_suffix(".8.gz").exists()
    assert tree["config"].read_text() == (DEPLOY / "waguard.conf").read_text()
    # DynamicUser=yes: the service runs as a throw-away user, so the file must
    # be world-readable (the secrets are in /etc/credstore, not in it).
    assert tree["config"].stat().st_mode & 0o004, "waguard.conf must be mode 0644"
    for name in ("nginx-waguard.conf", "redis-waguard.conf", "waguard.rules.yml", "waguard.cloud.conf"):
        assert (tree["doc"] / name).is_file(), name


def test_make_install_keeps_an_edited_config_and_uninstall_removes(tmp_path):
    make_install_available()
    dest = tmp_path / "root"
    make("install", dest)
    tree = {k: dest / v for k, v in installed_tree("/usr").items()}
    edited = tree["config"].read_text() + "\n; edited by the operator\n"
    tree["config"].write_text(edited)

    make("install", dest)
    assert tree["config"].read_text() == edited, "make install overwrote the configuration"

    make("uninstall", dest)
    for what in ("binary", "service", "socket", "man"):
        assert not tree[what].exists(), f"make uninstall left {tree[what]}"
    assert tree["config"].read_text() == edited, "make uninstall removed the configuration"
