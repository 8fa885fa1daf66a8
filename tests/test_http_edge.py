"""The strict HTTP edge (src/http_edge.c, src/server.c), through the real binary on raw sockets:
framing that two readers could read differently (two Content-Length, "+2", "Transfer-Encoding :"),
control characters and %00 in paths and headers, the 413 answered in JSON before the body is
sent, connections counted from accept, slow clients closed after timeout_s, and 2,000 slowloris
connections that leave a normal client served.  Every refusal is the JSON error envelope and
closes the connection, so nothing after the refused head is read as another request."""
import json
import os
import resource
import select
import socket
import time

import pytest
import requests

from daemon import API_TOKEN, WEBHOOK_TOKEN, default_config, merge_config
from helpers import assert_error_body, errors_body, free_port, new_wa_id, wait_for
from procs import raw_http

WEBHOOK_AUTH = "Authorization: Bearer %s\r\n" % WEBHOOK_TOKEN
API_AUTH = "Authorization: Bearer %s\r\n" % API_TOKEN


# ----------------------------------------------------------------------------- raw HTTP

def exchange(port, data, timeout=5.0, shut=False):
    """Send data on a new connection and read until the daemon closes it (or timeout).
    shut: half-close our side after sending.  Returns (all bytes read, closed by the daemon)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return read_until_close(s, timeout)
    finally:
        s.close()


def read_until_close(s, timeout):
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


def responses(data):
    """Every HTTP answer in data: [(status, {lower-case header: value}, body bytes)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "a truncated answer: %r" % data[:300]
        lines = head.decode("iso-8859-1").split("\r\n")
        assert lines[0].startswith("HTTP/1."), "not an HTTP answer: %r" % data[:300]
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), hdrs, rest[:n]))
        data = rest[n:]
    return out


def read_answers(s, n, timeout=5.0):
    """Read from s until n whole answers have arrived (keeping the connection open)."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rs = responses(got)
            if len(rs) >= n:
                return rs
        except (AssertionError, ValueError):
            pass                                   # one still arriving
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        assert chunk, "the daemon closed the connection after %r" % got[:400]
        got += chunk
    raise AssertionError("%d answers did not arrive: %r" % (n, got[:400]))


def one_error(data, code, closed, needle=None):
    """data holds exactly one answer, `code` in the JSON error envelope, and the daemon closed
    the connection after it.  Returns the details."""
    rs = responses(data)
    assert len(rs) == 1, "expected one answer, got %d: %r" % (len(rs), data[:600])
    status, hdrs, body = rs[0]
    assert status == code, (status, body)
    assert hdrs.get("content-type") == "application/json", hdrs
    j = json.loads(body)
    err = j["errors"][0]
    assert err["code"] == code and isinstance(err["title"], str), j
    assert hdrs.get("connection", "").lower() == "close", hdrs
    assert closed, "the daemon kept the connection open after a refused request"
    if needle is not None:
        assert needle in err["details"], err
    return err["details"]


def post_head(path, headers, auth=WEBHOOK_AUTH):
    return ("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n%s\r\n"
            % (path, auth, "".join(h + "\r\n" for h in headers))).encode()


def healthz_ok(wg):
    assert requests.get(wg.url + "/healthz", timeout=5).status_code == 200


# ----------------------------------------------------------------------------- framing

def test_two_content_lengths_refused_and_nothing_smuggled(waguard):
    """The probe's case: 2, then 60.  libevent alone read 2 bytes of body and ran the rest
    as a second request; now one 400 and the connection closes."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"{}" + smuggled + b" " * (58 - len(smuggled))
    assert len(body) == 60
    data, closed = exchange(waguard.port, post_head("/webhook", ["Content-Length: 2", "Content-Length: 60"]) + body)
    one_error(data, 400, closed, "more than one Content-Length")


@pytest.mark.parametrize("value", ["+2", "-2", "2x", "x2", "0x2", "2, 2", "2 2", "", "2\x0b",
                                   "99999999999999999999"])
def test_malformed_content_length_400(waguard, value):
    data, closed = exchange(waguard.port, post_head("/webhook", ["Content-Length: " + value]) + b"{}")
    one_error(data, 400, closed, "Content-Length")


@pytest.mark.parametrize("header", ["Transfer-Encoding : chunked", "Transfer-Encoding: gzip, chunked",
                                    "Transfer-Encoding: identity", "Transfer-Encoding: chunked\r\nContent-Length: 9",
                                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                                    "Transfer-Encoding\t: chunked"])
def test_malformed_transfer_encoding_400(waguard, header):
    """libevent keeps "Transfer-Encoding " (with the space) as another header and frames by
    Content-Length (here: none, so no body), and the chunks would follow as a request."""
    chunks = b"2\r\n{}\r\n0\r\n\r\n"
    data, closed = exchange(waguard.port, post_head("/webhook", [header]) + chunks)
    one_error(data, 400, closed, "Transfer-Encoding")


def test_chunked_and_plain_bodies_still_accepted(waguard):
    raw = json.dumps(errors_body()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(raw), raw)
    for head, body in ((post_head("/webhook", ["Transfer-Encoding: chunked", "Connection: close"]), chunked),
                       (post_head("/webhook", ["Content-Length: %d" % len(raw), "Connection: close"]), raw)):
        data, closed = exchange(waguard.port, head + body)
        rs = responses(data)
        assert [r[0] for r in rs] == [200], data[:400]


# ----------------------------------------------------------------------------- paths and headers

def test_nul_in_path_does_not_cut_the_id(waguard):
    """/v1/gate/1631555%000001 answered for 11631555 before; now a 400 naming the escape."""
    r = waguard.get("/v1/gate/1631555%000001?type=text", token=API_TOKEN)
    details = assert_error_body(r, 400)["errors"][0]["details"]
    assert "%00" in details, details
    assert "1631555" not in r.text.replace("1631555%000001", ""), r.text
    for path in ("/v1/identities/1631555%00", "/v1/gate/16315551234?type=text%00template",
                 "/v1/gate/1631555%0a0001", "/v1/gate/1631555%7F", "/v1/gate/1631555%zz"):
        assert_error_body(waguard.get(path, token=API_TOKEN), 400)


@pytest.mark.parametrize("target", [b"/v1/gate/1631555\x010001", b"/v1/gate/1631555\x7f", b"/v1/gate/16315\x0051234",
                                    b"/v1/gate/caf\xc3\xa9", b"/healthz\t"])
def test_control_bytes_in_path_400(waguard, target):
    data, closed = exchange(waguard.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + API_AUTH.encode() + b"\r\n")
    one_error(data, 400, closed)


@pytest.mark.parametrize("line", [b"X-A: a\x01b", b"X-A: a\x7f", b"X-A: a\rb", b"Content-Length: 2\x00 60",
                                  b"X-A: 1\r\n folded", b"X A: 1", b"no colon"])
def test_bad_header_lines_400(waguard, line):
    data, closed = exchange(waguard.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n")
    details = one_error(data, 400, closed)
    assert all(0x20 <= ord(c) < 0x7f for c in details), details    # quoted safely


def test_refusal_is_counted_and_daemon_serves_on(waguard):
    for _ in range(3):
        exchange(waguard.port, post_head("/webhook", ["Content-Length: +2"]) + b"{}")
    healthz_ok(waguard)
    m = requests.get(waguard.url + "/metrics", timeout=5).text
    assert any(line.startswith("waguard_http_requests_total{") and 'code="400"' in line and
               not line.endswith(" 0") for line in m.splitlines()), m[:2000]


# ----------------------------------------------------------------------------- 413 before the body

@pytest.fixture
def small_wg(waguard_factory):
    return waguard_factory({"server": {"max_body_bytes": "4096", "max_header_bytes": "2048"}})


def test_413_in_json_before_the_body_is_sent(small_wg):
    """Only the head is sent: the answer must come without the body (the old 413 waited for
    libevent to see the length too, but was its HTML page)."""
    for extra in ([], ["Expect: 100-continue"]):
        s = socket.create_connection(("127.0.0.1", small_wg.port), timeout=5)
        try:
            s.sendall(post_head("/webhook", ["Content-Length: 4097"] + extra))
            data, closed = read_until_close(s, 5)
        finally:
            s.close()
        one_error(data, 413, closed, "max_body_bytes (4096)")
    # exactly the limit is read and answered as usual
    raw = json.dumps(errors_body(details="x" * 100)).encode()
    data, _ = exchange(small_wg.port, post_head("/webhook", ["Content-Length: %d" % len(raw), "Connection: close"]) + raw)
    assert responses(data)[0][0] == 200, data[:300]


def test_head_over_max_header_bytes_400(small_wg):
    data, closed = exchange(small_wg.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    one_error(data, 400, closed, "max_header_bytes")
    healthz_ok(small_wg)


# ----------------------------------------------------------------------------- keep-alive

def test_head_in_pieces_keepalive_and_pipelining(waguard):
    s = socket.create_connection(("127.0.0.1", waguard.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(0, len(req), 5):            # a head in pieces is held, then served
            s.sendall(req[i:i + 5])
        s.sendall(req)                             # and a second request on the same connection
        assert [r[0] for r in read_answers(s, 2)] == [200, 200]
        # pipelined: a good request, then a refused one, then one that must never be answered
        bad = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
        s.sendall(req + bad + req)
        data, closed = read_until_close(s, 5)
        rs = responses(data)
        assert [r[0] for r in rs] == [200, 400], data[:600]
        assert closed
    finally:
        s.close()


# ----------------------------------------------------------------------------- slow clients

def edge_daemon(waguard_factory, fd_limit=None, **server):
    port = free_port()
    cfg = default_config(port, waguard_factory.default_redis.url)
    merge_config(cfg, {"server": server, "log": {"level": "info"}})
    prefix = "ulimit -n %d;" % fd_limit if fd_limit else None
    return waguard_factory.start_daemon(cfg, port=port, shell_prefix=prefix)


def test_slow_head_closed_after_timeout_s(waguard_factory):
    """A client that keeps sending a byte now and then never trips libevent's idle timeout;
    it is closed timeout_s after it began, with no answer."""
    wg = edge_daemon(waguard_factory, timeout_s="1")
    s = socket.create_connection(("127.0.0.1", wg.port), timeout=5)
    t0 = time.monotonic()
    closed_after = None
    try:
        for b in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":
            s.sendall(bytes([b]))
            if select.select([s], [], [], 0.2)[0]:       # the pace of a slow client
                data, closed = read_until_close(s, 1)
                assert data == b"" and closed, data
                closed_after = time.monotonic() - t0
                break
    except (BrokenPipeError, ConnectionResetError):
        closed_after = time.monotonic() - t0
    finally:
        s.close()
    assert closed_after is not None, "a slow client outlived timeout_s"
    assert closed_after < 3.0, closed_after


def slow_client(port, i):
    """The i-th connection of a flood: the odd ones send part of a head, the even ones
    nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if i % 2:
        s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def reap_closed(open_socks):
    """Closes and forgets the sockets of open_socks (fd -> socket) that the daemon has
    closed (poll: select stops at fd 1024); returns how many are still open."""
    p = select.poll()
    for fd in open_socks:
        p.register(fd, select.POLLIN)
    for fd, _ in p.poll(0):
        s = open_socks[fd]
        try:
            gone = s.recv(1) == b""
        except OSError:
            gone = True
        if gone:
            del open_socks[fd]
            s.close()
    return len(open_socks)


def accept_queue(port):
    """How many connections wait in the kernel's queue of the socket listening on
    127.0.0.1:port for the daemon to accept them (/proc/net/tcp: a listening socket's
    rx_queue)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want and cols[3] == "0A":
                return int(cols[4].split(":")[1], 16)
    raise AssertionError("nothing listens on 127.0.0.1:%d" % port)


def test_slowloris_2000_leave_a_normal_client_served(waguard_factory):
    """2,000 connections that send part of a head, or nothing, against max_connections 200
    and a file-descriptor limit of 400: the oldest waiting ones are closed to make room, a
    normal client is served within a second, and the rest are closed after timeout_s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2300:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    # timeout_s leaves room for opening 2,000 sockets on a slow (sanitizer) build on two
    # shared cores: 8 s was not always enough there (every slow one had timed out already)
    wg = edge_daemon(waguard_factory, fd_limit=400, max_connections="200", timeout_s="20")
    socks = []
    max_fds = 0
    t_open = time.monotonic()
    try:
        for i in range(2000):
            socks.append(slow_client(wg.port, i))
            if i % 100 == 99:
                max_fds = max(max_fds, len(os.listdir("/proc/%d/fd" % wg.pid)))
                # a sanitizer build accepts slower than this loop connects: past the listen
                # queue's 1,024 the kernel drops handshakes it then retries for seconds, which
                # is the kernel's, not the daemon's; each hundred waits until it is accepted
                wait_for(lambda: accept_queue(wg.port) == 0, 10, "the daemon to accept what is queued")
        open_socks = {s.fileno(): s for s in socks}

        def closed_by_daemon():
            """How many of the 2,000 the daemon has closed."""
            return 2000 - reap_closed(open_socks)

        def most_closed():
            return closed_by_daemon() >= 2000 - 200 - 1
        wait_for(most_closed, 10, "the daemon to close all but max_connections of 2,000 slow connections",
                 diag=lambda: "%d closed, %d queued to accept" % (closed_by_daemon(), accept_queue(wg.port)))
        # max_connections slow ones are open now: a normal client takes the oldest one's place
        assert len(open_socks) >= 150, "the slow connections timed out before the test got here"
        t0 = time.monotonic()
        r = requests.get(wg.url + "/healthz", timeout=5)
        took = time.monotonic() - t0
        assert r.status_code == 200
        assert took < 1.0, took

        nfds = len(os.listdir("/proc/%d/fd" % wg.pid))
        print("slowloris: 2,000 opened in %.2f s; a normal client served in %.3f s beside %d slow ones; "
              "the daemon held at most %d fds during the flood, %d now (limit 400)"
              % (t0 - t_open, took, len(open_socks), max_fds, nfds))
        assert max(nfds, max_fds) <= 200 + 16 + 40, (nfds, max_fds)   # max_connections + REFUSE_MARGIN + its own
        assert wg.alive()
        # the rest are closed timeout_s after they began
        wait_for(lambda: closed_by_daemon() == 2000, 30, "every slow connection closed after timeout_s")
        healthz_ok(wg)
        assert "Too many open files" not in wg.log()
        wg.wait_log("sent no complete request", timeout=5)
    finally:
        for s in socks:
            s.close()


def test_beyond_max_connections_refused_503_when_all_busy(procs):
    """When every connection is answering a request (no waiting one to close), a new one is
    answered 503 in JSON and closed; once they finish, new clients are served."""
    _, sim, wg = procs.stack(overrides={"server": {"max_connections": "2"},
                                        "upstream": {"timeout_ms": "10000"}, "identity": {"lease_s": "30"}})
    sim.delay(1500, count=2, path_prefix="/v1/messages", method="POST")
    held = [raw_http(wg.port, "POST", "/v1/messages",
                     json.dumps({"to": new_wa_id(), "type": "template", "template": {"name": "x"}}),
                     {"Authorization": "Bearer " + API_TOKEN, "Content-Type": "application/json"})
            for _ in range(2)]
    try:
        sim.wait_for_calls(2, method="POST", path="/v1/messages", answered=False, timeout=5)
        data, closed = exchange(wg.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        one_error(data, 503, closed, "max_connections (2)")
        for s in held:
            data, _ = read_until_close(s, 10)
            assert responses(data)[0][0] != 503, data[:300]
        wait_for(lambda: requests.get(wg.url + "/healthz", timeout=5).status_code == 200, 5,
                 "/healthz once the held requests were answered")
    finally:
        for s in held:
            s.close()


def test_every_answer_carries_the_date(waguard):
    """Every answer has one Date header in HTTP's fixed form (RFC 9110: IMF-fixdate, English
    names, GMT), the server's clock within a second or two; waguard writes it once a second
    rather than for each answer, so it moves on with the clock: answers a second and more apart
    carry later dates.  The gate, a webhook, an error and the metrics all carry it."""
    from email.utils import parsedate_to_datetime
    import re as _re
    fixdate = _re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                          r"|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")
    w = new_wa_id()
    answers = [waguard.gate(w), waguard.webhook({"contacts": [], "messages": []}),
               requests.get(waguard.url + "/v1/nothing-here", timeout=5), requests.get(waguard.url + "/metrics", timeout=5)]
    dates = []
    for r in answers:
        d = r.headers.get("Date")
        assert d and fixdate.match(d), (r.status_code, r.headers)
        assert "," not in d.split(",", 1)[1], d          # one header, not two joined
        at = parsedate_to_datetime(d).timestamp()
        assert abs(at - time.time()) < 3, (d, time.time())
        dates.append(at)
    time.sleep(1.1)
    later = parsedate_to_datetime(waguard.gate(w).headers["Date"]).timestamp()
    assert later > max(dates), (later, dates)


def test_a_burst_beyond_max_connections_makes_room_at_once(waguard_factory):
    """Connections that piled up in the listen queue while the daemon could not accept (a
    stall, a slow start) come in one burst: more than max_connections plus its margin before
    any of them has joined the waiting list.  The daemon still closes the oldest waiting ones
    to make room at once, rather than pausing its listener until timeout_s frees one: most
    are closed within seconds, a normal client is served beside the rest."""
    import signal
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    wg = edge_daemon(waguard_factory, max_connections="50", timeout_s="60")
    socks = []
    os.kill(wg.pid, signal.SIGSTOP)
    try:
        for i in range(400):
            socks.append(slow_client(wg.port, i))
    finally:
        os.kill(wg.pid, signal.SIGCONT)
    try:
        open_socks = {s.fileno(): s for s in socks}

        def closed_by_daemon():
            return 400 - reap_closed(open_socks)

        # timeout_s is 60: anything closed within this wait was closed to make room
        wait_for(lambda: closed_by_daemon() >= 400 - 50 - 16, 15,
                 "the daemon to close the oldest of a burst of 400 slow connections to make room",
                 diag=lambda: "%d closed" % closed_by_daemon())
        r = requests.get(wg.url + "/healthz", timeout=5)
        assert r.status_code == 200
        assert wg.alive()
    finally:
        for s in socks:
            s.close()
