"""Shared helpers for the waguard integration tests: On-Premises webhook payload builders,
HMAC signing, decision/error shape checks, Prometheus parsing, free_port, wait_for (polling
with a deadline) and a tiny WABA upstream stub.  The processes (redis-server, build/waguard)
are in daemon.py.

Import with `from helpers import ...` (conftest.py puts tests/ on sys.path)."""
import hashlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Every reason a send decision may give (CONTRACT.md), in the contract's order.
DECISION_REASONS = (
    "identity_unacknowledged",
    "blocked",
    "contact_invalid",
    "outside_session_window",
    "number_changed",
    "store_unavailable",
    "identity_recently_changed",
)

_wa_counter = itertools.count(1000)
_msg_counter = itertools.count(1)


def new_wa_id():
    """A fresh, well-formed US wa_id (11 digits, country code 1), unique within the session."""
    return "1631555%04d" % (next(_wa_counter) % 10000)


# Users from several countries, with the shapes their numbers really have.  Each entry:
# country calling code, a wa_id template (%04d is filled), and how a person there types
# the same number (international, with '+').  Mexico and Argentina dial differently from
# their wa_id: the contact check maps the dialled number to the wa_id.
WORLD = {
    "US": ("1", "1415555%04d", lambda w: "+1 (%s) %s-%s" % (w[1:4], w[4:7], w[7:])),
    "GB": ("44", "44770090%04d", lambda w: "+44 %s %s" % (w[2:6], w[6:])),
    "IN": ("91", "9198765%04d1", lambda w: "+91 %s %s" % (w[2:7], w[7:])),
    "BR": ("55", "55119876%04d1", lambda w: "+55 %s %s-%s" % (w[2:4], w[4:9], w[9:])),
    "DE": ("49", "49151234%04d", lambda w: "+49 %s %s" % (w[2:5], w[5:])),
    "AR": ("54", "549115612%04d", lambda w: "+54 9 %s %s-%s" % (w[3:5], w[5:9], w[9:])),
    "MX": ("52", "521551234%04d", lambda w: "+52 %s %s %s" % (w[3:5], w[5:9], w[9:])),
    "PH": ("63", "63917555%04d", lambda w: "+63 %s %s %s" % (w[2:5], w[5:8], w[8:])),
    "ID": ("62", "62812345%04d", lambda w: "+62 %s-%s-%s" % (w[2:5], w[5:9], w[9:])),
    "NG": ("234", "234803555%04d", lambda w: "+234 %s %s %s" % (w[3:6], w[6:9], w[9:])),
}
_world_counter = itertools.count(1)


def world_wa_id(country):
    """A fresh wa_id of a user in `country` (a WORLD key), unique within the session."""
    return WORLD[country][1] % (next(_world_counter) % 10000)


def world_dialled(country, wa_id):
    """How a person types wa_id's number, with '+' and the country's own grouping.  For MX
    the result is the dialled number without the mobile '1' (it maps to the wa_id only
    through a contact check); for the others it names the wa_id by itself."""
    if country == "MX":
        return "+52 %s %s %s" % (wa_id[3:5], wa_id[5:9], wa_id[9:])
    return WORLD[country][2](wa_id)


def new_msg_id(prefix="gBGGFlA5FpafAgkOuJbRq"):
    return "%s%08d-t" % (prefix, next(_msg_counter))


def now_s():
    return int(time.time())


# --------------------------------------------------------------------------------------
# On-Premises webhook payloads (PROTOCOL.md)
# --------------------------------------------------------------------------------------

def body(messages=None, contacts=None, statuses=None, errors=None):
    """One webhook body with any of the top-level arrays."""
    b = {}
    if contacts is not None:
        b["contacts"] = list(contacts)
    if messages is not None:
        b["messages"] = list(messages)
    if statuses is not None:
        b["statuses"] = list(statuses)
    if errors is not None:
        b["errors"] = list(errors)
    return b


def identity_change_msg(wa_id, hash_, ts, msg_id=None, user_field="customer", from_=None,
                        with_body=True):
    """A `user_identity_changed` system message item.  user_field: customer | user | None
    (None: the user is only named by `from`).  ts: UNIX seconds."""
    system = {"type": "user_identity_changed", "identity": hash_}
    if with_body:
        system["body"] = "User %s changed" % wa_id
    if user_field:
        system[user_field] = wa_id
    return {
        "from": from_ if from_ is not None else wa_id,
        "id": msg_id or new_msg_id(),
        "timestamp": str(int(ts)),
        "type": "system",
        "system": system,
    }


def identity_change(wa_id, hash_, ts, **kw):
    return body(messages=[identity_change_msg(wa_id, hash_, ts, **kw)])


def inbound_text_msg(wa_id, text="hello", ts=None, msg_id=None, identity=None):
    """An ordinary inbound text message.  identity: None, or a dict
    {"hash":…, "created_timestamp": MILLISECONDS, "acknowledged": bool}."""
    m = {
        "from": wa_id,
        "id": msg_id or new_msg_id(),
        "timestamp": str(int(ts if ts is not None else now_s())),
        "type": "text",
        "text": {"body": text},
    }
    if identity is not None:
        m["identity"] = identity
    return m


def inbound_text(wa_id, **kw):
    return body(contacts=[{"profile": {"name": "Test"}, "wa_id": wa_id}],
                messages=[inbound_text_msg(wa_id, **kw)])


def identity_obj(hash_, created_ms, acknowledged=False):
    return {"acknowledged": acknowledged, "created_timestamp": int(created_ms), "hash": hash_}


def number_changed_msg(old, new, ts=None, msg_id=None, field="new_wa_id"):
    return {
        "from": old,
        "id": msg_id or new_msg_id(),
        "timestamp": str(int(ts if ts is not None else now_s())),
        "type": "system",
        "system": {
            "body": "User A changed from %s to %s" % (old, new),
            field: new,
            "type": "user_changed_number",
        },
    }


def number_changed(old, new, **kw):
    return body(messages=[number_changed_msg(old, new, **kw)])


def contact_result(input_, status, wa_id=None):
    c = {"input": input_, "status": status}
    if wa_id is not None:
        c["wa_id"] = wa_id
    return c


def contacts_callback(*results):
    return body(contacts=list(results))


def status_item(msg_id, recipient, status, ts=None, errors=None):
    s = {
        "id": msg_id,
        "recipient_id": recipient,
        "status": status,
        "timestamp": str(int(ts if ts is not None else now_s())),
    }
    if errors is not None:
        s["errors"] = errors
    return s


def statuses(*items):
    return body(statuses=list(items))


def errors_body(code=1014, title="Internal error", details="test error"):
    return body(errors=[{"code": code, "title": title, "details": details}])


# --------------------------------------------------------------------------------------
# Auth, shapes, metrics
# --------------------------------------------------------------------------------------

def to_bytes(b):
    if b is None:
        return b""
    if isinstance(b, bytes):
        return b
    if isinstance(b, str):
        return b.encode("utf-8")
    return json.dumps(b).encode("utf-8")


def hmac_sig(secret, raw):
    """The X-Hub-Signature-256 header value for raw body bytes."""
    if isinstance(secret, str):
        secret = secret.encode()
    return "sha256=" + hmac.new(secret, to_bytes(raw), hashlib.sha256).hexdigest()


def assert_decision(d, wa_id=None):
    """Checks the send-decision shape of CONTRACT.md; returns d."""
    assert isinstance(d, dict), d
    for k in ("wa_id", "allowed", "reasons", "identity"):
        assert k in d, "decision lacks %r: %r" % (k, d)
    assert isinstance(d["wa_id"], str), d
    if wa_id is not None:
        assert d["wa_id"] == wa_id, d
    assert isinstance(d["allowed"], bool), d
    assert isinstance(d["reasons"], list), d
    for r in d["reasons"]:
        assert r in DECISION_REASONS, "unknown reason %r in %r" % (r, d)
    assert d["allowed"] == (len(d["reasons"]) == 0), "allowed must match an empty reasons list: %r" % d
    ident = d["identity"]
    if ident is not None:
        assert isinstance(ident, dict), d
        assert isinstance(ident.get("hash"), str), d
        assert isinstance(ident.get("created_timestamp"), int) and not isinstance(
            ident.get("created_timestamp"), bool), d
        assert isinstance(ident.get("acknowledged"), bool), d
    return d


def check_gate_response(resp, wa_id=None):
    """A GET /v1/gate answer: 200 when allowed, 423 when denied, the same shape either way."""
    assert resp.status_code in (200, 423), (resp.status_code, resp.text)
    d = assert_decision(resp.json(), wa_id)
    assert (resp.status_code == 200) == d["allowed"], (resp.status_code, d)
    return d


def assert_error_body(resp, code=None):
    """`{"errors":[{"code":<int>,"title":"…","details":"…"}]}`."""
    if code is not None:
        assert resp.status_code == code, (resp.status_code, resp.text)
    try:
        j = resp.json()
    except ValueError:
        raise AssertionError("error body is not JSON: %r" % resp.text)
    assert isinstance(j, dict) and isinstance(j.get("errors"), list) and j["errors"], j
    e = j["errors"][0]
    assert isinstance(e.get("code"), int), j
    assert isinstance(e.get("title"), str), j
    return j


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text → list of (name, {labels}, value)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("unparsable metrics line: %r" % line)
        labels = dict(_LABEL.findall(m.group(3) or ""))
        v = m.group(4)
        value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
        out.append((m.group(1), labels, value))
    return out


def metric_value(samples, name, **labels):
    """Sum of the samples of name whose labels include the given ones (0.0 when none)."""
    total = 0.0
    for n, l, v in samples:
        if n != name:
            continue
        if all(l.get(k) == str(val) for k, val in labels.items()):
            total += v
    return total


def metric_present(samples, name):
    return any(n == name for n, _, _ in samples)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GiveUp(AssertionError):
    """Raised by a wait_for() predicate: stop polling at once and fail with this message
    (e.g. the process being waited for has exited)."""


def wait_for(pred, timeout=10.0, what="condition", interval=0.02, diag=None):
    """Poll pred() until it returns something truthy and return it.  Exceptions count as
    "not yet" (except GiveUp, raised at once).  On timeout: AssertionError naming `what`, the
    last value or exception and diag() when given."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = v
        except GiveUp:
            raise
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


# --------------------------------------------------------------------------------------
# A minimal WABA upstream stub (only what the core tests need: acknowledgements succeed)
# --------------------------------------------------------------------------------------

class StubUpstream:
    """A tiny HTTP server standing in for the WABA client.  PUT /v1/contacts/W/identity answers
    `identity_status` (default 200 with `{}`); everything else 200 `{}`.  Requests are recorded
    as (method, path, headers, body)."""

    def __init__(self, identity_status=200):
        self.identity_status = identity_status
        self.requests = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                with stub.lock:
                    stub.requests.append((self.command, self.path, dict(self.headers), raw))
                    status = 200
                    if self.command == "PUT" and re.match(r"^/v1/contacts/[^/]+/identity$", self.path):
                        status = stub.identity_status
                payload = b"{}" if status < 400 else json.dumps(
                    {"errors": [{"code": 1014, "title": "Internal error", "details": "stub"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def identity_puts(self):
        with self.lock:
            return [(p, b) for (m, p, h, b) in self.requests
                    if m == "PUT" and p.endswith("/identity")]


def cloud(value, number="PN1"):
    """A Cloud API messages webhook: value in its envelope, for business number `number`."""
    value = dict(value, messaging_product="whatsapp", metadata={"phone_number_id": number})
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]}


def cloud_inbound(w=None, uid=None, key_hash=None, ts=None, mid=None, number="PN1"):
    """A Cloud inbound text from wa_id w and/or user id uid, its contact carrying key_hash."""
    contact, msg = {"profile": {"name": "U"}}, {"id": mid or new_msg_id("wamid."),
                                                "timestamp": str(ts or now_s() - 60), "type": "text",
                                                "text": {"body": "hi"}}
    if w:
        contact["wa_id"], msg["from"] = w, w
    if uid:
        contact["user_id"], msg["from_user_id"] = uid, uid
    if key_hash:
        contact["identity_key_hash"] = key_hash
    return cloud({"contacts": [contact], "messages": [msg]}, number)


def gate_decision(wg, who, type_="template", token=None, **q):
    """GET /v1/gate/{who}?type=…&k=v… (every value URL-encoded): the decision, checked to be
    a 200 allowed or a 423 refused."""
    from urllib.parse import quote
    from daemon import API_TOKEN
    path = "/v1/gate/%s?type=%s" % (quote(who, safe=""), type_)
    for k, v in q.items():
        if v is not None:
            path += "&%s=%s" % (k, quote(v, safe=""))
    r = wg.get(path, token=token or API_TOKEN)
    assert r.status_code in (200, 423), r.text
    d = r.json()
    assert (r.status_code == 200) == d["allowed"], d
    return d
