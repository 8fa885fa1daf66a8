"""Process and socket helpers for the acknowledgement and operations tests (test_ack.py,
test_daemon_ops.py), on top of daemon.py.

  Procs (the `procs` fixture, conftest.py)  owns everything a test started: redis(appendonly),
                                     sim(**WabaSim options), daemon(redis, sim, overrides, …)
                                     with daemon.ACK_OVERRIDES, stack(); tears it all down
  NotifySocket(dir)                  an AF_UNIX datagram socket to pass as NOTIFY_SOCKET
  raw_http(port, method, path, ...)  an HTTP request on a plain socket, split in send()/recv()
                                     so a test can act while the daemon holds the request
  server_has_read(port, client_port) True once the daemon read everything a client sent
"""
import os
import shutil
import socket
import tempfile
import time

from daemon import (ACK_OVERRIDES, NO_REDIS_URL, NO_UPSTREAM_URL, WABA_PASSWORD, WABA_USER,
                    Daemons, RedisServer, default_config, merge_config)
from helpers import free_port, to_bytes


class Procs(Daemons):
    """Everything one test started; cleanup() stops it all and returns the complaints about
    daemons that did not exit 0 on SIGTERM."""

    def __init__(self, base_dir):
        super().__init__(base_dir)
        self.redises = []
        self.sims = []

    def redis(self, appendonly=False):
        r = RedisServer(appendonly=appendonly)
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
        """A daemon on `redis` (None: an address where nothing listens) whose upstream is
        `sim` (or upstream_url, or a closed port), with ACK_OVERRIDES and then overrides."""
        port = port or free_port()
        url = upstream_url or (sim.url if sim is not None else NO_UPSTREAM_URL)
        cfg = default_config(port, redis.url if redis is not None else NO_REDIS_URL, url)
        merge_config(merge_config(cfg, ACK_OVERRIDES), overrides)
        return self.start_daemon(cfg, files=files, env=env, port=port, start=start, wait=wait,
                                 shell_prefix=shell_prefix)

    def stack(self, sim_options=None, appendonly=False, **daemon_options):
        """A redis-server, a WABA simulator and a daemon using both: (redis, sim, daemon)."""
        r = self.redis(appendonly=appendonly)
        s = self.sim(**(sim_options or {}))
        return r, s, self.daemon(r, s, **daemon_options)

    def cleanup(self):
        bad = super().cleanup()
        for s in self.sims:
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        for r in self.redises:
            r.cleanup()
        return bad


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

