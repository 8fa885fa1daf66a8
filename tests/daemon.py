"""The processes of the integration tests: a redis-server of our own and the real build/waguard
with a configuration we write.  The fixtures built on them are in conftest.py (waguard_factory,
waguard, redis_server, redis_client, private_redis, procs).

  RedisServer(port, password, unix, appendonly)   start()/stop(kill)/start() again on the same
                                                  port and dir (an AOF is replayed), client()
  default_config(port, redis_url)                 {section: {key: value}}; merge_config(),
  ACK_OVERRIDES                                   render_config(); the acknowledgement tests'
                                                  small timings and login upstream
  Waguard(workdir, config, files, env, port)      one daemon: start(), wait_ready(), stop(),
                                                  kill(), wait_exit(), reload(), write_config(),
                                                  log(), wait_log(), HTTP and Redis key helpers
  Daemons(base_dir)                               the daemons a test started; cleanup() stops
                                                  them: each still running must exit 0 on SIGTERM

Default tokens: API_TOKEN, ADMIN_TOKEN, WEBHOOK_TOKEN, VERIFY_TOKEN, HMAC_SECRET; the WABA
login WABA_USER / WABA_PASSWORD (constants here, written by DEFAULT_FILES).
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import redis as redislib
import requests

from helpers import GiveUp, free_port, hmac_sig, metric_value, parse_metrics, to_bytes, wait_for

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
# WAGUARD_BIN=/path/to/waguard (or WAGUARD_TEST_BINARY, WAGUARD_TEST_BIN) runs the suite
# against another build (`make sanitize`: build/san/waguard).  WAGUARD_WRAPPER="valgrind …"
# starts every daemon under that command (`make valgrind`).
WAGUARD_BIN = Path(os.environ.get("WAGUARD_BIN") or os.environ.get("WAGUARD_TEST_BINARY")
                   or os.environ.get("WAGUARD_TEST_BIN") or (ROOT / "build" / "waguard")).resolve()
WAGUARD_WRAPPER = shlex.split(os.environ.get("WAGUARD_WRAPPER", ""))
# What ASan, LSan, UBSan and memcheck write when they find something: a daemon whose stderr
# holds one of these fails the test at teardown (Daemons.cleanup), even if it exited 0.
SANITIZER_REPORT = re.compile(
    r"ERROR: (?:Address|Leak|Memory|Thread|UndefinedBehavior)Sanitizer|runtime error: "
    r"|^==\d+== (?:Invalid (?:read|write|free)|Conditional jump|Use of uninitialised"
    r"|Syscall param|Mismatched free|Source and destination overlap"
    r"|[\d,]+ bytes in [\d,]+ blocks are definitely lost)", re.M)
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"

API_TOKEN = "apitoken-A1b2C3d4"
API_TOKEN_NEW = "apitoken-rotated-Pk27w"
ADMIN_TOKEN = "admintoken-E5f6G7h8"
WEBHOOK_TOKEN = "webhooktoken-I9j0K1l2"
VERIFY_TOKEN = "verifytoken-M3n4O5p6"
HMAC_SECRET = "hmacsecret-Q7r8S9t0"
WABA_USER = "admin"
WABA_PASSWORD = "secret-Tg66"
KEY_PREFIX = "waguard"
NO_REDIS_URL = "redis://127.0.0.1:1/0"     # nothing listens there
NO_UPSTREAM_URL = "http://127.0.0.1:1"

DEFAULT_FILES = {
    "api_tokens": "# internal services\nsvc:%s\n" % API_TOKEN,
    "admin_tokens": "# operators\nops:%s\n" % ADMIN_TOKEN,
    "webhook_token": WEBHOOK_TOKEN + "\n",
    "verify_token": VERIFY_TOKEN + "\n",
    "hmac_secret": HMAC_SECRET + "\n",
    "waba_password": WABA_PASSWORD + "\n",
}

_DEFAULT = object()   # "use the role's default token"


def _terminate(proc, sig, timeout):
    """Send sig to a running process and wait for it; SIGKILL once timeout seconds have
    passed.  Returns False when it had to be killed."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return False


# ----------------------------------------------------------------------------- Redis

class RedisServer:
    """A redis-server in a temporary directory on a loopback port.  stop() then start() keeps
    port and directory, so a daemon pointed at it can reconnect, and with appendonly=True the
    data written before comes back.  Also a context manager (start … cleanup)."""

    def __init__(self, port=None, password=None, unix=False, appendonly=False, dir=None):
        """password: --requirepass; unix: also listen on <dir>/redis.sock, and make `url`
        the unix:/path form; appendonly: an AOF fsynced on every write."""
        self.port = port or free_port()
        self.dir = dir or tempfile.mkdtemp(prefix="wgt-redis-")
        self.password = password
        self.appendonly = appendonly
        self.socket_path = os.path.join(self.dir, "redis.sock") if unix else None
        self.url = ("unix:%s" % self.socket_path) if unix else "redis://127.0.0.1:%d/0" % self.port
        self.proc = None
        self._log = None

    def start(self, timeout=10.0):
        assert not self.running(), "redis-server already running"
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
                "--loglevel", "notice", "--enable-debug-command", "local"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self._ping, timeout, "redis-server PING on port %d" % self.port,
                 diag=self.log_text)
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise GiveUp("redis-server exited with %s: %s" % (self.proc.returncode, self.log_text()))
        return self.client(socket_timeout=0.5).ping()

    def stop(self, kill=False, timeout=10.0):
        """SIGTERM (a clean shutdown: the AOF is flushed) or SIGKILL; waits for the exit and
        returns its status (None when it was not running)."""
        if not self.running():
            return None
        _terminate(self.proc, signal.SIGKILL if kill else signal.SIGTERM, timeout)
        self._log.close()
        return self.proc.returncode

    def running(self):
        return self.proc is not None and self.proc.poll() is None

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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# ----------------------------------------------------------------------------- configuration

def default_config(port, redis_url, upstream_url=NO_UPSTREAM_URL):
    """The default configuration as {section: {key: value}} (insertion ordered)."""
    return {
        "server": {"listen": "127.0.0.1:%d" % port, "max_body_bytes": "1048576",
                   "timeout_s": "10", "shutdown_timeout_s": "5"},
        "redis": {"url": redis_url, "key_prefix": KEY_PREFIX},
        "upstream": {"api": "onprem", "url": upstream_url, "auth": "none",
                     "password_file": "", "timeout_ms": "1000"},
        "webhook": {"path": "/webhook", "token_file": "webhook_token",
                    "verify_token_file": "verify_token"},
        "api": {"tokens_file": "api_tokens", "admin_tokens_file": "admin_tokens"},
        "identity": {"ack": "auto", "retry_base_ms": "1000"},
        "gate": {"fail": "closed", "home_country_code": "1"},
        "log": {"level": "debug"},
    }


# The acknowledgement and operations tests (procs fixture): the WABA simulator's login, and
# small timings: retry_base_ms=50, retry_max_s=1, lease_s=2, upstream timeout_ms=500.
ACK_OVERRIDES = {
    "upstream": {"auth": "login", "username": WABA_USER, "password_file": "waba_password",
                 "timeout_ms": "500"},
    "identity": {"retry_base_ms": "50", "retry_max_s": "1", "lease_s": "2"},
}


def render_config(cfg):
    lines = ["; generated by tests/daemon.py"]
    for section, keys in cfg.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % (k, v) for k, v in keys.items()]
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
    """os.environ without what would change the daemon's behaviour (WAGUARD_*, the systemd
    variables), plus extra."""
    drop = ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
            "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAGUARD_") and k not in drop}
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------- waguard

class Waguard:
    """One build/waguard with its config in `workdir`.  `config` is {section: {key: value}}
    or the whole file as text; `files` are written next to it."""

    def __init__(self, workdir, config, files=None, env=None, port=None, args=None, name="waguard"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = config
        self.port = port
        self.url = "http://127.0.0.1:%d" % port if port else None
        self.env = clean_env(env)
        self.args = list(args or [])
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
        parsed = config if isinstance(config, dict) else {}
        self.key_prefix = parsed.get("redis", {}).get("key_prefix", KEY_PREFIX)
        self.webhook_path = parsed.get("webhook", {}).get("path", "/webhook")

    # -- files
    def write_file(self, name, content):
        """Write workdir/name at once (a temporary file renamed over it)."""
        p = self.workdir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, p)

    def write_config(self, overrides=None, text=None):
        if overrides:
            merge_config(self.config, overrides)
        if text is None:
            text = self.config if isinstance(self.config, str) else render_config(self.config)
        self.write_file(self.config_path.name, text)

    # -- process
    def start(self, wait=True, timeout=15.0, shell_prefix=None):
        """shell_prefix: a /bin/sh snippet run before `exec waguard` in the same process
        (e.g. "WATCHDOG_PID=$$; export WATCHDOG_PID;"), so the daemon keeps the shell's pid."""
        self.killed = False
        self.reaped = False
        self.returncode = None
        self._err = open(self.stderr_path, "ab")
        argv = WAGUARD_WRAPPER + [str(WAGUARD_BIN), "--config", str(self.config_path)] + self.args
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
                raise GiveUp("%s exited with %s before /readyz was 200:\n%s"
                             % (self.name, self.proc.returncode, self.log()[-6000:]))
            r = requests.get(self.url + "/readyz", timeout=1)
            if r.status_code != 200:
                raise AssertionError("/readyz %d %s" % (r.status_code, r.text[:200]))
            return True
        wait_for(ready, timeout, "%s /readyz 200" % self.name, diag=lambda: self.log()[-6000:])

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
        """SIGTERM, wait; SIGKILL after the deadline.  Returns the exit status, or a string
        when it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None and not _terminate(self.proc, signal.SIGTERM, timeout):
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
        """The daemon's stderr from byte `start` on."""
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

    def sanitizer_reports(self):
        """The lines of its stderr where a sanitizer or memcheck reported an error."""
        text = self.log()
        return [text[m.start():text.find("\n", m.start())] for m in SANITIZER_REPORT.finditer(text)]

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

    def webhook_ok(self, payload):
        """POST a webhook that must be answered 200; returns the answer's JSON."""
        r = self.webhook(payload)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

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

    def metrics_text(self):
        r = self.get("/metrics")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return r.text

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    # -- Redis key names (P:user:{W}, P:events, P:deadletter, P:ack:queue, P:audit)
    def key(self, suffix):
        return "%s:%s" % (self.key_prefix, suffix)

    def user_key(self, wa_id):
        return "%s:user:{%s}" % (self.key_prefix, wa_id)


class Daemons:
    """The daemons started for one test (or module), in base_dir/wg1, wg2, …"""

    def __init__(self, base_dir):
        self.base_dir = Path(base_dir)
        self.daemons = []

    def start_daemon(self, config, files=None, env=None, port=None, args=None, start=True,
                     wait=True, shell_prefix=None):
        """A Waguard with `config` (for `port`) and DEFAULT_FILES updated with files; started
        (and waited for: /readyz 200) unless told otherwise."""
        n = len(self.daemons) + 1
        all_files = dict(DEFAULT_FILES)
        all_files.update(files or {})
        wg = Waguard(self.base_dir / ("wg%d" % n), config, files=all_files, env=env, port=port,
                     args=args, name="waguard#%d" % n)
        self.daemons.append(wg)
        if start:
            wg.start(wait=wait, shell_prefix=shell_prefix)
        return wg

    def cleanup(self):
        """SIGTERM to every daemon still running (not killed, nor waited for by the test);
        returns the complaints about those that did not exit 0."""
        bad = []
        for d in self.daemons:
            if d.proc is None:
                continue
            if not (d.killed or d.reaped):
                rc = d.stop()
                if rc != 0:
                    bad.append("%s exited %s" % (d.name, rc))
            reports = d.sanitizer_reports()
            if reports:
                bad.append("%s: %d sanitizer/memcheck report(s) in its stderr, the first: %s"
                           % (d.name, len(reports), reports[0].strip()))
        return bad

    def dump_logs(self, header):
        for d in self.daemons:
            sys.stdout.write("\n----- %s: %s stderr (%s) -----\n%s\n"
                             % (header, d.name, d.workdir, d.log()[-20000:]))
