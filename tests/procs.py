"""Process helpers for the acknowledgement and operations tests (test_ack.py, test_daemon_ops.py).

  wait_for(pred, timeout, what)      poll pred() until truthy (deadline, never a fixed sleep)
  RedisProc(appendonly=False)        a redis-server of our own: start()/stop(kill)/restart on the
                                     same port and dir (so an AOF is replayed), client()
  Daemon(workdir, config, files)     build/waguard with a config we write; start(), kill(sig),
                                     wait_exit(), reload() (SIGHUP), write_config(), HTTP helpers
  Procs                              owns everything a test started and tears it down; a daemon
                                     still running at the end must exit 0 on SIGTERM
  procs (fixture)                    a Procs for one test; prints the daemons' logs on failure
  NotifySocket(dir)                  an AF_UNIX datagram socket to pass as NOTIFY_SOCKET
  raw_http(port, method, path, ...)  an HTTP request on a plain socket, split in send()/recv()
                                     so a test can act while the daemon holds the request
  server_has_read(port, client_port) True once the daemon read everything a client sent
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis as redislib
import requests

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from helpers import metric_value, parse_metrics, to_bytes  # noqa: E402

ROOT = TESTS_DIR.parent
# WAGUARD_TEST_BIN: run these tests against another build (e.g. a sanitizer build).
WAGUARD_BIN = Path(os.environ.get("WAGUARD_TEST_BIN") or ROOT / "build" / "waguard")
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"

API_TOKEN = "svc-token-Zq81x"
API_TOKEN_NEW = "svc-token-rotated-Pk27w"
ADMIN_TOKEN = "ops-token-Hy55c"
WEBHOOK_TOKEN = "hook-token-Wm03r"
WABA_USER = "admin"
WABA_PASSWORD = "secret-Tg66"
KEY_PREFIX = "waguard"

DEFAULT_FILES = {
    "api_tokens": "# internal services\nsvc:%s\n" % API_TOKEN,
    "admin_tokens": "# operators\nops:%s\n" % ADMIN_TOKEN,
    "webhook_token": WEBHOOK_TOKEN + "\n",
    "waba_password": WABA_PASSWORD + "\n",
}


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=10.0, what="condition", interval=0.02, diag=None):
    """Poll pred() until it returns something truthy and return it.  Exceptions count as
    "not yet".  On timeout: AssertionError naming `what`, the last value or exception and
    diag() when given."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        if time.monotonic() >= deadline:
            extra = ""
            if diag is not None:
                try:
                    extra = "\n" + str(diag())
                except Exception as e:  # noqa: BLE001
                    extra = "\n(diag failed: %r)" % e
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)%s"
                                 % (timeout, what, last, extra))
        time.sleep(interval)


# ----------------------------------------------------------------------------- Redis

class RedisProc:
    """redis-server on a loopback port in a directory of its own.  stop() then start() keeps
    port and directory: with appendonly=True the data written before comes back."""

    def __init__(self, appendonly=False, port=None, dir=None):
        self.appendonly = appendonly
        self.port = port or free_port()
        self.dir = dir or tempfile.mkdtemp(prefix="wgt-redis-")
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = None
        self._log = None

    def start(self, timeout=10.0):
        assert not self.running(), "redis already running"
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
                "--loglevel", "notice", "--enable-debug-command", "local"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._ping(), timeout, "redis-server PING on port %d" % self.port,
                 diag=self.log_text)
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited %s: %s" % (self.proc.returncode, self.log_text()))
        return self.client(socket_timeout=0.5).ping()

    def stop(self, kill=False, timeout=10.0):
        """SIGTERM (a clean shutdown: the AOF is flushed) or SIGKILL; waits for the exit."""
        if not self.running():
            return None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw):
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        return redislib.Redis(host="127.0.0.1", port=self.port, **kw)

    def log_text(self):
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- waguard

def base_config(port, redis_url, upstream_url="http://127.0.0.1:1"):
    """Small timings for tests: retry_base_ms=50, retry_max_s=1, lease_s=2, timeout_ms=500."""
    return {
        "server": {"listen": "127.0.0.1:%d" % port, "timeout_s": "10", "shutdown_timeout_s": "5"},
        "redis": {"url": redis_url, "key_prefix": KEY_PREFIX},
        "upstream": {"api": "onprem", "url": upstream_url, "auth": "login", "username": WABA_USER,
                     "password_file": "waba_password", "timeout_ms": "500"},
        "webhook": {"path": "/webhook", "token_file": "webhook_token"},
        "api": {"tokens_file": "api_tokens", "admin_tokens_file": "admin_tokens"},
        "identity": {"ack": "auto", "retry_base_ms": "50", "retry_max_s": "1", "lease_s": "2"},
        "gate": {"fail": "closed", "home_country_code": "1"},
        "log": {"level": "debug"},
    }


def merge(cfg, overrides):
    for section, keys in (overrides or {}).items():
        sect = cfg.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                sect.pop(k, None)
            else:
                sect[k] = str(v)
    return cfg


def render(cfg):
    out = ["; written by tests/procs.py"]
    for section, keys in cfg.items():
        out.append("[%s]" % section)
        out += ["%s = %s" % (k, v) for k, v in keys.items()]
        out.append("")
    return "\n".join(out) + "\n"


def child_env(extra=None):
    drop = ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
            "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAGUARD_") and k not in drop}
    env.update(extra or {})
    return env


class Daemon:
    """One build/waguard.  `config` is {section: {key: value}}; `files` are written next to it."""

    def __init__(self, workdir, config, files=None, env=None, port=None, name="waguard"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = config
        self.port = port
        self.url = "http://127.0.0.1:%d" % port if port else None
        self.env = child_env(env)
        self.proc = None
        self.killed = False           # killed on purpose: no exit status expected
        self.reaped = False           # the test waited for the exit and judged the status
        self.returncode = None
        self.config_path = self.workdir / "waguard.conf"
        self.stderr_path = self.workdir / "waguard.stderr"
        self._err = None
        for n, content in (files or {}).items():
            self.write_file(n, content)
        self.write_config()
        self.session = requests.Session()

    # -- files
    def write_file(self, name, content):
        p = self.workdir / name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, p)

    def write_config(self, overrides=None, text=None):
        if overrides:
            merge(self.config, overrides)
        self.write_file(self.config_path.name, text if text is not None else render(self.config))

    # -- process
    def start(self, wait=True, timeout=15.0, shell_prefix=None):
        """shell_prefix: a /bin/sh snippet run before `exec waguard` in the same process
        (e.g. "WATCHDOG_PID=$$; export WATCHDOG_PID;"), so the daemon keeps the shell's pid."""
        self.killed = False
        self.reaped = False
        self.returncode = None
        self._err = open(self.stderr_path, "ab")
        argv = [str(WAGUARD_BIN), "--config", str(self.config_path)]
        if shell_prefix:
            argv = ["/bin/sh", "-c", shell_prefix + ' exec "$0" "$@"'] + argv
        self.proc = subprocess.Popen(argv, stdout=self._err, stderr=self._err, env=self.env,
                                     cwd=str(self.workdir))
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=15.0):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("exited %s" % self.proc.returncode)
            return requests.get(self.url + "/readyz", timeout=1).status_code == 200
        try:
            wait_for(ready, timeout, "%s /readyz 200" % self.name)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.log()[-6000:]))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def kill(self, sig=signal.SIGKILL):
        self.killed = True
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self._close()

    def wait_exit(self, timeout=10.0):
        """Wait for the process to end; returns its exit status (AssertionError on timeout)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running %.1fs later:\n%s"
                                 % (self.name, timeout, self.log()[-4000:]))
        self.returncode = rc
        self.reaped = True
        self._close()
        return rc

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit status, or a string when it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = "still running %.0fs after SIGTERM (killed)" % timeout
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self._close()
        return self.returncode

    def _close(self):
        self.session.close()
        if self._err is not None:
            try:
                self._err.close()
            except OSError:
                pass
            self._err = None

    def log(self, start=0):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return self.stderr_path.stat().st_size
        except OSError:
            return 0

    def wait_log(self, needle, start=0, timeout=5.0):
        """Wait until the log (from byte `start`) contains needle (a str, or a callable on the
        text); returns the text."""
        check = needle if callable(needle) else (lambda t: needle in t)
        return wait_for(lambda: (lambda t: t if check(t) else None)(self.log(start)), timeout,
                        "%r in the log of %s" % (needle, self.name),
                        diag=lambda: self.log(start)[-3000:])

    # -- HTTP
    def request(self, method, path, token=None, headers=None, timeout=10, port=None, **kw):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        base = self.url if port is None else "http://127.0.0.1:%d" % port
        return self.session.request(method, base + path, headers=h, timeout=timeout, **kw)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, token=None, **kw):
        return self.request("POST", path, token=token, **kw)

    def webhook(self, payload, token=WEBHOOK_TOKEN):
        r = self.request("POST", "/webhook", token=token, data=to_bytes(payload),
                         headers={"Content-Type": "application/json"})
        return r

    def webhook_ok(self, payload):
        r = self.webhook(payload)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def gate(self, wa_id, type="template", token=API_TOKEN):
        return self.get("/v1/gate/%s?type=%s" % (wa_id, type), token=token)

    def identity(self, wa_id, token=ADMIN_TOKEN):
        """GET /v1/identities/{wa_id} as JSON (None on 404)."""
        r = self.get("/v1/identities/%s" % wa_id, token=token)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def identities(self, state="pending", limit=1000, token=ADMIN_TOKEN):
        """Every identity in `state` (following next_cursor)."""
        out, cursor = [], None
        for _ in range(100):
            q = "/v1/identities?state=%s&limit=%d" % (state, limit)
            if cursor:
                q += "&cursor=" + cursor
            r = self.get(q, token=token)
            assert r.status_code == 200, (r.status_code, r.text)
            j = r.json()
            out += j["identities"]
            cursor = j.get("next_cursor")
            if not cursor:
                return out
        raise AssertionError("next_cursor never ended")

    def ack_now(self, wa_id, token=ADMIN_TOKEN):
        return self.post("/v1/identities/%s/ack" % wa_id, token=token)

    def metrics(self):
        r = self.get("/metrics")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return parse_metrics(r.text)

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)


class Procs:
    """Everything one test started; cleanup() stops it all and returns the complaints."""

    def __init__(self, base_dir):
        self.base_dir = Path(base_dir)
        self.redises = []
        self.sims = []
        self.daemons = []

    def redis(self, appendonly=False):
        r = RedisProc(appendonly=appendonly)
        self.redises.append(r)
        return r.start()

    def sim(self, **kw):
        from waba_sim import WabaSim
        kw.setdefault("auth", "login")
        kw.setdefault("username", WABA_USER)
        kw.setdefault("password", WABA_PASSWORD)
        s = WabaSim(**kw)
        self.sims.append(s)
        return s.start()

    def daemon(self, redis, sim=None, overrides=None, files=None, env=None, start=True, wait=True,
               port=None, shell_prefix=None, upstream_url=None):
        port = port or free_port()
        url = upstream_url or (sim.url if sim is not None else "http://127.0.0.1:1")
        cfg = merge(base_config(port, redis.url if redis is not None else "redis://127.0.0.1:1/0", url),
                    overrides)
        all_files = dict(DEFAULT_FILES)
        all_files.update(files or {})
        name = "waguard#%d" % (len(self.daemons) + 1)
        d = Daemon(self.base_dir / ("wg%d" % (len(self.daemons) + 1)), cfg, all_files, env, port, name)
        self.daemons.append(d)
        if start:
            d.start(wait=wait, shell_prefix=shell_prefix)
        return d

    def cleanup(self):
        bad = []
        for d in self.daemons:
            if d.proc is None or d.killed or d.reaped:
                continue
            rc = d.stop()
            if rc != 0:
                bad.append("%s exited %s" % (d.name, rc))
        for s in self.sims:
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        for r in self.redises:
            r.cleanup()
        return bad

    def dump_logs(self):
        for d in self.daemons:
            sys.stdout.write("\n----- %s stderr (%s) -----\n%s\n" % (d.name, d.workdir, d.log()[-15000:]))


@pytest.fixture
def procs(request, tmp_path):
    if not WAGUARD_BIN.exists():
        pytest.fail("%s is missing: run `make` first" % WAGUARD_BIN)
    p = Procs(tmp_path)
    yield p
    bad = p.cleanup()
    failed = any(getattr(request.node, "rep_" + w, None) is not None
                 and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    if failed or bad:
        p.dump_logs()
    if bad:
        pytest.fail("waguard did not exit 0 on SIGTERM at teardown: %s" % "; ".join(bad))


# ----------------------------------------------------------------------------- sockets

class NotifySocket:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, dirpath=None):
        self.dir = dirpath or tempfile.mkdtemp(prefix="wgn-")   # short: sun_path is 108 bytes
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []           # (monotonic time, {key: value}, raw text)

    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        text = data.decode("utf-8", "replace")
        fields = {}
        for line in text.split("\n"):
            if "=" in line:
                k, _, v = line.partition("=")
                fields[k] = v
        m = (time.monotonic(), fields, text)
        self.messages.append(m)
        return m

    def wait(self, key, value=None, timeout=10.0, after=0):
        """The first message from index `after` on carrying key (=value); returns (index, fields)."""
        deadline = time.monotonic() + timeout
        i = after
        while True:
            while i < len(self.messages):
                f = self.messages[i][1]
                if key in f and (value is None or f[key] == value):
                    return i, f
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s%s on the notify socket within %.1fs; got %r"
                                     % (key, "=" + value if value else "", timeout,
                                        [m[2] for m in self.messages[after:]]))
            self._read(left)

    def drain(self, timeout=0.0):
        while self._read(timeout) is not None:
            pass

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_http(port, method, path, body=b"", headers=None):
    """Send one request on a new socket (Connection: close) and return the socket, unread."""
    body = to_bytes(body)
    h = {"Host": "127.0.0.1:%d" % port, "Connection": "close", "Content-Length": str(len(body))}
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, path, "\r\n".join("%s: %s" % kv for kv in h.items()))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode() + body)
    return s


def read_http(sock, timeout=10.0):
    """Read an answer until the server closes; returns (status, headers, body bytes)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise AssertionError("no HTTP answer: %r" % data[:200])
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def _hexaddr(port):
    return "0100007F:%04X" % port


def server_has_read(server_port, client_port):
    """True when the server-side socket of the connection 127.0.0.1:client_port →
    127.0.0.1:server_port exists and its receive queue is empty: the daemon accepted the
    connection and read the whole request."""
    local, remote = _hexaddr(server_port), _hexaddr(client_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == local and parts[2] == remote:
                rx = int(parts[4].split(":")[1], 16)
                return rx == 0
    return False


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]
