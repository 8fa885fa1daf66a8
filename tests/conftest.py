"""Fixtures for the waguard integration tests: a real redis-server and the real build/waguard.

Fixture API (see also the docstrings below):

  redis_server     (session)  RedisServer shared by the session; use `redis_client` instead
                              unless you need the port.
  redis_client     (function) redis.Redis(decode_responses=True) on the shared server, after
                              FLUSHALL; restarts the shared server if a test stopped it.
  private_redis    (function) RedisServer of its own (stop()/start() it freely; same port).
  waguard_factory  (function) start(overrides=None, files=None, env=None, redis=None,
                              listen=None, extra_config="", wait=True, config_text=None)
                              → Waguard.  Every daemon started is stopped with SIGTERM at
                              teardown and must exit 0; its stderr is printed when the test fails.
  waguard          (function) the module's shared default daemon (ack=auto, unreachable
                              upstream), Redis flushed before the test.
  waguard_bin      (session)  Path of build/waguard, or $WAGUARD_TEST_BINARY (fails the test
                              when it is missing).

Default tokens: API_TOKEN, ADMIN_TOKEN, WEBHOOK_TOKEN, VERIFY_TOKEN, HMAC_SECRET (constants here).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis as redislib
import requests

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from helpers import (hmac_sig, metric_value, parse_metrics, to_bytes,  # noqa: E402
                     wait_until)

ROOT = TESTS_DIR.parent
# WAGUARD_TEST_BINARY=/path/to/waguard runs the suite against another build (e.g. a sanitizer one).
WAGUARD_BIN = Path(os.environ.get("WAGUARD_TEST_BINARY") or (ROOT / "build" / "waguard")).resolve()
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"

API_TOKEN = "apitoken-A1b2C3d4"
ADMIN_TOKEN = "admintoken-E5f6G7h8"
WEBHOOK_TOKEN = "webhooktoken-I9j0K1l2"
VERIFY_TOKEN = "verifytoken-M3n4O5p6"
HMAC_SECRET = "hmacsecret-Q7r8S9t0"
KEY_PREFIX = "waguard"

DEFAULT_FILES = {
    "api_tokens": "# internal services\nsvc:%s\n" % API_TOKEN,
    "admin_tokens": "ops:%s\n" % ADMIN_TOKEN,
    "webhook_token": WEBHOOK_TOKEN + "\n",
    "verify_token": VERIFY_TOKEN + "\n",
    "hmac_secret": HMAC_SECRET + "\n",
}

_DEFAULT = object()   # "use the role's default token"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- Redis

class RedisServer:
    """A redis-server in a temporary directory on a loopback port.  stop()/start() keep the
    port, so a daemon pointed at it can reconnect."""

    def __init__(self, port=None, password=None, unix=False):
        """password: --requirepass; unix: also listen on <dir>/redis.sock, and make `url`
        the unix:/path form."""
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="waguard-redis-")
        self.proc = None
        self.password = password
        self.socket_path = os.path.join(self.dir, "redis.sock") if unix else None
        self.url = ("unix:%s" % self.socket_path) if unix else "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--protected-mode", "no", "--loglevel", "warning",
             "--enable-debug-command", "local"] + self._extra_args(),
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s: %s" % (self.proc.returncode, self.log_text()))
            try:
                if self.client(socket_timeout=0.5).ping():
                    return self
            except redislib.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING: %s" % self.log_text())
            time.sleep(0.02)

    def stop(self, timeout=10.0, kill=False):
        """SIGTERM (or SIGKILL with kill=True) and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _extra_args(self):
        a = []
        if self.password:
            a += ["--requirepass", self.password]
        if self.socket_path:
            a += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return a

    def client(self, **kw):
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        if self.password:
            kw.setdefault("password", self.password)
        return redislib.Redis(host="127.0.0.1", port=self.port, **kw)

    def log_text(self):
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- waguard

def default_config(port, redis_url):
    """The default configuration as {section: {key: value}} (insertion ordered)."""
    return {
        "server": {"listen": "127.0.0.1:%d" % port, "max_body_bytes": "1048576",
                   "timeout_s": "10", "shutdown_timeout_s": "5"},
        "redis": {"url": redis_url, "key_prefix": KEY_PREFIX},
        "upstream": {"api": "onprem", "url": "http://127.0.0.1:1", "auth": "none",
                     "password_file": "", "timeout_ms": "1000"},
        "webhook": {"path": "/webhook", "token_file": "webhook_token",
                    "verify_token_file": "verify_token"},
        "api": {"tokens_file": "api_tokens", "admin_tokens_file": "admin_tokens"},
        "identity": {"ack": "auto", "retry_base_ms": "1000"},
        "gate": {"fail": "closed", "home_country_code": "1"},
        "log": {"level": "debug"},
    }


def render_config(cfg):
    lines = ["; generated by tests/conftest.py"]
    for section, keys in cfg.items():
        lines.append("[%s]" % section)
        for k, v in keys.items():
            lines.append("%s = %s" % (k, v))
        lines.append("")
    return "\n".join(lines) + "\n"


def merge_config(base, overrides):
    """overrides: {section: {key: value}}; a value of None removes the key."""
    for section, keys in (overrides or {}).items():
        sect = base.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                sect.pop(k, None)
            else:
                sect[k] = str(v)
    return base


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WAGUARD_") and k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY",
                                                       "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC")}
    env.update(extra or {})
    return env


class Waguard:
    """One running build/waguard with its config in `workdir`."""

    def __init__(self, workdir, config, files=None, env=None, port=None, args=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.port = port
        self.env = clean_env(env)
        self.args = list(args or [])
        self.proc = None
        self.returncode = None
        for name, content in (files or {}).items():
            p = self.workdir / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
        self.config_path = self.workdir / "waguard.conf"
        if isinstance(config, str):
            self.config_path.write_text(config)
        else:
            self.config_path.write_text(render_config(config))
        self.stderr_path = self.workdir / "waguard.stderr"
        self.url = "http://127.0.0.1:%d" % port if port else None
        self.session = requests.Session()
        self.key_prefix = (config.get("redis", {}).get("key_prefix", KEY_PREFIX)
                           if isinstance(config, dict) else KEY_PREFIX)
        self.webhook_path = (config.get("webhook", {}).get("path", "/webhook")
                             if isinstance(config, dict) else "/webhook")

    # -- process
    def start(self, wait=True, timeout=15.0):
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([str(WAGUARD_BIN), "--config", str(self.config_path)] + self.args,
                                     stdout=self._err, stderr=self._err, env=self.env,
                                     cwd=str(self.workdir))
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("waguard exited with %s before /readyz was 200:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            try:
                r = requests.get(self.url + "/readyz", timeout=1)
                last = "%s %s" % (r.status_code, r.text[:200])
                if r.status_code == 200:
                    return
            except requests.RequestException as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError("waguard /readyz not 200 after %.0fs (last: %s):\n%s"
                                     % (timeout, last, self.stderr_text()))
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0):
        """SIGTERM, wait; SIGKILL after the deadline.  Returns the exit status (-9 when killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = "killed after %.0fs without exiting on SIGTERM" % timeout
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self.session.close()
        try:
            self._err.close()
        except Exception:  # noqa: BLE001
            pass
        return self.returncode

    def stderr_text(self, start=0):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_size(self):
        try:
            return self.stderr_path.stat().st_size
        except OSError:
            return 0

    # -- HTTP
    def request(self, method, path, token=None, headers=None, timeout=10, **kw):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        return self.session.request(method, self.url + path, headers=h, timeout=timeout, **kw)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, token=None, **kw):
        return self.request("POST", path, token=token, **kw)

    def webhook(self, payload, token=_DEFAULT, hmac_secret=None, signature=None, headers=None,
                path=None, content_type="application/json"):
        """POST a webhook body (dict/list → JSON; str/bytes sent as is).  token: the bearer
        (default WEBHOOK_TOKEN; None: no Authorization).  hmac_secret: sign the raw body;
        signature: an explicit X-Hub-Signature-256 value."""
        raw = to_bytes(payload)
        h = {"Content-Type": content_type}
        h.update(headers or {})
        if hmac_secret is not None:
            h["X-Hub-Signature-256"] = hmac_sig(hmac_secret, raw)
        if signature is not None:
            h["X-Hub-Signature-256"] = signature
        tok = WEBHOOK_TOKEN if token is _DEFAULT else token
        return self.request("POST", path or self.webhook_path, token=tok, headers=h, data=raw)

    def gate(self, wa_id, type="text", token=_DEFAULT, raw_path=False):
        """GET /v1/gate/{wa_id}?type=…  (wa_id URL-encoded unless raw_path)."""
        tok = API_TOKEN if token is _DEFAULT else token
        p = "/v1/gate/" + (wa_id if raw_path else quote(wa_id, safe=""))
        if type is not None:
            p += "?type=" + quote(type, safe="")
        return self.get(p, token=tok)

    def gate_batch(self, wa_ids, type="text", token=_DEFAULT):
        tok = API_TOKEN if token is _DEFAULT else token
        payload = {"wa_ids": list(wa_ids)}
        if type is not None:
            payload["type"] = type
        return self.post("/v1/gate", token=tok, json=payload)

    def admin_get(self, path, token=_DEFAULT, **kw):
        return self.get(path, token=ADMIN_TOKEN if token is _DEFAULT else token, **kw)

    def metrics_text(self):
        r = self.get("/metrics")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return r.text

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    # -- Redis key names (brief: P:user:{W}, P:events, P:deadletter, P:ack:queue, P:audit)
    def key(self, suffix):
        return "%s:%s" % (self.key_prefix, suffix)

    def user_key(self, wa_id):
        return "%s:user:{%s}" % (self.key_prefix, wa_id)


class WaguardFactory:
    def __init__(self, base_dir, default_redis):
        self.base_dir = Path(base_dir)
        self.default_redis = default_redis
        self.started = []
        self.n = 0

    def __call__(self, overrides=None, files=None, env=None, redis=None, listen=None,
                 extra_config="", wait=True, config_text=None, args=None, port=None):
        """Start a daemon.  overrides: {section: {key: value or None}}; files: {name: text}
        written next to the config (defaults: the token files); env: extra environment;
        redis: a RedisServer (default: the shared one); listen: the [server] listen value
        (default 127.0.0.1:<free port>); extra_config: raw INI appended; config_text: the
        whole config file instead (placeholders {port} {redis_url} are formatted)."""
        self.n += 1
        port = port or free_port()
        rs = redis or self.default_redis
        redis_url = rs.url if rs is not None else "redis://127.0.0.1:1/0"
        if config_text is not None:
            cfg = config_text.format(port=port, redis_url=redis_url)
        else:
            cfg = default_config(port, redis_url)
            if listen is not None:
                cfg["server"]["listen"] = listen
            merge_config(cfg, overrides)
            if extra_config:
                cfg = render_config(cfg) + extra_config
        all_files = dict(DEFAULT_FILES)
        all_files.update(files or {})
        wg = Waguard(self.base_dir / ("wg%d" % self.n), cfg, files=all_files, env=env, port=port,
                     args=args)
        self.started.append(wg)
        wg.start(wait=wait)
        return wg

    def stop_all(self):
        bad = []
        for wg in self.started:
            rc = wg.stop()
            if rc not in (0, None):
                bad.append((wg, rc))
        return bad


def _print_logs(daemons, header):
    for wg in daemons:
        sys.stdout.write("\n----- %s: waguard stderr (%s) -----\n%s\n" % (header, wg.workdir, wg.stderr_text()[-20000:]))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture(scope="session")
def waguard_bin():
    if not WAGUARD_BIN.exists():
        pytest.fail("%s is missing: run `make` first" % WAGUARD_BIN)
    return WAGUARD_BIN


@pytest.fixture(scope="session")
def redis_server():
    rs = RedisServer().start()
    yield rs
    rs.cleanup()


@pytest.fixture
def redis_client(redis_server):
    if not redis_server.running():
        redis_server.start()
    c = redis_server.client()
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def private_redis():
    rs = RedisServer().start()
    yield rs
    rs.cleanup()


@pytest.fixture
def waguard_factory(request, waguard_bin, redis_server, tmp_path):
    if not redis_server.running():
        redis_server.start()
    f = WaguardFactory(tmp_path, redis_server)
    yield f
    bad = f.stop_all()
    if _test_failed(request) or bad:
        _print_logs(f.started, request.node.nodeid)
    if bad:
        pytest.fail("waguard did not exit 0 on SIGTERM: %s" % ", ".join(str(rc) for _, rc in bad))


@pytest.fixture(scope="module")
def _module_waguard(request, waguard_bin, redis_server, tmp_path_factory):
    f = WaguardFactory(tmp_path_factory.mktemp("wgmod"), redis_server)
    wg = f()
    yield wg
    bad = f.stop_all()
    if bad:
        _print_logs(f.started, request.module.__name__)
        pytest.fail("shared waguard did not exit 0 on SIGTERM: %s" % bad[0][1])


@pytest.fixture
def waguard(request, _module_waguard, redis_client):
    """The module's shared default daemon, Redis flushed.  Its log for this test is printed
    when the test fails."""
    wg = _module_waguard
    if not wg.alive():
        pytest.fail("the shared waguard died earlier:\n%s" % wg.stderr_text()[-8000:])
    wait_until(lambda: wg.get("/readyz").status_code == 200, 10, what="/readyz 200")
    start = wg.stderr_size()
    yield wg
    if _test_failed(request):
        sys.stdout.write("\n----- waguard stderr during %s -----\n%s\n"
                         % (request.node.nodeid, wg.stderr_text(start)[-20000:]))
