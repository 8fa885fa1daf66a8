#!/usr/bin/python3
"""waba_sim: a simulator of the WhatsApp Business API On-Premises client (/v1).

Used by waguard's integration tests, benchmarks and `make run`.  Python 3 standard library only.

It serves the parts of the /v1 API that waguard calls, as the WABA documentation describes them
(see /work/shared/design/PROTOCOL.md and the contacts seed), plus the Cloud API shapes that
waguard forwards (`/{version}/{pnid}/messages`, `/{version}/{pnid}/marketing_messages`,
`/{version}/{pnid}/block_users`, and the 360dialog variants without version and number id), the
2026 Cloud webhook shapes of business-scoped user ids, and a control surface under `/_sim/` (no
auth) to inject failures, delays and dropped connections, to set what the WABA client knows
about a user's identity, and to read back every call it received.

As a module::

    from waba_sim import WabaSim, make_test_ca
    sim = WabaSim(auth="login").start()
    sim.set_identity("16315551234", "Rc/eg9RQ0JA=", acknowledged=False)
    sim.fail(count=2, status=503, path_prefix="/v1/contacts/")
    ...
    calls = sim.wait_for_calls(1, method="PUT", path_prefix="/v1/contacts/16315551234/identity")
    sim.stop()

As a program::

    python3 tests/waba_sim.py --host 127.0.0.1 --port 9090 [--tls-cert F --tls-key F]
        [--auth login|bearer|header|none] [--username admin --password secret]
        [--token-ttl S] [--api-key K] [--bearer-token T] [--header-name H] [--verbose]
    python3 tests/waba_sim.py --make-ca DIR      # write a test CA + server cert, print paths

It prints `waba_sim listening on URL` once ready and runs until SIGTERM or SIGINT.

Control routes (no auth, JSON bodies; every field optional unless said):
    GET    /_sim/health                    {"ok":true,"url":…}
    GET    /_sim/calls?method=&path_prefix=&path=&since=SEQ   {"calls":[…],"count":N}
    DELETE /_sim/calls  (or POST /_sim/calls/clear)           forget recorded calls
    GET    /_sim/wait?count=1&method=&path_prefix=&path=&timeout=5   200 {"calls"} or 408
    GET    /_sim/state                     identities, blocked (On-Premises), cloud_blocked
           ({pnid:[…]}), cloud_settings_by_pnid, cloud_mismatches, cloud_users, cloud_sent,
           settings (the On-Premises application settings), callbacks, login_count, …
    POST   /_sim/fail   {"count":1,"status":500,"path_prefix","method","code","title",
                         "details","body","headers"}     count null/-1/"all" = until reset
    POST   /_sim/delay  {"ms","count":1,"path_prefix","method"}
    POST   /_sim/drop   {"count":1,"path_prefix","method","mode":"close"|"reset"}
    GET    /_sim/rules; DELETE|POST /_sim/rules {"kind"}     list / clear fail-delay-drop rules
    POST   /_sim/identity {"wa_id","hash","created_timestamp"(ms),"acknowledged"} (required:
           wa_id, hash); GET|DELETE /_sim/identity?wa_id=
    POST   /_sim/blocked {"wa_ids":[…],"blocked":true,"phone_number_id"}  without a number id:
           the On-Premises blocklist; with one: that Cloud business number's block_users list
    POST   /_sim/cloud_webhook {"value":{…},"phone_number_id","url","field":"messages"}
           post_cloud_webhook(): {"ok","status"} (the receiver's HTTP status, null when nothing
           answered)
    POST   /_sim/cloud_user {"user_id","wa_id","username","parent_user_id","phone_hidden",
           "name"} (required: user_id)   cloud_user(); GET|DELETE /_sim/cloud_user?user_id=
           (GET also ?wa_id=)
    POST   /_sim/cloud_event {"kind","post":true,"url", builder arguments…}   cloud_event():
           build (kind inbound|status|user_id_update|user_changed_user_id|user_changed_number)
           and post: {"field","value","status","ok"}; "post":false only builds
    GET    /_sim/sent?id=WAMID             sent_message(): who a Cloud send went to, or 404
    GET    /_sim/app_settings              {"settings": app_settings()}
    POST   /_sim/expire_tokens             {"ok":true,"expired":N}
    POST   /_sim/config {knob: value, …}   see _KNOB_DEFAULTS and _CONFIG_AUTH_KEYS
    POST   /_sim/reset                     state, calls, rules, knobs, credentials back to start

Each recorded call: {"seq","method","path","query","headers":{Authorization, D360-API-KEY,
Content-Type},"body" (parsed JSON or null),"raw_body" (when not JSON),"status" (null when
dropped),"dropped","sent","time" (epoch s),"duration_ms","answer"}.

On-Premises (/v1) answers worth knowing:
    GET|PATCH /v1/settings/application   GET: {"settings":{"application":{…}},"meta"} holding
           show_security_notifications (knob show_security_notifications seeds it; default
           false) and webhooks {"url"} (default ""); PATCH deep-merges the body, 200 {"meta"};
           knob settings_patch_status (e.g. 403, 500) makes it fail with the WABA envelope and
           change nothing.  sim.app_settings() -> the stored dict.
    POST /v1/messages   400 with errors[0].code 480 to a user whose newest identity is not
           acknowledged (knob block_unacked_sends); knob send_refusal "480" forces that answer;
           knob messages_errors_200 [codes] answers 200 with errors[] and sends nothing.
    PUT /v1/contacts/{wa_id}/identity   knob identity_put_errors [codes] answers 200 with
           errors[] and acknowledges nothing.

Cloud API (Graph) surface, several business numbers: blocks (`block_users`) and settings are
kept per phone number id (pnid) as Meta keeps them; the paths without a number id (360dialog)
use the knob default_phone_number_id ("PNID").  The identity stays per user (set_identity).
    POST|DELETE|GET /{version}/{pnid}/block_users   added_users / removed_users; a partial
           failure is 400 with failed_users and error 139100 (knobs invalid_numbers,
           require_engaged+engaged, block_fail_users); GET pages with limit, after, before,
           paging.next.  sim.cloud_blocked(pnid) -> [ids]; set_blocked(id, True, pnid=…).
    POST|GET /{version}/{pnid}/settings   stored per pnid (state cloud_settings_by_pnid); knob
           settings_error makes the POST answer Graph's error envelope.
    POST /{version}/{pnid}/messages (also /messages, and /{version}/{pnid}/marketing_messages,
           the Marketing Messages API, handled and recorded the same way)   `to` (a phone) or
           `recipient` (a user id; `to` wins when both are given); answers
           {"messaging_product","contacts":[{"input","wa_id"?,"user_id"?}],"messages":[{"id"}]}
           with the registry's other id filled in (no wa_id for a phone-hidden user addressed by
           user id).  recipient_identity_key_hash checked against the user's current hash (held
           under either id); knob cloud_mismatch "error" (400, 137000), "accept" or "status"
           (200, then a failed status with 137000 posted to the Cloud webhook, 2026 shape: no
           contacts, no recipient_user_id when sent by phone, no recipient_id when the phone is
           hidden).  Knob send_refusal "137000" refuses every send with 400/137000; knob
           auth_templates (["otp_login","auth_code"]): a template with one of those names sent
           only to a user id is refused with 400 and error 131062.  Each send is recorded per
           wamid: sim.sent_message(wamid) -> {"by":"phone"|"user_id","to","wa_id","user_id",
           "phone_number_id","endpoint","recipient_identity_key_hash",…}.
    sim.post_cloud_webhook(value, pnid=None) posts any `value` in the Cloud envelope to
           cloud_webhook_url (else settings.webhooks.url), signed X-Hub-Signature-256 with
           app_secret and with Authorization: Bearer webhook_token when those knobs are set;
           each delivery is recorded in state callbacks ({"kind":"cloud","url","status","body"}).
           post_cloud_webhook(value, pnid, url, field="messages"): the change's field.

Business-scoped user ids (2026): `CC.` and up to 128 letters/digits (US.13491208655302741918),
parents `CC.ENT.…`.  A registry of users:
    sim.cloud_user(user_id, wa_id=None, username=None, parent_user_id=None, phone_hidden=False,
           name=None)   register/replace; phone_hidden=True: the user adopted a username and has
           not talked to the business number for 30 days, so webhooks built for them carry no
           wa_id, from or recipient_id.  get_cloud_user(id or phone), remove_cloud_user(id).
Builders of a Cloud webhook `value` (metadata.phone_number_id = pnid or the default), to post
with post_cloud_webhook(value, pnid=…, field=…) or all in one with sim.cloud_event(kind, …):
    inbound_value(user_id, text="hi", msg_id=None, ts=None, identity_key_hash=None, pnid=None)
           contacts [{profile {name, username}, wa_id?, user_id, parent_user_id?,
           identity_key_hash?}], messages [{from?, from_user_id, from_parent_user_id?, id,
           timestamp, type "text", text {body}}]
    status_value(msg_id, status, user_id=None, to_phone=None, errors=None,
           identity_key_hash=None, pnid=None)   statuses [{id, status, timestamp, recipient_id?,
           recipient_user_id?, recipient_parent_user_id?, recipient_identity_key_hash?,
           errors?}]; sent/delivered/read carry contacts beside statuses, failed ones do not, nor
           recipient_user_id when sent by phone (to_phone); with neither user_id nor to_phone
           the recipient (and pnid) recorded for the wamid is used
    user_id_update_value(old_user_id, new_user_id, wa_id=None, old_parent=None, new_parent=None,
           ts=None, pnid=None)   field "user_id_update": {user_id_update [{wa_id?, detail,
           user_id {previous, current}, parent_user_id {previous, current}?, timestamp}]}
    user_changed_user_id_value(old, new, old_parent=None, new_parent=None, msg_id=None, ts=None,
           pnid=None)   system message user_changed_user_id (from_user_id, system user_id,
           previous_user_id; no contacts, no phone number)
    user_changed_number_value(old_wa_id, new_wa_id, new_user_id=None, previous_user_id=None,
           previous_parent_user_id=None, parent_user_id=None, msg_id=None, ts=None, pnid=None)
           system message user_changed_number (system wa_id the new number, user_id (made up
           when None: a number change regenerates it), previous_user_id,
           previous_parent_user_id; no contacts)
    The three change builders also move the user in the registry (identities stay where they
    are held).
"""

import argparse
import base64
import binascii
import copy
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import ssl
import string
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

__all__ = ["WabaSim", "make_test_ca", "make_wrong_cert", "make_self_signed_cert",
           "make_wrong_host_cert", "normalise_phone", "main"]

DEFAULT_VERSION = "2.53.1"
AUTH_MODES = ("login", "bearer", "header", "none")

# WABA error codes used here (On-Premises API "Error and Status Messages").
ERR_GENERIC = (1000, "Generic error")
ERR_ACCESS_DENIED = (1005, "Access denied")
ERR_NOT_FOUND = (1006, "Resource not found")
ERR_MISSING = (1008, "Required parameter is missing")
ERR_INVALID = (1009, "Parameter value is not valid")
ERR_NOT_READY = (1011, "Service not ready")
ERR_INTERNAL = (1014, "Internal error")
ERR_TOO_MANY = (1015, "Too many requests")
ERR_OVERLOADED = (1016, "System overloaded")
ERR_IDENTITY = (480, "User identity changed")
ERR_NOT_ENGAGED = (2048, "Not engaged contact")
ERR_WINDOW = (470, "Message failed to send because more than 24 hours have passed since the "
                   "customer last replied to this number")

# Titles of the codes above, for errors[] built from a bare code (identity_put_errors, …).
_ERR_TITLES = dict((ERR_GENERIC, ERR_ACCESS_DENIED, ERR_NOT_FOUND, ERR_MISSING, ERR_INVALID,
                    ERR_NOT_READY, ERR_INTERNAL, ERR_TOO_MANY, ERR_OVERLOADED, ERR_IDENTITY,
                    ERR_NOT_ENGAGED, ERR_WINDOW))

# Cloud API (Graph) codes used here, with the titles put in statuses[].errors[].
ERR_CLOUD_MISMATCH = (137000, "Identity key mismatch")
ERR_CLOUD_AUTH_BSUID = (131062, "Authentication templates cannot be sent to business-scoped "
                                "user IDs; send to the phone number")
_CLOUD_ERR_TITLES = dict((ERR_CLOUD_MISMATCH, ERR_CLOUD_AUTH_BSUID,
                          (131000, "Something went wrong"), (131026, "Message undeliverable"),
                          (131047, "Re-engagement message"), (131049, "This message was not "
                           "delivered to maintain healthy ecosystem engagement")))

_STATUS_TO_ERR = {
    400: ERR_INVALID, 401: ERR_ACCESS_DENIED, 403: ERR_ACCESS_DENIED, 404: ERR_NOT_FOUND,
    429: ERR_TOO_MANY, 500: ERR_INTERNAL, 502: ERR_GENERIC, 503: ERR_NOT_READY,
    504: ERR_OVERLOADED,
}

# Knobs settable by configure() / POST /_sim/config, with their defaults.
_KNOB_DEFAULTS = {
    # POST /v1/messages to a user whose newest identity is not acknowledged -> 400, code 480.
    "block_unacked_sends": True,
    # HTTP status of a successful POST /v1/messages.
    "messages_status": 201,
    # Body of a successful PUT /v1/contacts/{wa_id}/identity: "{}", "null" or "" (empty).
    "identity_put_body": "{}",
    # How GET .../identity renders "acknowledged": "bool" (the example) or "string" (the table).
    "identity_acknowledged_format": "bool",
    # Country code put in front of numbers given without '+'.
    "home_country_code": "1",
    # None: every well-formed number is valid; else a list/set of valid wa_ids or inputs.
    "valid_numbers": None,
    # {normalised dialled number: wa_id} for countries whose wa_id is not the dialled number
    # (Mexico's mobile '1', Argentina's '9'): POST /v1/contacts answers that wa_id.
    "wa_id_map": {},
    # Numbers (inputs or wa_ids) answered "invalid" / "failed" by POST /v1/contacts.
    "invalid_numbers": [],
    "failed_numbers": [],
    # Answer "processing" for valid numbers when blocking != "wait", and post the final result
    # as a contacts callback to settings.webhooks.url after callback_delay_ms.
    "contacts_processing": False,
    "callback_delay_ms": 50,
    "webhook_headers": {},
    # Block/report/Cloud block need the user to have engaged (be in `engaged`) -> 2048 / 131047.
    "require_engaged": False,
    "engaged": [],
    # Cloud API send with a stale recipient_identity_key_hash: "error" (400, code 137000),
    # "accept" (200; the mismatch is only recorded in state["cloud_mismatches"]) or "status"
    # (200 with a message id, then a signed `failed` status with error 137000 is posted to the
    # Cloud webhook after callback_delay_ms; the message is recorded with failed_code 137000).
    "cloud_mismatch": "error",
    # The failed status of cloud_mismatch="status" also carries the user's current hash as
    # statuses[].recipient_identity_key_hash (Meta's payload is unconfirmed: off by default).
    "mismatch_status_includes_hash": False,
    # Where Cloud webhooks go (the 137000 status, post_cloud_webhook); None: the On-Premises
    # settings.webhooks.url (PATCH /v1/settings/application) if set.
    "cloud_webhook_url": None,
    # Cloud webhooks are signed X-Hub-Signature-256: sha256=HMAC-SHA256(app_secret, raw body)
    # when set, and carry Authorization: Bearer webhook_token when set (webhook_headers too).
    "app_secret": None,
    "webhook_token": None,
    # The Cloud envelope's entry[].id and metadata.display_phone_number.
    "waba_id": "WABA_ID",
    "display_phone_number": "15550001111",
    # The business number of 360dialog-style paths (/messages, /block_users: no number id) and
    # of post_cloud_webhook without a pnid.
    "default_phone_number_id": "PNID",
    # Users (inputs or wa_ids/user ids) whose Cloud block/unblock always fails with a per-user
    # 139100 error in failed_users (the answer is 400 with added/removed_users and failed_users).
    "block_fail_users": [],
    # POST /{version}/{pnid}/settings answers Graph's error envelope: None, or {"status":400,
    # "code":N,"message":"…","details":"…"(opt),"error_subcode":N(opt),
    # "phone_number_ids":[…](opt: only these numbers; all when absent)}.
    "settings_error": None,
    # "meta.version" in answers.
    "version": DEFAULT_VERSION,
    # The On-Premises application setting show_security_notifications the client starts with
    # (GET /v1/settings/application); setting the knob also sets the stored value.
    "show_security_notifications": False,
    # HTTP status of PATCH /v1/settings/application: 2xx merges the body; anything else answers
    # the WABA error envelope (code from the status, as for fail()) and changes nothing.
    "settings_patch_status": 200,
    # None, or a list of error codes (or {"code","title","details"} objects): PUT
    # /v1/contacts/{wa_id}/identity answers HTTP 200 with those errors[] and acknowledges nothing.
    "identity_put_errors": None,
    # The same for POST /v1/messages: HTTP 200 with errors[], nothing sent.
    "messages_errors_200": None,
    # Force a send's refusal: None; "480": POST /v1/messages answers 400 with errors[0].code 480
    # (whatever the identity); "137000": Cloud sends (/messages, /marketing_messages) answer 400
    # with Graph's envelope, code 137000 (whatever the hash).  Each value touches its API only.
    "send_refusal": None,
    # Authentication-category template names (one-tap, zero-tap, copy-code): a Cloud template
    # send with one of these names addressed only by a business-scoped user id is refused with
    # 400 and Graph's error 131062, nothing sent.
    "auth_templates": ["otp_login", "auth_code"],
}

_CONFIG_AUTH_KEYS = ("auth", "username", "password", "token_ttl_s", "api_key", "bearer_token",
                     "api_key_header")


def _now_ms():
    return int(time.time() * 1000)


def _expires_after(ts):
    d = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M:%S+00:00")


# A business-scoped user id (CC.DIGITS) or a parent one (CC.ENT.DIGITS), as _wa_key keeps them;
# the registry (cloud_user) checks the stricter forms: up to 128 letters/digits after the dots.
_BSUID = re.compile(r"[A-Za-z]{2}\.(?:ENT\.)?[0-9A-Za-z]+")
_USER_ID_RE = re.compile(r"[A-Za-z]{2}\.[0-9A-Za-z]{1,128}")
_PARENT_ID_RE = re.compile(r"[A-Za-z]{2}\.ENT\.[0-9A-Za-z]{1,128}")


def _wa_key(value):
    """A wa_id as given in a path or `to`: digits only (a '+' is dropped), BSUIDs kept."""
    if value is None:
        return None
    s = str(value).strip()
    if _BSUID.fullmatch(s):
        return s
    return re.sub(r"\D", "", s) or None


def normalise_phone(value, home_country_code="1"):
    """The contacts seed's rule: keep the digits; a leading '+' means they start with the country
    code, otherwise the home country code is put in front.  Business-scoped user ids (CC.DIGITS)
    are kept as they are.  Returns None when there is nothing dialable."""
    key = _wa_key(value)
    if key is None or _BSUID.fullmatch(key) or str(value).strip().startswith("+"):
        return key
    return str(home_country_code) + key


def _message_id():
    alphabet = string.ascii_letters + string.digits
    return "gBEG" + "".join(secrets.choice(alphabet) for _ in range(22))


def _wamid():
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()


def _to_list(v):
    if v is None:
        return None
    if isinstance(v, (str, bytes)):
        return [v]
    return list(v)


class _Rule:
    """One fail/delay/drop instruction: applies to the next `count` matching calls
    (count None = every matching call until reset)."""

    def __init__(self, kind, count=1, path_prefix=None, method=None, **params):
        if count is not None:
            count = int(count)
            if count < 0:
                count = None
        self.kind = kind
        self.count = count
        self.path_prefix = path_prefix or None
        self.method = method.upper() if method else None
        self.params = params
        self.used = 0

    def matches(self, method, path):
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method != method:
            return False
        if self.path_prefix and not path.startswith(self.path_prefix):
            return False
        return True

    def consume(self):
        self.used += 1
        if self.count is not None:
            self.count -= 1

    def to_json(self):
        d = {"kind": self.kind, "remaining": self.count, "path_prefix": self.path_prefix,
             "method": self.method, "used": self.used}
        d.update(self.params)
        return d


class _ApiError(Exception):
    def __init__(self, status, code, title, details, cloud=False, extra=None, headers=None):
        super().__init__(details)
        self.status = status
        self.code = code
        self.title = title
        self.details = details
        self.cloud = cloud
        self.extra = extra
        self.headers = headers or {}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, handler, sim, ssl_ctx):
        self.sim = sim
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host name (getfqdn): skip that.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a client that never
        # completes it cannot stall the accept loop.
        if self.ssl_ctx is not None:
            request.settimeout(10)
            try:
                request = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError, ValueError):
                self.sim._note_tls_failure()
                return
            try:
                self.RequestHandlerClass(request, client_address, self)
            finally:
                try:
                    request.close()
                except OSError:
                    pass
        else:
            self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        if self.sim.verbose:
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "waba_sim/1"
    timeout = 300  # idle keep-alive connections are closed after this

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.sim._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.sim._conn_closed(self.connection)

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.sim.verbose:
            sys.stderr.write("waba_sim: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # --- plumbing ---------------------------------------------------------------------------

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0:
            return b""
        return self.rfile.read(n)

    def _send(self, status, data, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Head and body in one write: two small writes would meet Nagle and delayed ACKs.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and data:
            self._headers_buffer.append(data)
        self.flush_headers()

    def _send_json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _handle(self):
        sim = self.server.sim
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = split.query
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        body, body_ok = None, True
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                body_ok = False
        if path == "/_sim" or path.startswith("/_sim/"):
            try:
                status, obj = sim._control(self.command, path, query, body, body_ok)
            except (ValueError, TypeError, KeyError) as e:
                status, obj = 400, {"error": "%s: %s" % (type(e).__name__, e)}
            self._send_json(status, obj)
            return
        self._serve_api(sim, path, query, raw, body, body_ok)

    def _serve_api(self, sim, path, query, raw, body, body_ok):
        method = self.command
        t0 = time.time()
        rec = sim._record_call(method, path, query, self.headers, raw, body, body_ok)
        drop, delay_ms, fail = sim._take_rules(method, path)
        if delay_ms:
            sim._sleep(delay_ms / 1000.0)
        if drop is not None:
            sim._finish_call(rec, None, t0, dropped=True)
            self.close_connection = True
            try:
                if drop.params.get("mode") == "reset":
                    # SO_LINGER 0: the close (once rfile/wfile let go) sends an RST.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        hdrs = {}
        if fail is not None:
            status, obj, hdrs = sim._fail_answer(fail, path)
        else:
            try:
                status, obj, hdrs = sim._dispatch(method, path, query, self.headers, body, body_ok)
            except _ApiError as e:
                status, obj, hdrs = sim._error_answer(e)
            except Exception as e:  # a bug in the simulator: answer 500, keep serving
                if sim.verbose:
                    import traceback
                    traceback.print_exc()
                status, obj, hdrs = sim._error_answer(
                    _ApiError(500, ERR_INTERNAL[0], ERR_INTERNAL[1], "simulator error: %r" % e))
        # Recorded before the answer leaves, so a client that got its answer finds the call
        # complete in .calls; "sent" turns true once the bytes are written.
        sim._finish_call(rec, status, t0, answer=obj)
        try:
            if isinstance(obj, _RawBody):
                self._send(status, obj.data, obj.content_type, hdrs)
            else:
                self._send_json(status, obj, hdrs)
            sim._mark_sent(rec)
        except OSError:
            self.close_connection = True


class _RawBody:
    def __init__(self, data, content_type="application/json"):
        self.data = data
        self.content_type = content_type


class WabaSim:
    """A WABA On-Premises client simulator.  All state lives on the object and is guarded by
    self.lock; read it with the helper methods (state(), calls, get_identity()) or under the
    lock."""

    def __init__(self, host="127.0.0.1", port=0, tls_cert=None, tls_key=None, auth="login",
                 username="admin", password="secret", token_ttl_s=7 * 86400, api_key=None,
                 bearer_token=None, api_key_header="D360-API-KEY", verbose=False,
                 max_calls=100000):
        if auth not in AUTH_MODES:
            raise ValueError("auth must be one of %s" % (AUTH_MODES,))
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        self.host = host
        self.port = int(port)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.verbose = verbose
        self.max_calls = max_calls
        self._auth_initial = dict(auth=auth, username=username, password=password,
                                  token_ttl_s=token_ttl_s, api_key=api_key,
                                  bearer_token=bearer_token, api_key_header=api_key_header)
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._server = None
        self._thread = None
        self._stop_event = threading.Event()
        self._conns = set()
        self._seq = 0
        self._reset_locked()

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def scheme(self):
        return "https" if self.tls_cert else "http"

    @property
    def url(self):
        host = self.host
        if ":" in host and not host.startswith("["):
            host = "[%s]" % host
        return "%s://%s:%d" % (self.scheme, host, self.port)

    @property
    def running(self):
        return self._server is not None

    def start(self):
        """Start serving in a background thread; returns self.  After stop(), start() serves
        again on the same port with the state kept (an upstream that went away and came back)."""
        if self._server is not None:
            return self
        ctx = None
        if self.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("_ServerF", (_Server,), {"address_family": family})
        self._stop_event = threading.Event()
        self._server = server_cls((self.host, self.port), _Handler, self, ctx)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="waba_sim", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening and cut every open connection (in-flight answers are lost)."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._stop_event.set()
        server.shutdown()
        server.server_close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _conn_opened(self, conn):
        with self.lock:
            self._conns.add(conn)
            self.connections_total += 1

    def _conn_closed(self, conn):
        with self.lock:
            self._conns.discard(conn)

    def _note_tls_failure(self):
        with self.lock:
            self.tls_failures += 1

    def _sleep(self, seconds):
        self._stop_event.wait(seconds)

    # --- state and knobs --------------------------------------------------------------------

    def _reset_locked(self):
        a = self._auth_initial
        self.auth = a["auth"]
        self.username = a["username"]
        self.password = a["password"]
        self.token_ttl_s = a["token_ttl_s"]
        self.api_key = a["api_key"]
        self.bearer_token = a["bearer_token"]
        self.api_key_header = a["api_key_header"]
        for k, v in _KNOB_DEFAULTS.items():
            setattr(self, k, copy.deepcopy(v))
        self.identities = {}        # wa_id -> {"hash","created_timestamp","acknowledged","history"}
        self.blocked = {}           # wa_id -> {"time", "reason"} (insertion ordered): /v1
        self.cloud_blocks = {}      # pnid -> {wa_id or user id -> {"time","reason"}}: Cloud
        self.tokens = {}            # token -> expiry (epoch seconds)
        self.login_count = 0
        self.login_failures = 0
        # On-Premises application settings (GET/PATCH /v1/settings/application)
        self.settings = {"show_security_notifications": bool(self.show_security_notifications),
                         "webhooks": {"url": ""}}
        self.cloud_users = {}       # user id -> {"user_id","wa_id","username",…}: cloud_user()
        self.key_seen = {}          # user -> (identity_key_hash, timestamp) of its last inbound_value
        self.cloud_sent = {}        # wamid -> who a Cloud send went to (sent_message())
        self.cloud_settings = {}    # every settings POST merged, whatever the number
        self.cloud_settings_by_pnid = {}   # pnid -> settings POSTed for that number
        self.messages = []          # accepted sends
        self._messages_total = 0
        self.contact_checks = {}    # wa_id or input -> last status
        self.reports = []
        self.callbacks = []         # contacts callbacks posted (url, status/error)
        self.cloud_mismatches = []
        self._calls = []
        self._rules = []            # fail/delay/drop rules, in the order given
        self.tls_failures = 0
        self.connections_total = getattr(self, "connections_total", 0)

    def reset(self):
        """Forget all state, calls and rules; knobs and credentials back to the start values."""
        with self.lock:
            self._reset_locked()
            self._cond.notify_all()

    def configure(self, **knobs):
        """Set knobs (see _KNOB_DEFAULTS) and/or credentials (auth, username, password,
        token_ttl_s, api_key, bearer_token, api_key_header)."""
        with self.lock:
            for k, v in knobs.items():
                if k not in _KNOB_DEFAULTS and k not in _CONFIG_AUTH_KEYS:
                    raise KeyError("unknown knob %r" % k)
                if k == "auth" and v not in AUTH_MODES:
                    raise ValueError("auth must be one of %s" % (AUTH_MODES,))
                if k == "identity_put_body" and v not in ("{}", "null", ""):
                    raise ValueError("identity_put_body must be '{}', 'null' or ''")
                if k == "cloud_mismatch" and v not in ("error", "accept", "status"):
                    raise ValueError("cloud_mismatch must be 'error', 'accept' or 'status'")
                if k == "settings_error" and v is not None:
                    if not isinstance(v, dict):
                        raise ValueError("settings_error must be null or an object")
                    v = dict(v)
                    v["status"] = int(v.get("status", 400))
                    v["code"] = int(v.get("code", 100))
                    v.setdefault("message", "Invalid parameter")
                    if v.get("phone_number_ids") is not None:
                        v["phone_number_ids"] = [str(x) for x in _to_list(v["phone_number_ids"])]
                if k == "default_phone_number_id":
                    v = str(v)
                if k in ("identity_put_errors", "messages_errors_200") and v is not None:
                    v = [_error_spec(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
                    if not v:
                        raise ValueError("%s must be null or a non-empty list of codes" % k)
                if k == "send_refusal" and v is not None:
                    v = str(v)
                    if v not in ("480", "137000"):
                        raise ValueError("send_refusal must be null, '480' or '137000'")
                if k == "settings_patch_status":
                    v = int(v)
                if k == "show_security_notifications":
                    v = bool(v)
                    self.settings["show_security_notifications"] = v
                if k == "auth_templates":
                    v = [str(x) for x in (_to_list(v) or [])]
                if k in ("valid_numbers",) and v is not None:
                    v = list(_to_list(v))
                if k in ("invalid_numbers", "failed_numbers", "engaged", "block_fail_users"):
                    v = list(_to_list(v) or [])
                if k == "home_country_code":
                    v = str(v).lstrip("+")
                setattr(self, k, v)
        return self

    def knobs(self):
        with self.lock:
            d = {k: copy.deepcopy(getattr(self, k)) for k in _KNOB_DEFAULTS}
            d.update({k: getattr(self, k) for k in ("auth", "username", "token_ttl_s",
                                                     "api_key_header")})
            return d

    def fail(self, count=1, status=500, path_prefix=None, method=None, code=None, title=None,
             details=None, body=None, headers=None):
        """Answer the next `count` matching calls (count None or -1: all of them until reset or
        clear_rules) with HTTP `status` and the WABA error envelope (or the Graph error shape on
        Cloud API paths).  `body` replaces the whole answer (a dict, or a str sent as is)."""
        status = int(status)
        dcode, dtitle = _STATUS_TO_ERR.get(status, ERR_GENERIC)
        rule = _Rule("fail", count, path_prefix, method, status=status,
                     code=int(code) if code is not None else dcode,
                     title=title if title is not None else dtitle,
                     details=(details if details is not None
                              else "Injected failure (HTTP %d)" % status),
                     body=body, headers=dict(headers or {}))
        with self.lock:
            self._rules.append(rule)
        return rule.to_json()

    def delay(self, ms, count=1, path_prefix=None, method=None):
        """Hold the answer of the next `count` matching calls (None or -1: all) for `ms`."""
        rule = _Rule("delay", count, path_prefix, method, ms=float(ms))
        with self.lock:
            self._rules.append(rule)
        return rule.to_json()

    def drop(self, count=1, path_prefix=None, method=None, mode="close"):
        """Read the next `count` matching requests and close the connection without an answer.
        mode "close" sends a FIN, "reset" an RST."""
        if mode not in ("close", "reset"):
            raise ValueError("mode must be 'close' or 'reset'")
        rule = _Rule("drop", count, path_prefix, method, mode=mode)
        with self.lock:
            self._rules.append(rule)
        return rule.to_json()

    def clear_rules(self, kind=None):
        with self.lock:
            self._rules = [r for r in self._rules if kind is not None and r.kind != kind]

    def rules(self):
        with self.lock:
            return [r.to_json() for r in self._rules
                    if r.count is None or r.count > 0]

    def set_identity(self, wa_id, hash, created_timestamp=None, acknowledged=False):
        """Set the newest identity the WABA client holds for a user (created_timestamp in
        milliseconds, default now).  The previous hash, if any, goes to the history."""
        key = _wa_key(wa_id)
        if not key:
            raise ValueError("wa_id has no digits")
        if created_timestamp is None:
            created_timestamp = _now_ms()
        with self.lock:
            cur = self.identities.get(key)
            history = list(cur["history"]) if cur else []
            if cur and cur["hash"] != hash:
                history.append({"hash": cur["hash"], "created_timestamp": cur["created_timestamp"],
                                "acknowledged": cur["acknowledged"]})
            self.identities[key] = {"hash": str(hash), "created_timestamp": int(created_timestamp),
                                    "acknowledged": bool(acknowledged), "history": history,
                                    "acked_at": None, "put_count": cur["put_count"] if cur else 0}
            return self._identity_public(key)

    def remove_identity(self, wa_id):
        with self.lock:
            return self.identities.pop(_wa_key(wa_id), None) is not None

    def get_identity(self, wa_id):
        with self.lock:
            return self._identity_public(_wa_key(wa_id))

    def _identity_public(self, key):
        cur = self.identities.get(key)
        if cur is None:
            return None
        return {"wa_id": key, "hash": cur["hash"], "created_timestamp": cur["created_timestamp"],
                "acknowledged": cur["acknowledged"], "put_count": cur["put_count"],
                "history": copy.deepcopy(cur["history"])}

    def set_blocked(self, wa_id, blocked=True, pnid=None):
        """Block or unblock a user as if done elsewhere: on the On-Premises client (pnid None),
        or on the Cloud API business number `pnid` (what GET block_users then lists)."""
        key = _wa_key(wa_id)
        with self.lock:
            table = self.blocked if pnid is None else self.cloud_blocks.setdefault(str(pnid), {})
            if blocked:
                table.setdefault(key, {"time": time.time(), "reason": None})
            else:
                table.pop(key, None)

    def is_blocked(self, wa_id, pnid=None):
        with self.lock:
            if pnid is None:
                return _wa_key(wa_id) in self.blocked
            return _wa_key(wa_id) in self.cloud_blocks.get(str(pnid), {})

    def cloud_blocked(self, pnid=None):
        """The users blocked on Cloud API business number `pnid` (None: the
        default_phone_number_id knob), in the order they were blocked."""
        with self.lock:
            if pnid is None:
                pnid = self.default_phone_number_id
            return list(self.cloud_blocks.get(str(pnid), {}))

    def expire_tokens(self):
        """Every token issued so far is expired from now on."""
        with self.lock:
            n = len(self.tokens)
            for t in self.tokens:
                self.tokens[t] = 0
            return n

    def app_settings(self):
        """The stored On-Premises application settings (what GET /v1/settings/application
        answers under settings.application): show_security_notifications, webhooks, and
        whatever PATCH merged in."""
        with self.lock:
            return copy.deepcopy(self.settings)

    def state(self):
        with self.lock:
            now = time.time()
            return {
                "identities": {k: self._identity_public(k) for k in self.identities},
                "blocked": list(self.blocked),
                "login_count": self.login_count,
                "login_failures": self.login_failures,
                "tokens_valid": sum(1 for e in self.tokens.values() if e > now),
                "tokens_total": len(self.tokens),
                "settings": copy.deepcopy(self.settings),
                "cloud_users": copy.deepcopy(self.cloud_users),
                "cloud_sent": copy.deepcopy(list(self.cloud_sent.values())[-1000:]),
                "cloud_settings": copy.deepcopy(self.cloud_settings),
                "cloud_settings_by_pnid": copy.deepcopy(self.cloud_settings_by_pnid),
                "cloud_blocked": {p: list(t) for p, t in self.cloud_blocks.items()},
                "messages": copy.deepcopy(self.messages[-1000:]),
                "messages_total": self._messages_total,
                "contact_checks": dict(self.contact_checks),
                "reports": copy.deepcopy(self.reports),
                "callbacks": copy.deepcopy(self.callbacks),
                "cloud_mismatches": copy.deepcopy(self.cloud_mismatches),
                "calls_total": self._seq,
                "rules": self.rules(),
                "knobs": self.knobs(),
                "tls_failures": self.tls_failures,
                "connections_total": self.connections_total,
                "connections_open": len(self._conns),
            }

    # --- calls ------------------------------------------------------------------------------

    @property
    def calls(self):
        """Copies of the calls received (not /_sim/ ones), oldest first."""
        with self.lock:
            return [dict(c) for c in self._calls]

    def calls_matching(self, method=None, path_prefix=None, path=None):
        m = method.upper() if method else None
        with self.lock:
            return [dict(c) for c in self._calls
                    if (m is None or c["method"] == m)
                    and (path_prefix is None or c["path"].startswith(path_prefix))
                    and (path is None or c["path"] == path)]

    def clear_calls(self):
        with self.lock:
            self._calls = []

    def wait_for_calls(self, count=1, method=None, path_prefix=None, path=None, timeout=5.0,
                       answered=True):
        """Wait until at least `count` matching calls were received (and, with answered=True,
        answered or dropped).  Returns them; raises TimeoutError with what was seen."""
        m = method.upper() if method else None
        deadline = time.monotonic() + timeout

        def match():
            return [dict(c) for c in self._calls
                    if (m is None or c["method"] == m)
                    and (path_prefix is None or c["path"].startswith(path_prefix))
                    and (path is None or c["path"] == path)
                    and (not answered or c["status"] is not None or c["dropped"])]
        with self._cond:
            while True:
                got = match()
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("waited %.1fs for %d %s %s call(s); got %d"
                                       % (timeout, count, m or "*", path or path_prefix or "*",
                                          len(got)))
                self._cond.wait(min(left, 0.5))

    def wait_for_callbacks(self, count=1, kind=None, timeout=5.0):
        """Wait until at least `count` webhook deliveries were made (kind "cloud": Cloud
        webhooks only; "contacts": contacts callbacks only); returns copies of them (each with
        its "status", null when nothing answered).  Raises TimeoutError."""
        deadline = time.monotonic() + timeout

        def match():
            return [copy.deepcopy(c) for c in self.callbacks
                    if kind is None or c.get("kind", "contacts") == kind]
        with self._cond:
            while True:
                got = match()
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("waited %.1fs for %d %s callback(s); got %d"
                                       % (timeout, count, kind or "any", len(got)))
                self._cond.wait(min(left, 0.5))

    def _record_call(self, method, path, query, headers, raw, body, body_ok):
        hdrs = {}
        for name in ("Authorization", "D360-API-KEY", "Content-Type", self.api_key_header):
            v = headers.get(name)
            if v is not None:
                hdrs[name] = v
        rec = {"method": method, "path": path, "query": query, "headers": hdrs,
               "body": body if body_ok else None,
               "raw_body": None if body_ok else raw.decode("utf-8", "replace"),
               "status": None, "dropped": False, "sent": False, "time": time.time(),
               "duration_ms": None, "answer": None}
        with self._cond:
            self._seq += 1
            rec["seq"] = self._seq
            self._calls.append(rec)
            if len(self._calls) > self.max_calls:
                del self._calls[:len(self._calls) - self.max_calls]
            self._cond.notify_all()
        return rec

    def _finish_call(self, rec, status, t0, dropped=False, answer=None):
        with self._cond:
            rec["status"] = status
            rec["dropped"] = dropped
            rec["duration_ms"] = round((time.time() - t0) * 1000, 3)
            if isinstance(answer, (dict, list)):
                rec["answer"] = answer
            self._cond.notify_all()

    def _mark_sent(self, rec):
        with self._cond:
            rec["sent"] = True
            self._cond.notify_all()

    def _take_rules(self, method, path):
        """Pick the first matching drop and fail rule and add up matching delays."""
        drop = fail = None
        delay_ms = 0.0
        with self.lock:
            for r in self._rules:
                if not r.matches(method, path):
                    continue
                if r.kind == "delay":
                    delay_ms = max(delay_ms, r.params["ms"])
                    r.consume()
                elif r.kind == "drop" and drop is None:
                    drop = r
                    r.consume()
            if drop is None:
                for r in self._rules:
                    if r.kind == "fail" and r.matches(method, path):
                        fail = r
                        r.consume()
                        break
            self._rules = [r for r in self._rules if r.count is None or r.count > 0]
        return drop, delay_ms, fail

    # --- answers ----------------------------------------------------------------------------

    def _meta(self):
        return {"api_status": "stable", "version": self.version}

    def _envelope(self, code, title, details):
        return {"errors": [{"code": code, "title": title, "details": details}],
                "meta": self._meta()}

    def _errors_envelope(self, specs, knob):
        """The WABA envelope of several errors given as codes or objects (a 2xx with errors[])."""
        errs = []
        for x in specs:
            d = {"code": x} if not isinstance(x, dict) else dict(x)
            d.setdefault("title", _ERR_TITLES.get(d["code"], ERR_GENERIC[1]))
            d.setdefault("details", "Injected error %d (knob %s)" % (d["code"], knob))
            errs.append({"code": d["code"], "title": d["title"], "details": d["details"]})
        return {"errors": errs, "meta": self._meta()}

    @staticmethod
    def _graph_error(code, message, details=None, status=400):
        e = {"message": message, "type": "OAuthException", "code": code,
             "fbtrace_id": "A" + secrets.token_hex(10)}
        if details is not None:
            e["error_data"] = {"messaging_product": "whatsapp", "details": details}
        return {"error": e}

    def _error_answer(self, e):
        if e.cloud:
            obj = self._graph_error(e.code, e.title, e.details)
        else:
            obj = self._envelope(e.code, e.title, e.details)
        if e.extra:
            obj.update(e.extra)
        return e.status, obj, e.headers

    def _fail_answer(self, rule, path):
        p = rule.params
        if p.get("body") is not None:
            b = p["body"]
            if isinstance(b, str):
                return p["status"], _RawBody(b.encode()), p["headers"]
            return p["status"], b, p["headers"]
        if _is_cloud_path(path):
            return p["status"], self._graph_error(p["code"], p["title"], p["details"]), p["headers"]
        return p["status"], self._envelope(p["code"], p["title"], p["details"]), p["headers"]

    # --- auth -------------------------------------------------------------------------------

    def _check_auth(self, headers, cloud):
        mode = self.auth
        if mode == "none":
            return
        authz = headers.get("Authorization") or ""
        ok = False
        if mode == "login":
            if authz[:7].lower() == "bearer ":
                tok = authz[7:].strip()
                with self.lock:
                    exp = self.tokens.get(tok)
                ok = exp is not None and exp > time.time()
        elif mode == "bearer":
            ok = authz[:7].lower() == "bearer " and self.bearer_token is not None \
                and secrets.compare_digest(authz[7:].strip(), self.bearer_token)
        elif mode == "header":
            key = headers.get(self.api_key_header)
            ok = key is not None and self.api_key is not None \
                and secrets.compare_digest(key.strip(), self.api_key)
        if not ok:
            if cloud:
                raise _ApiError(401, 190, "Invalid OAuth access token - Cannot parse access token",
                                None, cloud=True)
            raise _ApiError(401, ERR_ACCESS_DENIED[0], ERR_ACCESS_DENIED[1], "Invalid credentials.")

    # --- routing ----------------------------------------------------------------------------

    def _dispatch(self, method, path, query, headers, body, body_ok):
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]

        if path == "/v1/users/login":
            _allow(method, "POST")
            return self._login(headers, body)

        cloud = _is_cloud_path(path)
        self._check_auth(headers, cloud)
        if not body_ok and method in ("POST", "PUT", "PATCH"):
            if cloud:
                raise _ApiError(400, 100, "Invalid parameter", "Request body is not valid JSON",
                                cloud=True)
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1], "Request body is not valid JSON")

        if not cloud and parts[:1] == ["v1"]:
            rest = parts[1:]
            if rest == ["users", "logout"]:
                _allow(method, "POST")
                return self._logout(headers)
            if rest == ["health"]:
                _allow(method, "GET")
                return 200, {"health": {"gateway_status": "connected"}, "meta": self._meta()}, {}
            if rest == ["messages"]:
                _allow(method, "POST")
                return self._send_message(body)
            if rest == ["contacts"]:
                _allow(method, "POST")
                return self._check_contacts(body)
            if rest == ["contacts", "blocklist"]:
                _allow(method, "GET")
                return self._blocklist(q)
            if len(rest) == 3 and rest[0] == "contacts" and rest[2] == "identity":
                _allow(method, "GET", "PUT")
                if method == "GET":
                    return self._get_identity(rest[1])
                return self._put_identity(rest[1], body)
            if len(rest) == 3 and rest[0] == "contacts" and rest[2] in ("block", "unblock",
                                                                           "report"):
                _allow(method, "POST")
                return self._block_action(rest[2], rest[1], body)
            if rest == ["settings", "application"]:
                _allow(method, "GET", "PATCH")
                return self._settings(method, body)
        elif cloud:
            tail = parts[2:] if len(parts) >= 3 and _VERSION_RE.match(parts[0]) else parts
            pnid = parts[1] if tail is not parts else None
            if tail == ["messages"] or tail == ["marketing_messages"] and pnid is not None:
                _allow(method, "POST", cloud=True)
                return self._cloud_send(body, pnid, tail[0])
            if tail == ["block_users"]:
                _allow(method, "POST", "DELETE", "GET", cloud=True)
                return self._cloud_block(method, body, q, pnid)
            if tail == ["settings"]:
                _allow(method, "POST", "GET", cloud=True)
                return self._cloud_settings(method, body, pnid)
        if cloud:
            raise _ApiError(404, 100, "Unsupported request", "Unknown path %s" % path, cloud=True)
        raise _ApiError(404, ERR_NOT_FOUND[0], ERR_NOT_FOUND[1], "Unknown path %s" % path)

    # --- /v1 handlers -----------------------------------------------------------------------

    def _login(self, headers, body):
        authz = headers.get("Authorization") or ""
        user = pw = None
        if authz[:6].lower() == "basic ":
            try:
                user, _, pw = base64.b64decode(authz[6:].strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                user = pw = None
        with self.lock:
            ok = user is not None and user == self.username and pw is not None \
                and secrets.compare_digest(pw, self.password or "")
            if not ok:
                self.login_failures += 1
                raise _ApiError(401, ERR_ACCESS_DENIED[0], ERR_ACCESS_DENIED[1],
                                "Invalid credentials.")
            if isinstance(body, dict) and body.get("new_password"):
                self.password = str(body["new_password"])
            token = "eyJ" + secrets.token_urlsafe(48)
            exp = time.time() + float(self.token_ttl_s)
            self.tokens[token] = exp
            self.login_count += 1
        return 200, {"users": [{"token": token, "expires_after": _expires_after(exp)}],
                     "meta": self._meta()}, {}

    def _logout(self, headers):
        authz = headers.get("Authorization") or ""
        with self.lock:
            self.tokens.pop(authz[7:].strip(), None)
        return 200, {"meta": self._meta()}, {}

    def _get_identity(self, raw_wa_id):
        key = _wa_key(raw_wa_id)
        with self.lock:
            cur = self.identities.get(key) if key else None
            if cur is None:
                raise _ApiError(404, ERR_NOT_FOUND[0], ERR_NOT_FOUND[1],
                                "No identity found for the user %s" % raw_wa_id)
            ack = cur["acknowledged"]
            if self.identity_acknowledged_format == "string":
                ack = "true" if ack else "false"
            return 200, {"contacts": {"hash": cur["hash"],
                                      "created_timestamp": cur["created_timestamp"],
                                      "acknowledged": ack}}, {}

    def _put_identity(self, raw_wa_id, body):
        key = _wa_key(raw_wa_id)
        if not isinstance(body, dict) or "hash" not in body:
            raise _ApiError(400, ERR_MISSING[0], ERR_MISSING[1], "hash is required")
        h = body.get("hash")
        if not isinstance(h, str) or not h:
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1], "hash must be a non-empty string")
        with self.lock:
            cur = self.identities.get(key) if key else None
            if self.identity_put_errors is not None:
                # HTTP 200 carrying errors[]: nothing acknowledged
                if cur is not None:
                    cur["put_count"] += 1
                return 200, self._errors_envelope(self.identity_put_errors,
                                                  "identity_put_errors"), {}
            if cur is None:
                raise _ApiError(404, ERR_NOT_FOUND[0], ERR_NOT_FOUND[1],
                                "No identity found for the user %s" % raw_wa_id)
            cur["put_count"] += 1
            if h != cur["hash"]:
                known = any(x["hash"] == h for x in cur["history"])
                raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                                "Identity hash %s is not the latest for the user%s"
                                % (h, " (an older one)" if known else ""))
            if not cur["acknowledged"]:
                cur["acknowledged"] = True
                cur["acked_at"] = time.time()
            put_body = self.identity_put_body
        if put_body == "":
            return 200, _RawBody(b"", "application/json"), {}
        return 200, _RawBody(put_body.encode()), {}

    def _send_message(self, body):
        if not isinstance(body, dict):
            raise _ApiError(400, ERR_MISSING[0], ERR_MISSING[1], "A JSON message body is required")
        to = body.get("to")
        if not to or not isinstance(to, str):
            raise _ApiError(400, ERR_MISSING[0], ERR_MISSING[1], "to is required")
        key = _wa_key(to)
        if not key:
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1], "to is not a valid WhatsApp ID")
        with self.lock:
            if self.send_refusal == "480":
                raise _ApiError(400, ERR_IDENTITY[0], ERR_IDENTITY[1],
                                "Message not sent: the identity of %s changed and was not "
                                "acknowledged (knob send_refusal)" % key)
            if self.messages_errors_200 is not None:
                return 200, self._errors_envelope(self.messages_errors_200,
                                                  "messages_errors_200"), {}
            cur = self.identities.get(key)
            if self.block_unacked_sends and cur is not None and not cur["acknowledged"]:
                raise _ApiError(400, ERR_IDENTITY[0], ERR_IDENTITY[1],
                                "Message not sent: the identity of %s changed and was not "
                                "acknowledged" % key)
            mid = _message_id()
            self._add_message({"id": mid, "to": key, "type": body.get("type", "text"),
                               "body": body, "time": time.time(), "api": "onprem"})
            status = int(self.messages_status)
        return status, {"messages": [{"id": mid}], "meta": self._meta()}, {}

    def _add_message(self, m):
        self.messages.append(m)
        self._messages_total += 1
        if len(self.messages) > self.max_calls:
            del self.messages[:len(self.messages) - self.max_calls]

    def _contact_status(self, raw):
        wa = normalise_phone(raw, self.home_country_code) if isinstance(raw, str) else None
        names = {x for x in (raw, wa) if isinstance(x, str)}
        if names & set(self.failed_numbers):
            return "failed", None
        if wa is None or len(re.sub(r"\D", "", wa)) > 15 or names & set(self.invalid_numbers):
            return "invalid", None
        if self.valid_numbers is not None and not names & set(self.valid_numbers):
            return "invalid", None
        return "valid", (self.wa_id_map or {}).get(wa, wa)

    def _check_contacts(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
            raise _ApiError(400, ERR_MISSING[0], ERR_MISSING[1], "contacts must be an array")
        blocking = body.get("blocking", "no_wait")
        if blocking not in ("wait", "no_wait"):
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                            "blocking must be 'wait' or 'no_wait'")
        if "force_check" in body and not isinstance(body["force_check"], bool):
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1], "force_check must be a boolean")
        out, final_pending = [], []
        with self.lock:
            for raw in body["contacts"]:
                status, wa = self._contact_status(raw)
                entry = {"input": raw, "status": status}
                if wa is not None:
                    entry["wa_id"] = wa
                self.contact_checks[wa or str(raw)] = status
                if self.contacts_processing and blocking == "no_wait" and status == "valid":
                    final_pending.append(dict(entry))
                    entry["status"] = "processing"
                out.append(entry)
            url = (self.settings.get("webhooks") or {}).get("url")
            delay = self.callback_delay_ms / 1000.0
            hdrs = dict(self.webhook_headers or {})
        if final_pending and url:
            threading.Thread(target=self._post_callback, args=(url, final_pending, delay, hdrs),
                             daemon=True).start()
        return 200, {"contacts": out, "meta": self._meta()}, {}

    def _post_callback(self, url, contacts, delay, hdrs):
        self._sleep(delay)
        data = json.dumps({"contacts": contacts}).encode()
        req = urllib.request.Request(url, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        for k, v in hdrs.items():
            req.add_header(k, v)
        ctx = ssl._create_unverified_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                res = {"url": url, "status": r.status, "contacts": contacts}
        except urllib.error.HTTPError as e:
            res = {"url": url, "status": e.code, "contacts": contacts}
        except Exception as e:  # noqa: BLE001 - reported in state
            res = {"url": url, "status": None, "error": str(e), "contacts": contacts}
        with self._cond:
            self.callbacks.append(res)
            self._cond.notify_all()

    def _block_action(self, action, raw_phone, body):
        wa = normalise_phone(raw_phone, self.home_country_code)
        if wa is None or len(re.sub(r"\D", "", wa)) > 15:
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                            "Provided WhatsApp ID is not valid. Please provide a valid WhatsApp ID "
                            "or a phone number with a country code")
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 60):
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                            "reason must be a string shorter than 60 characters")
        with self.lock:
            if action in ("block", "report") and self.require_engaged \
                    and wa not in self.engaged and raw_phone not in self.engaged:
                raise _ApiError(400, ERR_NOT_ENGAGED[0], ERR_NOT_ENGAGED[1],
                                "Invalid Request. This contact has not engaged with you in the "
                                "last 24 hrs.")
            if action == "block":
                self.blocked.setdefault(wa, {"time": time.time(), "reason": reason})
            elif action == "unblock":
                self.blocked.pop(wa, None)
            else:
                blk = body.get("block", False)
                blk = blk is True or (isinstance(blk, str) and blk.lower() == "true")
                self.reports.append({"wa_id": wa, "reason": reason, "block": blk,
                                     "message_id": body.get("message_id"), "time": time.time()})
                if blk:
                    self.blocked.setdefault(wa, {"time": time.time(), "reason": reason})
        return 200, {"meta": self._meta()}, {}

    def _blocklist(self, q):
        try:
            limit = int(q.get("limit", ["100"])[0] or 100)
            offset = int(q.get("offset", ["0"])[0] or 0)
        except ValueError:
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1], "limit and offset are integers")
        if limit <= 0 or limit > 200 or offset < 0:
            raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                            "limit must be in (0;200] and offset >= 0")
        with self.lock:
            all_ids = list(self.blocked)
        page = all_ids[offset:offset + limit]
        return 200, {"contacts": [{"wa_id": w} for w in page],
                     "pagination": {"limit": limit, "offset": offset, "total": len(all_ids)},
                     "meta": self._meta()}, {}

    def _settings(self, method, body):
        with self.lock:
            if method == "PATCH":
                st = int(self.settings_patch_status)
                if not 200 <= st < 300:
                    code, title = _STATUS_TO_ERR.get(st, ERR_GENERIC)
                    raise _ApiError(st, code, title, "Settings not updated (HTTP %d, knob "
                                    "settings_patch_status)" % st)
                if not isinstance(body, dict):
                    raise _ApiError(400, ERR_INVALID[0], ERR_INVALID[1],
                                    "settings must be a JSON object")
                _deep_merge(self.settings, body)
                return st, {"meta": self._meta()}, {}
            return 200, {"settings": {"application": copy.deepcopy(self.settings)},
                         "meta": self._meta()}, {}

    # --- Cloud API handlers -----------------------------------------------------------------

    def _pnid(self, pnid):
        """The business number a Cloud call is for: the path's, else default_phone_number_id."""
        return str(pnid) if pnid is not None else str(self.default_phone_number_id)

    def _cloud_send(self, body, pnid, node="messages"):
        """POST /{version}/{pnid}/messages, /marketing_messages and 360dialog's /messages."""
        if not isinstance(body, dict):
            raise _ApiError(400, 100, "Invalid parameter", "A JSON body is required", cloud=True)
        if body.get("messaging_product") != "whatsapp":
            raise _ApiError(400, 100, "Invalid parameter",
                            "messaging_product must be 'whatsapp'", cloud=True)
        to = body.get("to") or body.get("recipient")     # both given: `to` wins
        key = _wa_key(to) if isinstance(to, str) else None
        if not key:
            raise _ApiError(400, 100, "Invalid parameter", "to (or recipient) is required",
                            cloud=True)
        by_user = "." in key
        want = body.get("recipient_identity_key_hash")
        status_post = None
        with self.lock:
            tpl = body.get("template")
            if by_user and isinstance(tpl, dict) and tpl.get("name") in self.auth_templates:
                raise _ApiError(400, ERR_CLOUD_AUTH_BSUID[0], ERR_CLOUD_AUTH_BSUID[1],
                                "Template %s is in the authentication category: send it to the "
                                "user's phone number (to), not to a business-scoped user id"
                                % tpl.get("name"), cloud=True)
            if self.send_refusal == "137000":
                raise _ApiError(400, ERR_CLOUD_MISMATCH[0], ERR_CLOUD_MISMATCH[1],
                                "The recipient's identity key hash does not match (knob "
                                "send_refusal)", cloud=True)
            user = self._cloud_user_for(key)
            wa_id = key if not by_user else (user or {}).get("wa_id")
            user_id = key if by_user else (user or {}).get("user_id")
            cur = self.identities.get(key)
            if cur is None:     # the identity may be held under the user's other id
                other = wa_id if by_user else user_id
                cur = self.identities.get(other) if other else None
            mismatch = want is not None and cur is not None and want != cur["hash"]
            mid = _wamid()
            pn = self._pnid(pnid)
            if mismatch:
                self.cloud_mismatches.append({"to": key, "sent": want, "current": cur["hash"],
                                              "time": time.time(), "mode": self.cloud_mismatch,
                                              "phone_number_id": pn,
                                              "id": mid if self.cloud_mismatch != "error"
                                              else None})
                if self.cloud_mismatch == "error":
                    raise _ApiError(400, ERR_CLOUD_MISMATCH[0], ERR_CLOUD_MISMATCH[1],
                                    "The recipient's identity key hash does not match",
                                    cloud=True)
            msg = {"id": mid, "to": key, "type": body.get("type", "text"), "body": body,
                   "time": time.time(), "api": "cloud", "phone_number_id": pnid,
                   "endpoint": node}
            self.cloud_sent[mid] = {"id": mid, "phone_number_id": pn, "endpoint": node,
                                    "by": "user_id" if by_user else "phone", "to": key,
                                    "wa_id": wa_id, "user_id": user_id,
                                    "recipient_identity_key_hash": want, "time": msg["time"]}
            if len(self.cloud_sent) > self.max_calls:
                for old in list(self.cloud_sent)[:len(self.cloud_sent) - self.max_calls]:
                    del self.cloud_sent[old]
            if mismatch and self.cloud_mismatch == "status":
                msg["failed_code"] = ERR_CLOUD_MISMATCH[0]
                self.cloud_sent[mid]["failed_code"] = ERR_CLOUD_MISMATCH[0]
                err = {"code": ERR_CLOUD_MISMATCH[0], "title": ERR_CLOUD_MISMATCH[1],
                       "message": ERR_CLOUD_MISMATCH[1],
                       "error_data": {"details": "The recipient's identity key hash does not "
                                                 "match the one sent"}}
                value = self.status_value(mid, "failed", errors=[err],
                                          identity_key_hash=(cur["hash"]
                                                             if self.mismatch_status_includes_hash
                                                             else None))
                status_post = (value, pn, self.callback_delay_ms / 1000.0)
            self._add_message(msg)
            contact = {"input": to}
            if wa_id and (not by_user or not (user or {}).get("phone_hidden")):
                contact["wa_id"] = wa_id
            if user_id:
                contact["user_id"] = user_id
        if status_post is not None:
            threading.Thread(target=self._post_cloud_later, args=status_post,
                             daemon=True).start()
        return 200, {"messaging_product": "whatsapp", "contacts": [contact],
                     "messages": [{"id": mid}]}, {}

    def sent_message(self, wamid):
        """Who Cloud send `wamid` went to: {"id","phone_number_id","endpoint" ("messages" or
        "marketing_messages"),"by" ("phone" or "user_id"),"to","wa_id","user_id",
        "recipient_identity_key_hash" (as sent),"time"(,"failed_code")}, or None."""
        with self.lock:
            rec = self.cloud_sent.get(wamid)
            return copy.deepcopy(rec) if rec else None

    # --- Cloud users (business-scoped user ids) and webhook builders ------------------------

    def cloud_user(self, user_id, wa_id=None, username=None, parent_user_id=None,
                   phone_hidden=False, name=None):
        """Register (or replace) a Cloud user: business-scoped id `user_id` (CC.DIGITS), phone
        `wa_id`, `username`, parent id `parent_user_id` (CC.ENT.DIGITS), display `name`.
        phone_hidden=True: the user adopted a username and has not talked to the business
        number for 30 days, so webhooks built for them carry no wa_id, from or recipient_id
        (and send answers addressed by user id carry no wa_id).  Returns the record."""
        user_id = str(user_id).strip()
        if not _USER_ID_RE.fullmatch(user_id):
            raise ValueError("user_id must be CC. followed by up to 128 letters/digits: %r"
                             % user_id)
        if parent_user_id is not None:
            parent_user_id = str(parent_user_id).strip()
            if not _PARENT_ID_RE.fullmatch(parent_user_id):
                raise ValueError("parent_user_id must be CC.ENT. followed by up to 128 "
                                 "letters/digits: %r" % parent_user_id)
        if wa_id is not None:
            wa_id = _wa_key(wa_id)
            if not wa_id or "." in wa_id:
                raise ValueError("wa_id must be a phone number")
        rec = {"user_id": user_id, "wa_id": wa_id, "username": username,
               "parent_user_id": parent_user_id, "phone_hidden": bool(phone_hidden),
               "name": name}
        with self.lock:
            self.cloud_users[user_id] = rec
            return dict(rec)

    def get_cloud_user(self, id_or_phone):
        """The registry's record for a user id or a phone number, or None."""
        with self.lock:
            rec = self._cloud_user_for(_wa_key(id_or_phone))
            return dict(rec) if rec else None

    def remove_cloud_user(self, user_id):
        with self.lock:
            return self.cloud_users.pop(str(user_id).strip(), None) is not None

    def _cloud_user_for(self, key):
        if not key:
            return None
        if "." in key:
            return self.cloud_users.get(key)
        for rec in self.cloud_users.values():
            if rec.get("wa_id") == key:
                return rec
        return None

    def _who(self, ident):
        """(wa_id, user_id, record) for a phone number or a user id, with the registry's other
        id filled in."""
        key = _wa_key(ident) if ident is not None else None
        rec = self._cloud_user_for(key) or {}
        if key and "." in key:
            return rec.get("wa_id"), key, rec
        return key, rec.get("user_id"), rec

    def _rename_cloud_user(self, old, new, wa_id=None, parent=None):
        rec = self.cloud_users.pop(old, None) if old else None
        if rec is None:
            rec = {"user_id": new, "wa_id": None, "username": None, "parent_user_id": None,
                   "phone_hidden": False, "name": None}
        rec["user_id"] = new
        if wa_id:
            rec["wa_id"] = wa_id
        if parent:
            rec["parent_user_id"] = parent
        self.cloud_users[new] = rec

    def _value(self, pnid, **parts):
        v = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": str(self.display_phone_number),
                          "phone_number_id": self._pnid(pnid)}}
        v.update(parts)
        return v

    def inbound_value(self, user_id, text="hi", msg_id=None, ts=None, identity_key_hash=None,
                      pnid=None):
        """A Cloud webhook `value` of a text message from `user_id` (a user id, or a phone
        number) in the 2026 shape: contacts[] with profile (name, username), wa_id (unless the
        phone is hidden), user_id, parent_user_id, identity_key_hash (when given); messages[]
        with from (unless hidden), from_user_id, from_parent_user_id, id, timestamp (now; for
        a key hash other than the user's last, at least a second after the last's), text."""
        with self.lock:
            wa_id, uid, rec = self._who(user_id)
            hidden = rec.get("phone_hidden", False)
            profile = {"name": rec.get("name") or rec.get("username") or "Test User"}
            if rec.get("username"):
                profile["username"] = rec["username"]
            contact = {"profile": profile}
            msg = {}
            if wa_id and not hidden:
                contact["wa_id"] = wa_id
                msg["from"] = wa_id
            if uid:
                contact["user_id"] = uid
                msg["from_user_id"] = uid
            if rec.get("parent_user_id"):
                contact["parent_user_id"] = rec["parent_user_id"]
                msg["from_parent_user_id"] = rec["parent_user_id"]
            if identity_key_hash is not None:
                contact["identity_key_hash"] = identity_key_hash
                # A new key is a new phone: its first message is later than the old key's last
                # (Meta's times are whole seconds; two keys in one second would tie, which a
                # person typing the quick start's commands quickly must not meet).
                who = uid or wa_id
                last = self.key_seen.get(who)
                if ts is None:
                    ts = int(time.time())
                    if last:
                        ts = max(ts, last[1] + (last[0] != identity_key_hash))
                self.key_seen[who] = (identity_key_hash, int(ts))
            msg.update({"id": msg_id or _wamid(),
                        "timestamp": str(int(ts if ts is not None else time.time())),
                        "type": "text", "text": {"body": text}})
            return self._value(pnid, contacts=[contact], messages=[msg])

    def status_value(self, msg_id, status, user_id=None, to_phone=None, errors=None,
                     identity_key_hash=None, pnid=None):
        """A Cloud webhook `value` with one status of message `msg_id` in the 2026 shape.  The
        recipient is `to_phone` (sent by phone) or `user_id` (sent by user id); with neither,
        the one recorded for a send of msg_id (sent_message), whose number is also the default
        pnid.  statuses[]: id, status, timestamp, recipient_id (unless the phone is hidden),
        recipient_user_id (not on a failed status of a send by phone), recipient_parent_user_id,
        recipient_identity_key_hash (when given), errors (codes or objects).  sent, delivered
        and read carry contacts[] beside statuses; failed ones do not."""
        with self.lock:
            if user_id is None and to_phone is None and msg_id in self.cloud_sent:
                sent = self.cloud_sent[msg_id]
                by_phone = sent["by"] == "phone"
                wa_id, uid, rec = self._who(sent["to"])
                wa_id = wa_id or sent["wa_id"]
                uid = uid or sent["user_id"]
                if pnid is None:
                    pnid = sent["phone_number_id"]
            else:
                by_phone = to_phone is not None or (user_id is not None
                                                    and "." not in (_wa_key(user_id) or "."))
                wa_id, uid, rec = self._who(to_phone if to_phone is not None else user_id)
                if to_phone is not None and user_id is not None:
                    uid = _wa_key(user_id)
            hidden = rec.get("phone_hidden", False)
            parent = rec.get("parent_user_id")
            failed = status == "failed"
            st = {"id": msg_id, "status": status, "timestamp": str(int(time.time()))}
            if wa_id and not hidden:
                st["recipient_id"] = wa_id
            if uid and not (failed and by_phone):
                st["recipient_user_id"] = uid
                if parent:
                    st["recipient_parent_user_id"] = parent
            if identity_key_hash is not None:
                st["recipient_identity_key_hash"] = identity_key_hash
            if errors:
                st["errors"] = [_cloud_error(e) for e in errors]
            parts = {"statuses": [st]}
            if status in ("sent", "delivered", "read"):
                c = {}
                if rec.get("username"):
                    c["profile"] = {"username": rec["username"]}
                if wa_id and not hidden:
                    c["wa_id"] = wa_id
                if uid:
                    c["user_id"] = uid
                if parent:
                    c["parent_user_id"] = parent
                parts["contacts"] = [c]
            return self._value(pnid, **parts)

    def user_id_update_value(self, old_user_id, new_user_id, wa_id=None, old_parent=None,
                             new_parent=None, ts=None, pnid=None):
        """The `value` of a change with field "user_id_update" (post it with
        post_cloud_webhook(value, field="user_id_update")): user_id_update[] with wa_id (given,
        else the registry's unless hidden), detail, user_id {previous,current},
        parent_user_id {previous,current} (when a parent is given or known) and timestamp.
        The registry moves the user to the new id (and parent)."""
        with self.lock:
            known_wa, _, rec = self._who(old_user_id)
            item = {}
            if wa_id is not None:
                item["wa_id"] = _wa_key(wa_id)
            elif known_wa and not rec.get("phone_hidden"):
                item["wa_id"] = known_wa
            item["detail"] = "The user's business-scoped user ID changed"
            item["user_id"] = {"previous": old_user_id, "current": new_user_id}
            prev_parent = old_parent or rec.get("parent_user_id")
            if prev_parent or new_parent:
                item["parent_user_id"] = {"previous": prev_parent,
                                          "current": new_parent or prev_parent}
            item["timestamp"] = str(int(ts if ts is not None else time.time()))
            self._rename_cloud_user(old_user_id, new_user_id,
                                    _wa_key(wa_id) if wa_id is not None else None, new_parent)
            return self._value(pnid, user_id_update=[item])

    def user_changed_user_id_value(self, old, new, old_parent=None, new_parent=None,
                                   msg_id=None, ts=None, pnid=None):
        """A system message (field "messages", no contacts[]): from_user_id the old id (and
        from_parent_user_id), system {"type":"user_changed_user_id","body","user_id":new,
        "previous_user_id":old, parent_user_id/previous_parent_user_id when known}.  No phone
        number.  The registry moves the user to the new id."""
        with self.lock:
            _, _, rec = self._who(old)
            prev_parent = old_parent or rec.get("parent_user_id")
            msg = {"from_user_id": old}
            if prev_parent:
                msg["from_parent_user_id"] = prev_parent
            system = {"body": "User's business-scoped user ID changed from %s to %s"
                              % (old, new),
                      "type": "user_changed_user_id", "user_id": new, "previous_user_id": old}
            if new_parent or prev_parent:
                system["parent_user_id"] = new_parent or prev_parent
            if prev_parent:
                system["previous_parent_user_id"] = prev_parent
            msg.update({"id": msg_id or _wamid(),
                        "timestamp": str(int(ts if ts is not None else time.time())),
                        "type": "system", "system": system})
            self._rename_cloud_user(old, new, None, new_parent)
            return self._value(pnid, messages=[msg])

    def user_changed_number_value(self, old_wa_id, new_wa_id, new_user_id=None,
                                  previous_user_id=None, previous_parent_user_id=None,
                                  parent_user_id=None, msg_id=None, ts=None, pnid=None):
        """A system message (no contacts[]) of a number change: from the old number (unless
        hidden) and from_user_id the previous user id, system {"type":"user_changed_number",
        "body","wa_id":new number,"user_id":new id,"previous_user_id",
        "previous_parent_user_id"(when known),"parent_user_id"(when known)}.  A user id is
        regenerated on a number change: new_user_id None makes one up (same country prefix).
        previous_user_id None: the registry's id for old_wa_id.  The registry follows."""
        with self.lock:
            old_key = _wa_key(old_wa_id)
            new_key = _wa_key(new_wa_id)
            _, known_uid, rec = self._who(old_key)
            previous_user_id = previous_user_id or known_uid
            if previous_user_id and not rec:
                _, _, rec = self._who(previous_user_id)
            if new_user_id is None:
                cc = previous_user_id[:2] if previous_user_id else "US"
                new_user_id = "%s.%d" % (cc, secrets.randbits(63))
            previous_parent_user_id = previous_parent_user_id or rec.get("parent_user_id")
            msg = {}
            if not rec.get("phone_hidden"):
                msg["from"] = old_key
            if previous_user_id:
                msg["from_user_id"] = previous_user_id
            if previous_parent_user_id:
                msg["from_parent_user_id"] = previous_parent_user_id
            system = {"body": "User A changed from +%s to +%s" % (old_key, new_key),
                      "wa_id": new_key, "type": "user_changed_number", "user_id": new_user_id,
                      "previous_user_id": previous_user_id}
            if previous_parent_user_id:
                system["previous_parent_user_id"] = previous_parent_user_id
            if parent_user_id or previous_parent_user_id:
                system["parent_user_id"] = parent_user_id or previous_parent_user_id
            msg.update({"id": msg_id or _wamid(),
                        "timestamp": str(int(ts if ts is not None else time.time())),
                        "type": "system", "system": system})
            self._rename_cloud_user(previous_user_id, new_user_id, new_key, parent_user_id)
            return self._value(pnid, messages=[msg])

    _EVENT_BUILDERS = {"inbound": "inbound_value", "status": "status_value",
                       "user_id_update": "user_id_update_value",
                       "user_changed_user_id": "user_changed_user_id_value",
                       "user_changed_number": "user_changed_number_value"}

    def cloud_event(self, kind, post=True, url=None, **kwargs):
        """Build a Cloud webhook value with the builder of `kind` ("inbound", "status",
        "user_id_update", "user_changed_user_id", "user_changed_number"; kwargs are its
        arguments) and, with post=True, post it with the right field.  Returns {"field",
        "value"(,"status")}."""
        if kind not in self._EVENT_BUILDERS:
            raise ValueError("kind must be one of %s" % sorted(self._EVENT_BUILDERS))
        value = getattr(self, self._EVENT_BUILDERS[kind])(**kwargs)
        field = "user_id_update" if kind == "user_id_update" else "messages"
        out = {"field": field, "value": value}
        if post:
            out["status"] = self.post_cloud_webhook(value, value["metadata"]["phone_number_id"],
                                                    url, field=field)
        return out

    def _post_cloud_later(self, value, pnid, delay):
        self._sleep(delay)
        self.post_cloud_webhook(value, pnid)

    def cloud_envelope(self, value, pnid=None, field="messages"):
        """`value` (statuses/messages/contacts/errors…) in Meta's Cloud webhook envelope for
        business number `pnid` (default: default_phone_number_id), as a change of `field`;
        messaging_product and metadata are filled in unless `value` has them."""
        with self.lock:
            pnid = self._pnid(pnid)
            v = copy.deepcopy(value)
            v.setdefault("messaging_product", "whatsapp")
            v.setdefault("metadata", {"display_phone_number": str(self.display_phone_number),
                                      "phone_number_id": pnid})
            return {"object": "whatsapp_business_account",
                    "entry": [{"id": str(self.waba_id),
                               "changes": [{"field": str(field), "value": v}]}]}

    def post_cloud_webhook(self, value, pnid=None, url=None, field="messages"):
        """POST `value` in the Cloud envelope (cloud_envelope, as a change of `field`) to `url`
        (default the cloud_webhook_url knob, else settings.webhooks.url), signed with
        X-Hub-Signature-256 when app_secret is set and with Authorization: Bearer webhook_token
        when that is set.  Records {"kind":"cloud","url","status","body"(,"error")} in
        callbacks and returns the HTTP status (None when nothing answered or there is no URL)."""
        envelope = self.cloud_envelope(value, pnid, field)
        with self.lock:
            if url is None:
                url = self.cloud_webhook_url or (self.settings.get("webhooks") or {}).get("url")
            secret = self.app_secret
            token = self.webhook_token
            hdrs = dict(self.webhook_headers or {})
        res = {"kind": "cloud", "url": url, "status": None, "body": envelope}
        if not url:
            res["error"] = "no webhook URL (set cloud_webhook_url or settings.webhooks.url)"
            with self._cond:
                self.callbacks.append(res)
                self._cond.notify_all()
            return None
        data = json.dumps(envelope).encode()   # ASCII: non-ASCII escaped as Meta does
        req = urllib.request.Request(url, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        for k, v in hdrs.items():
            req.add_header(k, v)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if secret:
            sig = hmac.new(str(secret).encode(), data, hashlib.sha256).hexdigest()
            req.add_header("X-Hub-Signature-256", "sha256=" + sig)
        ctx = ssl._create_unverified_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                res["status"] = r.status
        except urllib.error.HTTPError as e:
            res["status"] = e.code
        except Exception as e:  # noqa: BLE001 - reported in state
            res["error"] = str(e)
        with self._cond:
            self.callbacks.append(res)
            self._cond.notify_all()
        return res["status"]

    def _cloud_block(self, method, body, q, pnid=None):
        with self.lock:
            pnid = self._pnid(pnid)
        if method == "GET":
            try:
                limit = int(q.get("limit", ["100"])[0] or 100)
            except ValueError:
                limit = -1
            if limit <= 0 or limit > 10000:
                raise _ApiError(400, 100, "Invalid parameter", "limit out of range", cloud=True)
            start = 0
            for name in ("after", "before"):
                if q.get(name):
                    try:
                        start = int(base64.urlsafe_b64decode(q[name][0] + "==").decode())
                    except (ValueError, binascii.Error, UnicodeDecodeError):
                        raise _ApiError(400, 100, "Invalid parameter", "bad cursor", cloud=True)
                    if name == "before":
                        start = max(0, start - limit)
            with self.lock:
                ids = list(self.cloud_blocks.get(pnid, {}))
            page = ids[start:start + limit]
            enc = lambda n: base64.urlsafe_b64encode(str(n).encode()).decode().rstrip("=")  # noqa
            out = {"data": [{"messaging_product": "whatsapp",
                             ("user_id" if "." in w else "wa_id"): w} for w in page],
                   "paging": {"cursors": {"before": enc(start), "after": enc(start + len(page))}}}
            if start + len(page) < len(ids):
                out["paging"]["next"] = "?limit=%d&after=%s" % (limit, enc(start + len(page)))
            if start > 0:
                out["paging"]["previous"] = "?limit=%d&before=%s" % (limit, enc(start))
            return 200, out, {}
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp" \
                or not isinstance(body.get("block_users"), list) or not body["block_users"]:
            raise _ApiError(400, 100, "Invalid parameter",
                            "messaging_product 'whatsapp' and a non-empty block_users are required",
                            cloud=True)
        done, failed = [], []
        with self.lock:
            table = self.cloud_blocks.setdefault(pnid, {})
            fail_users = set(self.block_fail_users) | \
                {_wa_key(x) for x in self.block_fail_users if isinstance(x, str)}
            for item in body["block_users"]:
                raw = None
                if isinstance(item, dict):
                    raw = item.get("user") or item.get("user_id")
                key = _wa_key(raw) if isinstance(raw, str) else None
                names = {raw, key} - {None}
                if not key or names & set(self.invalid_numbers):
                    failed.append({"input": raw, "errors": [{
                        "message": "Invalid parameter", "code": 100,
                        "error_data": {"details": "Not a valid WhatsApp user"}}]})
                    continue
                if method == "POST" and self.require_engaged and not names & set(self.engaged):
                    failed.append({"input": raw, "errors": [{
                        "message": "Re-engagement message", "code": 131047,
                        "error_data": {"details": "The user has not messaged you in the last "
                                                  "24 hours"}}]})
                    continue
                if names & fail_users:
                    failed.append({"input": raw, "errors": [{
                        "message": "Failed to block/unblock users", "code": 139100,
                        "error_data": {"details": "Failed to %s the user"
                                                  % ("block" if method == "POST"
                                                     else "unblock")}}]})
                    continue
                if method == "POST":
                    table.setdefault(key, {"time": time.time(), "reason": None})
                else:
                    table.pop(key, None)
                d = {"input": raw}
                d["user_id" if "." in key else "wa_id"] = key
                done.append(d)
        label = "added_users" if method == "POST" else "removed_users"
        res = {"messaging_product": "whatsapp", "block_users": {label: done}}
        if failed:
            res["block_users"]["failed_users"] = failed
            err = self._graph_error(139100, "Failed to block/unblock users",
                                    "Failed to %s some users" %
                                    ("block" if method == "POST" else "unblock"))
            res.update(err)
            return 400, res, {}
        return 200, res, {}

    def _cloud_settings(self, method, body, pnid):
        with self.lock:
            pnid = self._pnid(pnid)
            if method == "POST":
                err = self.settings_error
                if err is not None and (err.get("phone_number_ids") is None
                                        or pnid in err["phone_number_ids"]):
                    obj = self._graph_error(err["code"], err["message"], err.get("details"))
                    if err.get("error_subcode") is not None:
                        obj["error"]["error_subcode"] = int(err["error_subcode"])
                    return err["status"], obj, {}
                if not isinstance(body, dict):
                    raise _ApiError(400, 100, "Invalid parameter", "A JSON body is required",
                                    cloud=True)
                _deep_merge(self.cloud_settings, body)
                _deep_merge(self.cloud_settings_by_pnid.setdefault(pnid, {}), body)
                return 200, {"success": True}, {}
            return 200, copy.deepcopy(self.cloud_settings_by_pnid.get(pnid, {})), {}

    # --- /_sim control routes ---------------------------------------------------------------

    def _control(self, method, path, query, body, body_ok):
        if not body_ok:
            return 400, {"error": "body is not JSON"}
        b = body if isinstance(body, dict) else {}
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        route = path[len("/_sim"):].rstrip("/") or "/"

        def opt(name, conv=None, default=None):
            v = b.get(name, q.get(name, default))
            if v is None or conv is None:
                return v
            return conv(v)

        if route == "/health" and method == "GET":
            return 200, {"ok": True, "url": self.url}
        if route == "/calls" and method == "GET":
            calls = self.calls_matching(opt("method"), opt("path_prefix"), opt("path"))
            since = opt("since", int)
            if since is not None:
                calls = [c for c in calls if c["seq"] > since]
            return 200, {"calls": calls, "count": len(calls)}
        if route == "/calls" and method == "DELETE" or route == "/calls/clear" and method == "POST":
            self.clear_calls()
            return 200, {"ok": True}
        if route == "/wait" and method in ("GET", "POST"):
            try:
                got = self.wait_for_calls(opt("count", int, 1), opt("method"), opt("path_prefix"),
                                          opt("path"), opt("timeout", float, 5.0))
            except TimeoutError as e:
                return 408, {"error": str(e),
                             "calls": self.calls_matching(opt("method"), opt("path_prefix"),
                                                          opt("path"))}
            return 200, {"calls": got, "count": len(got)}
        if route == "/state" and method == "GET":
            return 200, self.state()
        if route == "/app_settings" and method == "GET":
            return 200, {"settings": self.app_settings()}
        if route == "/sent" and method == "GET":
            rec = self.sent_message(opt("id"))
            return (200, rec) if rec else (404, {"error": "no Cloud send with that id"})
        if method != "POST" and route not in ("/rules", "/identity", "/cloud_user"):
            return 405, {"error": "use POST"}
        if route == "/fail":
            return 200, {"ok": True, "rule": self.fail(
                opt("count", _count, 1), opt("status", int, 500), opt("path_prefix"),
                opt("method"), opt("code"), opt("title"), opt("details"), b.get("body"),
                b.get("headers"))}
        if route == "/delay":
            return 200, {"ok": True, "rule": self.delay(
                opt("ms", float, 0), opt("count", _count, 1), opt("path_prefix"), opt("method"))}
        if route == "/drop":
            return 200, {"ok": True, "rule": self.drop(
                opt("count", _count, 1), opt("path_prefix"), opt("method"),
                opt("mode", None, "close"))}
        if route == "/rules":
            if method == "GET":
                return 200, {"rules": self.rules()}
            if method in ("DELETE", "POST"):
                self.clear_rules(opt("kind"))
                return 200, {"ok": True}
        if route == "/identity":
            if method == "GET":
                ident = self.get_identity(opt("wa_id"))
                return (200, ident) if ident else (404, {"error": "no identity"})
            if method == "DELETE":
                return 200, {"ok": self.remove_identity(opt("wa_id"))}
            if method != "POST":
                return 405, {"error": "use POST, GET or DELETE"}
            if not b.get("wa_id") or not b.get("hash"):
                return 400, {"error": "wa_id and hash are required"}
            return 200, {"ok": True, "identity": self.set_identity(
                b["wa_id"], b["hash"], b.get("created_timestamp"),
                bool(b.get("acknowledged", False)))}
        if route == "/blocked":
            ids = b.get("wa_ids") or ([b["wa_id"]] if b.get("wa_id") else [])
            pnid = b.get("phone_number_id")
            for w in ids:
                self.set_blocked(w, bool(b.get("blocked", True)), pnid)
            if pnid is not None:
                return 200, {"ok": True, "phone_number_id": str(pnid),
                             "blocked": self.cloud_blocked(pnid)}
            return 200, {"ok": True, "blocked": self.state()["blocked"]}
        if route == "/cloud_webhook":
            if not isinstance(b.get("value"), dict):
                return 400, {"error": "value (an object) is required"}
            st = self.post_cloud_webhook(b["value"], b.get("phone_number_id"), b.get("url"),
                                         field=b.get("field") or "messages")
            return 200, {"ok": st is not None and 200 <= st < 300, "status": st}
        if route == "/cloud_user":
            if method == "GET":
                rec = self.get_cloud_user(opt("user_id") or opt("wa_id"))
                return (200, rec) if rec else (404, {"error": "no such Cloud user"})
            if method == "DELETE":
                return 200, {"ok": self.remove_cloud_user(opt("user_id"))}
            if method != "POST":
                return 405, {"error": "use POST, GET or DELETE"}
            if not b.get("user_id"):
                return 400, {"error": "user_id is required"}
            return 200, {"ok": True, "user": self.cloud_user(
                b["user_id"], b.get("wa_id"), b.get("username"), b.get("parent_user_id"),
                bool(b.get("phone_hidden", False)), b.get("name"))}
        if route == "/cloud_event":
            args = {k: v for k, v in b.items() if k not in ("kind", "post", "url")}
            out = self.cloud_event(b.get("kind"), bool(b.get("post", True)), b.get("url"),
                                   **args)
            if "status" in out:
                out["ok"] = out["status"] is not None and 200 <= out["status"] < 300
            return 200, out
        if route == "/expire_tokens":
            return 200, {"ok": True, "expired": self.expire_tokens()}
        if route == "/reset":
            self.reset()
            return 200, {"ok": True}
        if route == "/config":
            self.configure(**b)
            return 200, {"ok": True, "knobs": self.knobs()}
        return 404, {"error": "unknown control route %s %s" % (method, path)}


_VERSION_RE = re.compile(r"^v\d+(\.\d+)?$")


def _is_cloud_path(path):
    """Cloud API paths: /{version}/{pnid}/(messages|block_users|settings), and 360dialog's
    /messages and /block_users.  /v1/... is the On-Premises API unless its second part is a
    phone number id (digits) followed by a Cloud API node."""
    parts = path.split("/")[1:]
    if not parts:
        return False
    if parts[0] in ("messages", "block_users"):
        return len(parts) == 1
    if not _VERSION_RE.match(parts[0]):
        return False
    if parts[0] == "v1":
        return len(parts) == 3 and parts[1].isdigit() and parts[2] in _CLOUD_NODES
    return len(parts) >= 2


_CLOUD_NODES = ("messages", "marketing_messages", "block_users", "settings")


def _allow(method, *methods, cloud=False):
    if method not in methods:
        hdr = {"Allow": ", ".join(methods)}
        if cloud:
            raise _ApiError(405, 100, "Unsupported request", "Method %s not allowed" % method,
                            cloud=True, headers=hdr)
        raise _ApiError(405, ERR_NOT_FOUND[0], "Method not allowed",
                        "Method %s not allowed here" % method, headers=hdr)


def _error_spec(x):
    """A knob's error entry: a code (int or digits) or {"code","title"(opt),"details"(opt)}."""
    if isinstance(x, dict):
        if "code" not in x:
            raise ValueError("an error object needs a code")
        d = dict(x)
        d["code"] = int(d["code"])
        return d
    if isinstance(x, bool):
        raise ValueError("an error code must be a number")
    return int(x)


def _cloud_error(e):
    """A statuses[].errors[] entry from a code or an object (title/message filled in)."""
    if not isinstance(e, dict):
        e = {"code": int(e)}
    d = dict(e)
    title = _CLOUD_ERR_TITLES.get(d.get("code"), "Message failed to send")
    d.setdefault("title", title)
    d.setdefault("message", d["title"])
    d.setdefault("error_data", {"details": d["title"]})
    return d


def _count(v):
    if v is None or v in ("all", "*"):
        return None
    return int(v)


def _deep_merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


# --- test certificates (openssl command) -------------------------------------------------------

def _openssl(*args, cwd=None):
    r = subprocess.run(("openssl",) + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def _san_for(hostname, extra=("IP:127.0.0.1", "DNS:localhost")):
    names = []
    if hostname:
        try:
            ipaddress.ip_address(hostname)
            names.append("IP:%s" % hostname)
        except ValueError:
            names.append("DNS:%s" % hostname)
    for n in extra:
        if n not in names:
            names.append(n)
    return ",".join(names)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _leaf_ext(dirpath, prefix, san):
    ext = os.path.join(dirpath, prefix + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
                "subjectAltName=%s\n" % san)
    return ext


def _signed_leaf(dirpath, prefix, cn, san, ca_cert, ca_key, days=825):
    key = os.path.join(dirpath, prefix + ".key")
    csr = os.path.join(dirpath, prefix + ".csr")
    crt = os.path.join(dirpath, prefix + ".pem")
    _openssl("req", "-new", *_EC_KEY, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    ext = _leaf_ext(dirpath, prefix, san)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-set_serial", str(secrets.randbits(63)), "-days", str(days), "-sha256",
             "-extfile", ext, "-out", crt)
    os.unlink(csr)
    return crt, key


def make_test_ca(dirpath, hostname="127.0.0.1"):
    """Make a test CA (ca.pem, ca.key) and a server certificate signed by it (server.pem,
    server.key) for `hostname`, 127.0.0.1 and localhost in `dirpath`.  Returns
    (ca_cert, server_cert, server_key)."""
    os.makedirs(dirpath, exist_ok=True)
    ca_cert = os.path.join(dirpath, "ca.pem")
    ca_key = os.path.join(dirpath, "ca.key")
    _openssl("req", "-x509", *_EC_KEY, "-nodes", "-keyout", ca_key, "-out", ca_cert,
             "-days", "3650", "-sha256", "-subj", "/CN=waguard test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    crt, key = _signed_leaf(dirpath, "server", hostname or "localhost", _san_for(hostname),
                            ca_cert, ca_key)
    return ca_cert, crt, key


def make_wrong_cert(dirpath, hostname="127.0.0.1"):
    """A self-signed server certificate (wrong.pem, wrong.key) with the right names but not
    signed by the test CA: a client that trusts only the CA must refuse it.  Returns
    (cert, key)."""
    os.makedirs(dirpath, exist_ok=True)
    crt = os.path.join(dirpath, "wrong.pem")
    key = os.path.join(dirpath, "wrong.key")
    _openssl("req", "-x509", *_EC_KEY, "-nodes", "-keyout", key, "-out", crt, "-days", "825",
             "-sha256", "-subj", "/CN=" + (hostname or "localhost"),
             "-addext", "subjectAltName=" + _san_for(hostname),
             "-addext", "extendedKeyUsage=serverAuth")
    return crt, key


make_self_signed_cert = make_wrong_cert


def make_wrong_host_cert(dirpath, hostname="wrong.example"):
    """A certificate signed by the test CA in `dirpath` (call make_test_ca first) whose only
    name is `hostname`: a client connecting to 127.0.0.1 must refuse it for the name.
    Returns (cert, key)."""
    ca_cert = os.path.join(dirpath, "ca.pem")
    ca_key = os.path.join(dirpath, "ca.key")
    if not (os.path.exists(ca_cert) and os.path.exists(ca_key)):
        raise FileNotFoundError("no test CA in %s: call make_test_ca first" % dirpath)
    return _signed_leaf(dirpath, "wronghost", hostname, _san_for(hostname, extra=()),
                        ca_cert, ca_key)


# --- command line ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="WhatsApp Business API (On-Premises) client "
                                             "simulator for waguard's tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--auth", choices=AUTH_MODES, default="login")
    ap.add_argument("--username", default="admin")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--password-file", help="read the password from this file")
    ap.add_argument("--token-ttl", type=float, default=7 * 86400, help="token lifetime, seconds")
    ap.add_argument("--api-key")
    ap.add_argument("--bearer-token")
    ap.add_argument("--header-name", default="D360-API-KEY", help="API key header (auth=header)")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ap.add_argument("--make-ca", metavar="DIR",
                    help="write a test CA and server certificate into DIR, print their paths as "
                         "JSON and exit")
    args = ap.parse_args(argv)

    if args.make_ca:
        ca, crt, key = make_test_ca(args.make_ca, args.host)
        wrong, wrong_key = make_wrong_cert(args.make_ca, args.host)
        print(json.dumps({"ca_cert": ca, "server_cert": crt, "server_key": key,
                          "wrong_cert": wrong, "wrong_key": wrong_key}), flush=True)
        return 0
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    password = args.password
    if args.password_file:
        with open(args.password_file) as f:
            password = f.read().strip()

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim = WabaSim(host=args.host, port=args.port, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, auth=args.auth, username=args.username,
                      password=password, token_ttl_s=args.token_ttl, api_key=args.api_key,
                      bearer_token=args.bearer_token, api_key_header=args.header_name,
                      verbose=args.verbose).start()
    except (OSError, ssl.SSLError) as e:
        print("waba_sim: cannot start: %s" % e, file=sys.stderr, flush=True)
        return 1
    print("waba_sim listening on %s" % sim.url, flush=True)
    while not done.wait(1.0):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
