"""docs/openapi.yaml against the real thing.

* Every route of src/routes.c's route table (parsed from the C source) is a path and method of
  the document, with the security its role allows and, on the routes that speak Graph, Graph's
  envelope for their 401 and 403; every path of the document that the table lacks is either
  forwarded ([proxy] forward_unknown, marked `x-waguard-forwarded`) or says it is planned.
* The real daemon, Redis and the WABA simulator answer every built route, and each answer
  (status, Content-Type, the headers the document declares, body) is one the document
  declares, its body valid against the declared schema (OpenAPI 3.1 schemas are JSON Schema
  2020-12; Debian 12's python3-jsonschema 4.10 has Draft202012Validator and RefResolver).
  Three daemons are used: On-Premises with [identity] ack = manual, [hold] and a small
  contact-check budget; the Cloud API with Meta's signature on webhooks and the identity key
  check; On-Premises with security notifications off.  The answers every path may give
  (400, 404, 405 with Allow, 413, 501) are checked against the envelope the document's
  description names: the WABA one, and Graph's on a Cloud path (routes.c's graph_path()).
  The test ends by checking that every built operation was seen, so a route added without a
  test here fails too.
"""
import json
import re
import socket
import uuid
from pathlib import Path
from urllib.parse import quote

import requests
import yaml
from jsonschema import Draft202012Validator, FormatChecker, RefResolver

from daemon import ADMIN_TOKEN, API_TOKEN, HMAC_SECRET, VERIFY_TOKEN, WEBHOOK_TOKEN
from helpers import (body, contact_result, contacts_callback, identity_change, identity_obj, inbound_text,
                     inbound_text_msg, new_msg_id, new_wa_id, now_s, wait_for, world_dialled, world_wa_id)
from helpers import cloud as helpers_cloud, cloud_inbound as helpers_cloud_inbound

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "openapi.yaml"
ROUTES_C = ROOT / "src" / "routes.c"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# The answers every path may give, before (or instead of) a route: the document's
# info.description names them, in the WABA envelope whatever the path.
EDGE_STATUSES = {400, 404, 405, 413, 501}


def load_doc():
    doc = yaml.safe_load(DOC_PATH.read_text())
    # YAML turns unquoted status codes into integers; the document quotes them, but be sure.
    for item in doc["paths"].values():
        for m in METHODS:
            if m in item:
                item[m]["responses"] = {str(k): v for k, v in item[m]["responses"].items()}
    return doc


def table_entries():
    """[(pattern, method, role, graph)] from the route table, `table[] = { … };` in src/routes.c
    (methods written GET, POST, … or EVHTTP_REQ_GET, …).  Every route takes an optional final
    '/' (match() in src/routes.c), so a pattern's final '/' is dropped: /console/ is /console's
    path (and the document cannot spell a trailing slash: Redocly's no-path-trailing-slash)."""
    m = re.search(r"\btable\[\]\s*=\s*\{(.*?)\n\};", ROUTES_C.read_text(), re.S)
    assert m, "no `table[] = {…};` in src/routes.c: teach tests/test_openapi.py where the routes are"
    out = []
    meth_re = r"(?:EVHTTP_REQ_)?(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)"
    # { methods, "pattern", ROLE_…, metric, handler, graph }
    entry_re = (r'\{\s*((?:(?:EVHTTP_REQ_)?[A-Z]+\s*\|?\s*)+),\s*"([^"]+)"\s*,\s*(ROLE_[A-Z]+)\s*,'
                r'[^}]*?,\s*(true|false)\s*\}')
    entries = re.findall(entry_re, m.group(1))
    written = re.findall(r"^\s*\{", m.group(1), re.M)
    assert len(entries) == len(written), ("%d entries in src/routes.c's table, %d read as {methods, pattern, "
                                          "role, metric, handler, graph}: teach tests/test_openapi.py the new "
                                          "shape" % (len(written), len(entries)))
    for methods, pattern, role, graph in entries:
        if len(pattern) > 1 and pattern.endswith("/"):
            pattern = pattern[:-1]
        for meth in re.findall(meth_re, methods):
            out.append((pattern, meth.lower(), role, graph == "true"))
    assert len(out) >= 20, "the route table parsed to only %r" % out
    return out


def table_routes():
    """{(pattern with '*', method)} of the route table."""
    return {(p, m) for p, m, _, _ in table_entries()}


def as_pattern(template):
    """/v1/gate/{wa_id} -> /v1/gate/*, the route table's notation."""
    return re.sub(r"\{[^}/]+\}", "*", template)


def operations(doc):
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item:
                yield path, m, item[m]


def is_planned(op):
    return "**Planned**" in op.get("description", "")


def is_forwarded(doc, path):
    return doc["paths"][path].get("x-waguard-forwarded") is True


def built_paths(doc):
    """The document's paths the daemon serves: the table's, the webhook, the forwarded examples."""
    built = {p for p, _ in table_routes()} | {"/webhook"}
    return {p for p in doc["paths"] if as_pattern(p) in built or is_forwarded(doc, p)}


def forwardable_shape(path, method):
    """What proxy_forwardable() (src/proxy.c) lets through, for a documented template: under
    /v1/ or a Cloud /{version}/, no segment containing 'messages' but On-Premises' read
    receipt (PUT /v1/messages/{id}), no 'calls' segment, not waguard's own /v1/gate,
    /v1/identities."""
    segs = path.strip("/").split("/")
    if segs[0] not in ("v1", "{version}") or len(segs) < 2:
        return False
    if path.startswith(("/v1/gate", "/v1/identities")) or "calls" in (s.lower() for s in segs):
        return False
    with_messages = [i for i, s in enumerate(segs) if "messages" in s.lower()]
    if not with_messages:
        return True
    return method == "put" and segs[0] == "v1" and with_messages == [1] and len(segs) == 3


class Doc:
    """docs/openapi.yaml, and the answers checked against it."""

    def __init__(self):
        self.doc = load_doc()
        self.resolver = RefResolver(base_uri="", referrer=self.doc)
        self.seen = set()            # (path template, method, status)
        self.edge_seen = set()       # statuses of the answers every path may give

    def deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            _, obj = self.resolver.resolve(obj["$ref"])
        return obj

    def response(self, template, method, status):
        op = self.doc["paths"][template][method]
        rs = op["responses"]
        for key in (str(status), "%dXX" % (status // 100), "default"):
            if key in rs:
                return key, self.deref(rs[key])
        raise AssertionError("%s %s: status %d is not documented (documented: %s)"
                             % (method.upper(), template, status, ", ".join(rs)))

    def validate(self, schema, data, where):
        v = Draft202012Validator(schema, resolver=self.resolver, format_checker=FormatChecker())
        errors = sorted(v.iter_errors(data), key=lambda e: list(e.absolute_path))
        assert not errors, "%s does not match docs/openapi.yaml:\n%s\nvalue: %s" % (
            where, "\n".join("  at /%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
                             for e in errors[:10]), json.dumps(data)[:1000])

    def check(self, resp, template, method=None, status=None):
        """Validate a requests.Response against the document; returns the parsed body."""
        method = (method or resp.request.method).lower()
        if status is not None:
            assert resp.status_code == status, (method, template, resp.status_code, resp.text[:500])
        where = "%s %s -> %d" % (method.upper(), template, resp.status_code)
        key, spec = self.response(template, method, resp.status_code)
        for name, h in (spec.get("headers") or {}).items():
            h = self.deref(h)
            assert name in resp.headers, "%s: the document declares header %s, the answer has none" % (where, name)
            self.validate(h["schema"], resp.headers[name], "%s (header %s)" % (where, name))
        content = spec.get("content")
        if not content:
            assert not resp.content, "%s: the document declares no body, got %r" % (where, resp.text[:200])
            self.seen.add((template, method, resp.status_code))
            return None
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
        assert ctype in content, "%s: Content-Type %r, documented: %s" % (where, ctype, ", ".join(content))
        if ctype == "application/json":
            # An empty body stands for null (the WABA client's identity PUT answers so).
            data = json.loads(resp.content) if resp.content.strip() else None
        else:
            data = resp.text
        self.validate(content[ctype]["schema"], data, "%s (response %s)" % (where, key))
        self.seen.add((template, method, resp.status_code))
        return data

    def check_edge(self, status, headers, content, what, code=None, path=None):
        """One of the answers every path may give (info.description): waguard's error with
        `code` the status, in the WABA envelope, or in Graph's (code 100 for a 400) on a Cloud
        path (routes.c's graph_path(), mirrored by graph_path() here).  path: the request's
        path (default: the second word of `what`).  headers: lower-case names."""
        assert code is None or status == code, (what, status, content[:300])
        assert str(status) in self.doc["info"]["description"], \
            "info.description does not name the %d every path may give" % status
        ctype = headers.get("content-type", "").split(";")[0].strip()
        assert ctype == "application/json", (what, status, headers)
        data = json.loads(content)
        graph = graph_path(path if path is not None else what.split()[1])
        if graph:
            self.validate({"$ref": "#/components/schemas/WaguardGraphError"}, data, "%s -> %d" % (what, status))
            assert data["error"]["code"] == (100 if status == 400 else status), data
        else:
            self.validate({"$ref": "#/components/schemas/WabaErrors"}, data, "%s -> %d" % (what, status))
            assert data["errors"][0]["code"] == status, data
        self.edge_seen.add((status, graph))
        return data


def graph_path(path, webhook_path="/webhook"):
    """routes.c's graph_path(): a path Graph's callers use, whose refusals (404, 405, the
    edge's 400/413/501) come in Graph's envelope: every path but "/" and waguard's own
    (/v1/…, /healthz, /readyz, /metrics, /console…, /identity-change/…, [webhook] path…)."""
    if not path.startswith("/") or path == "/" or path.startswith("/?") or path.startswith(webhook_path):
        return False
    return not path.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/console", "/identity-change/"))


def lower_headers(resp):
    return {k.lower(): v for k, v in resp.headers.items()}


def raw_http(port, data, timeout=5.0):
    """Sends raw bytes, reads the answer until the daemon closes (or timeout): (status,
    {lower-case header: value}, body)."""
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        while True:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", len(rest)))
    return status, hdrs, rest[:n]


# ----------------------------------------------------------------------------- the document itself

def test_every_route_of_the_table_is_documented_and_every_other_path_is_planned():
    doc = load_doc()
    documented = {(as_pattern(p), m) for p, m, _ in operations(doc)}
    missing = sorted(r for r in table_routes() if r not in documented)
    assert not missing, "routes of src/routes.c missing from docs/openapi.yaml: %s" % missing
    built = {p for p, _ in table_routes()} | {"/webhook"}
    for path, m, op in operations(doc):
        if as_pattern(path) in built:
            assert not is_planned(op), "%s %s is built: drop **Planned** from its description" % (m, path)
            assert not is_forwarded(doc, path), "%s is a route of the table, not a forwarded path" % path
        elif is_forwarded(doc, path):
            assert not is_planned(op), "%s %s is forwarded: it is not planned" % (m, path)
            assert forwardable_shape(path, m), ("%s %s is marked x-waguard-forwarded, but "
                                                "[proxy] forward_unknown never forwards it" % (m, path))
        else:
            assert is_planned(op), ("%s %s is not in src/routes.c's route table: build it, or say "
                                    "**Planned** in its description" % (m, path))
    # The webhook is dispatched before the table, on [webhook] path.
    assert {"get", "post"} <= set(doc["paths"]["/webhook"])


def test_each_routes_security_and_error_envelope_follow_the_route_table():
    """The role of src/routes.c decides the security of the operation (ROLE_NONE: none,
    ROLE_API and ROLE_ACK: an api or an admin token, ROLE_ADMIN: an admin token), and a route
    flagged graph answers its 401 and 403 in Graph's envelope (the others in the WABA one)."""
    d = Doc()
    want = {"ROLE_NONE": [], "ROLE_API": [{"apiToken": []}, {"adminToken": []}],
            "ROLE_ACK": [{"apiToken": []}, {"adminToken": []}], "ROLE_ADMIN": [{"adminToken": []}]}
    documented = {(as_pattern(p), m): (p, op) for p, m, op in operations(d.doc)}
    for pattern, method, role, graph in table_entries():
        path, op = documented[(pattern, method)]
        assert op.get("security") == want[role], ("%s %s is %s in src/routes.c: its security should be %r, "
                                                  "not %r" % (method.upper(), path, role, want[role],
                                                              op.get("security")))
        for status in ("401", "403"):
            if role == "ROLE_NONE":
                assert status not in op["responses"], (method, path, status)
                continue
            schema = d.deref(op["responses"][status])["content"]["application/json"]["schema"]
            ref = schema.get("$ref", "")
            if graph:
                assert ref.endswith("/GraphError"), ("%s %s speaks Graph: its %s is Graph's envelope"
                                                     % (method.upper(), path, status))
            else:
                assert not ref.endswith("/GraphError"), ("%s %s answers %s in the WABA envelope"
                                                         % (method.upper(), path, status))
    # The ack-role route says who may call it under ack = manual.
    put = d.doc["paths"]["/v1/contacts/{wa_id}/identity"]["put"]
    assert "ack = manual" in put["description"] and "admin token" in put["description"]


def test_every_response_schema_is_a_valid_json_schema():
    d = Doc()
    n = 0
    for path, m, op in operations(d.doc):
        for status, r in op["responses"].items():
            for media in (d.deref(r).get("content") or {}).values():
                Draft202012Validator.check_schema(d.deref(media["schema"]))
                n += 1
            for h in (d.deref(r).get("headers") or {}).values():
                Draft202012Validator.check_schema(d.deref(h)["schema"])
    for name, s in d.doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(s)
    assert n > 50


# ----------------------------------------------------------------------------- real answers

CLOUD_TOKEN = "cloudtoken-openapi-7Qw2"
HOLD = {"authentication_s": "600", "authentication_templates": "otp_login"}


def api(token=API_TOKEN):
    return {"Authorization": "Bearer " + token}


def cloud_msg(to, type_="template", name="hello"):
    m = {"messaging_product": "whatsapp", "to": to, "type": type_}
    if type_ == "template":
        m["template"] = {"name": name, "language": {"code": "en"}}
    else:
        m["text"] = {"body": "hi"}
    return m


def cloud(value, number="PNID"):
    return helpers_cloud(value, number)


def cloud_inbound(w=None, uid=None, key_hash=None, ts=None):
    return helpers_cloud_inbound(w, uid, key_hash, ts, number="PNID")


def named_user(wg, w, name):
    """An inbound message from w whose contacts[].profile.name is name."""
    wg.webhook_ok(body(contacts=[{"profile": {"name": name}, "wa_id": w}], messages=[inbound_text_msg(w)]))


def test_every_built_route_answers_as_the_document_says(procs):
    d = Doc()
    onprem_answers(d, procs)
    cloud_answers(d, procs)
    security_notifications_off_answers(d, procs)

    # Every built operation was answered, and every kind of answer the suite can provoke was seen.
    built = built_paths(d.doc)
    unseen = sorted("%s %s" % (m.upper(), p) for p, m, _ in operations(d.doc)
                    if p in built and not any(sp == p and sm == m for sp, sm, _ in d.seen))
    assert not unseen, "built operations this test never checked: %s" % unseen
    statuses = {st for _, _, st in d.seen}
    assert {200, 201, 202, 400, 401, 403, 404, 409, 413, 423, 429, 502, 503, 504} <= statuses, sorted(statuses)
    # ... in both envelopes: the WABA one, and Graph's on a Cloud path
    assert {(st, graph) for st in EDGE_STATUSES for graph in (False, True)} <= d.edge_seen, sorted(d.edge_seen)


def onprem_answers(d, procs):
    """On-Premises, [identity] ack = manual, [hold] authentication, a contact-check budget of 3."""
    redis_srv, sim, wg = procs.stack(overrides={
        "identity": {"ack": "manual"},
        "server": {"max_body_bytes": "4096"},
        "hold": HOLD,
        "contacts": {"check_budget": "3"},
    })
    u = wg.url
    s = requests.Session()

    # -- status
    d.check(s.get(u + "/healthz"), "/healthz", status=200)
    wait_for(lambda: s.get(u + "/readyz").json().get("security_notifications", {}).get("state") == "on", 5,
             what="show_security_notifications turned on ([upstream] security_notifications = ensure)")
    rd = d.check(s.get(u + "/readyz"), "/readyz", status=200)
    assert rd["security_notifications"] == {"policy": "ensure", "state": "on"}, rd
    d.check(s.get(u + "/metrics"), "/metrics", status=200)

    # -- the console's files, with their headers
    for path, template in (("/console", "/console"), ("/console/", "/console"),
                           ("/console/index.html", "/console/{file}")):
        r = s.get(u + path)
        d.check(r, template, status=200)
        assert r.headers["Content-Type"].startswith("text/html") and "waguard console" in r.text, path
    # every file of console/ is served, as the Makefile types it, byte for byte
    types = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
             ".png": "image/png"}
    files = sorted(f for f in (ROOT / "console").iterdir() if f.suffix in types)
    assert any(f.suffix == ".js" for f in files) and any(f.suffix == ".css" for f in files), files
    for f in files:
        r = s.get(u + "/console/" + f.name)
        d.check(r, "/console/{file}", status=200)
        assert r.headers["Content-Type"].startswith(types[f.suffix]), (f.name, r.headers)
        assert r.content == f.read_bytes(), "/console/%s is not console/%s as built (rebuild?)" % (f.name, f.name)
    d.check(s.get(u + "/console/nope.js"), "/console/{file}", status=404)
    r = s.post(u + "/console", data="x")
    d.check_edge(r.status_code, lower_headers(r), r.content, "POST /console", code=405)
    assert r.headers["Allow"] == "GET", r.headers

    # -- webhook
    free, changed, acked, looked = new_wa_id(), new_wa_id(), new_wa_id(), new_wa_id()
    d.check(wg.webhook(identity_change(changed, "CHG1hash=", 1602535238)), "/webhook", status=200)
    d.check(wg.webhook(body(contacts=[{"profile": {"name": "A"}, "wa_id": acked}],
                            messages=[inbound_text_msg(acked, identity=identity_obj(
                                "ACKD1hash=", 1602535238000, acknowledged=True))])),
            "/webhook", status=200)
    d.check(wg.webhook(inbound_text(free)), "/webhook", status=200)
    d.check(wg.webhook({"messages": [{"type": "system"}]}), "/webhook", status=200)   # a dead letter
    d.check(wg.webhook("[1,2]"), "/webhook", status=400)
    d.check(wg.webhook({"messages": []}, token="wrong-token-123"), "/webhook", status=401)
    # Changed on purpose: the 413 comes from http_edge in the JSON envelope (no longer libevent's page).
    d.check(wg.webhook({"messages": [], "pad": "x" * 8192}), "/webhook", status=413)
    d.check(s.get(u + "/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                          "hub.challenge": "8231"}), "/webhook", status=200)
    d.check(s.get(u + "/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "nope-nope",
                                          "hub.challenge": "1"}), "/webhook", status=403)
    r = s.put(u + "/webhook", headers=api())
    d.check_edge(r.status_code, lower_headers(r), r.content, "PUT /webhook", code=405)
    assert r.headers["Allow"] == "GET, POST", r.headers
    # A number that names two users: a contact check mapped the dialled number to the wa_id,
    # and the dialled number's digits are a wa_id waguard knows too.
    mx = world_wa_id("MX")
    mx_dialled = world_dialled("MX", mx)
    wg.webhook_ok(contacts_callback(contact_result(mx_dialled, "valid", mx)))
    named_user(wg, mx, "Mexico Mobile")
    named_user(wg, "".join(c for c in mx_dialled if c.isdigit()), "Mexico Literal")

    # -- gate
    g = "/v1/gate/{wa_id}"
    dec = d.check(s.get(u + "/v1/gate/" + free, headers=api()), g, status=200)
    assert dec["allowed"] is True
    dec = d.check(s.get(u + "/v1/gate/%2B" + changed, params={"type": "template"}, headers=api()), g, status=423)
    assert dec["reasons"] == ["identity_unacknowledged"]
    dec = d.check(s.get(u + "/v1/gate/" + changed, params={"type": "template", "category": "authentication"},
                        headers=api()), g, status=423)
    assert "identity_recently_changed" in dec["reasons"] and dec["hold_until"] > now_s(), dec
    d.check(s.get(u + "/v1/gate/" + free, params={"category": "marketing"}, headers=api()), g, status=400)
    d.check(s.get(u + "/v1/gate/" + free, params={"phone_number_id": "no way"}, headers=api()), g, status=400)
    dec = d.check(s.get(u + "/v1/gate/" + quote(mx_dialled, safe=""), params={"type": "template"}, headers=api()),
                  g, status=200)
    assert len(dec["considered"]) == 2, dec
    d.check(s.get(u + "/v1/gate/" + free, headers=api(ADMIN_TOKEN)), g, status=200)
    d.check(s.get(u + "/v1/gate/not-a-number", headers=api()), g, status=400)
    d.check(s.get(u + "/v1/gate/" + free), g, status=401)
    d.check(s.get(u + "/v1/gate/" + free, headers=api(WEBHOOK_TOKEN)), g, status=403)
    res = d.check(s.post(u + "/v1/gate", headers=api(), json={"type": "template", "wa_ids": [free, changed]}),
                  "/v1/gate", status=200)
    assert [r["allowed"] for r in res["results"]] == [True, False]
    res = d.check(s.post(u + "/v1/gate", headers=api(), json={"type": "template", "category": "authentication",
                                                               "wa_ids": [changed]}), "/v1/gate", status=200)
    assert "hold_until" in res["results"][0], res
    d.check(s.post(u + "/v1/gate", headers=api(), json={"wa_ids": "x"}), "/v1/gate", status=400)
    d.check(s.post(u + "/v1/gate", headers=api(), json={"wa_ids": [], "category": "marketing"}), "/v1/gate",
            status=400)

    # -- gated On-Premises send
    mp = "/v1/messages"
    ok = d.check(s.post(u + mp, headers=api(), json={"to": free, "type": "text", "text": {"body": "hi"}}), mp)
    assert ok["messages"][0]["id"]
    # Changed on purpose: a template send names its template (strict bodies; without it a 400 below).
    refused = d.check(s.post(u + mp, headers=api(), json={"to": changed, "type": "template",
                                                           "template": {"name": "hello"}}), mp, status=423)
    assert refused["errors"][0]["code"] == 480
    refused = d.check(s.post(u + mp, headers=api(), json={"to": changed, "type": "template",
                                                           "template": {"name": " OTP_Login "}}), mp, status=423)
    assert "identity_recently_changed" in refused["decision"]["reasons"], refused
    d.check(s.post(u + mp, headers=api(), json={"type": "text"}), mp, status=400)
    d.check(s.post(u + mp + "?to=" + free, headers=api(), json={"to": free, "type": "text"}), mp, status=400)
    d.check(s.post(u + mp, headers=api(), json={"to": free, "recipient": "US.1234567"}), mp, status=400)
    d.check(s.post(u + mp, headers={**api(), "Content-Type": "application/json"},
                   data='{"to":"%s","to":"%s","type":"text"}' % (free, changed)), mp, status=400)
    d.check(s.post(u + mp, headers=api(), json={"to": free, "type": "template"}), mp, status=400)
    d.check(s.post(u + mp, json={"to": free}), mp, status=401)

    # -- forwarded contact routes, with the contact-check budget (3)
    d.check(s.post(u + "/v1/contacts", headers=api(), json={"blocking": "wait", "contacts": ["+16315550199"]}),
            "/v1/contacts", status=200)
    d.check(s.post(u + "/v1/contacts", headers=api(), json={"contacts": "nope"}), "/v1/contacts", status=400)
    d.check(s.post(u + "/v1/contacts", headers=api(), json={"contacts": ["+1631555%04d" % i for i in range(4)]}),
            "/v1/contacts", status=400)                                  # larger than the whole budget
    r = s.post(u + "/v1/contacts", headers=api(), json={"contacts": ["+1631555%04d" % i for i in range(10, 13)]})
    d.check(r, "/v1/contacts", status=429)                               # 1 counted + 3 new > 3
    assert int(r.headers["Retry-After"]) >= 1
    blk = "/v1/contacts/{phone}/"
    d.check(s.post(u + "/v1/contacts/%s/block" % free, headers=api(), json={}), blk + "block", status=200)
    d.check(s.get(u + "/v1/contacts/blocklist", headers=api(), params={"limit": 10}),
            "/v1/contacts/blocklist", status=200)
    d.check(s.post(u + "/v1/contacts/%s/unblock" % free, headers=api(), json={}), blk + "unblock", status=200)
    d.check(s.post(u + "/v1/contacts/%s/report" % free, headers=api(), json={"block": False}),
            blk + "report", status=200)
    idp = "/v1/contacts/{wa_id}/identity"
    sim.set_identity(looked, "LOOK1hash=", acknowledged=False)
    d.check(s.get(u + "/v1/contacts/%s/identity" % looked, headers=api()), idp, status=200)
    d.check(s.get(u + "/v1/contacts/%s/identity" % new_wa_id(), headers=api()), idp, status=404)
    # Changed on purpose: a PUT acknowledges, so under ack = manual it takes an admin token.
    d.check(s.put(u + "/v1/contacts/%s/identity" % looked, headers=api(), json={"hash": "LOOK1hash="}),
            idp, status=403)
    for put_body in ("{}", ""):          # the WABA client answers {} or nothing
        sim.configure(identity_put_body=put_body)
        d.check(s.put(u + "/v1/contacts/%s/identity" % looked, headers=api(ADMIN_TOKEN), json={"hash": "LOOK1hash="}),
                idp, status=200)
    d.check(s.put(u + "/v1/contacts/%s/identity" % looked, headers=api(ADMIN_TOKEN), json={"nohash": 1}), idp,
            status=400)
    r = s.delete(u + "/v1/contacts/%s/identity" % looked, headers=api())
    d.check_edge(r.status_code, lower_headers(r), r.content, "DELETE identity", code=405,
                 path="/v1/contacts/x/identity")
    assert r.headers["Allow"] == "GET, PUT", r.headers

    # -- Cloud API shapes (forwarded to the same upstream)
    blockee = new_wa_id()
    for send_path, template in (("/v21.0/PNID/messages", "/{version}/{phone_number_id}/messages"),
                                ("/messages", "/messages"),
                                ("/v21.0/PNID/marketing_messages", "/{version}/{phone_number_id}/marketing_messages")):
        d.check(s.post(u + send_path, headers=api(), json=cloud_msg(free)), template, status=200)
        refused = d.check(s.post(u + send_path, headers=api(), json=cloud_msg(changed)), template, status=423)
        assert refused["error"]["error_subcode"] == 1, refused          # identity_unacknowledged first
        r = d.check(s.post(u + send_path, headers=api(), json={"messaging_product": "whatsapp"}), template,
                    status=400)
        assert r["error"]["code"] == 100 and r["error"]["type"] == "WaguardException", r
    r = s.get(u + "/v21.0/PNID/messages", headers=api())
    d.check_edge(r.status_code, lower_headers(r), r.content, "GET a Cloud send path", code=405,
                 path="/v21.0/PNID/messages")
    assert r.headers["Allow"] == "POST", r.headers
    for bpath, template in (("/v21.0/PNID/block_users", "/{version}/{phone_number_id}/block_users"),
                            ("/block_users", "/block_users")):
        users = {"messaging_product": "whatsapp", "block_users": [{"user": blockee}]}
        d.check(s.post(u + bpath, headers=api(), json=users), template, status=200)
        d.check(s.get(u + bpath, headers=api(), params={"limit": 5}), template, status=200)
        # An unblock carries its users in the body (upstream.c gives a DELETE its Content-Length).
        d.check(s.delete(u + bpath, headers=api(), json=users), template, status=200)
        d.check(s.get(u + bpath, headers=api(), params={"limit": 5}), template, status=200)
        d.check(s.delete(u + bpath, headers=api()), template, status=400)     # Meta's: no users named
    sim.configure(invalid_numbers=["+16315550111"])
    d.check(s.post(u + "/block_users", headers=api(), json={"messaging_product": "whatsapp", "block_users": [
        {"user": blockee}, {"user": "+16315550111"}]}), "/block_users", status=400)
    sim.configure(invalid_numbers=[])

    # -- paths forwarded by [proxy] forward_unknown, any method
    fs = "/v1/settings/application"
    d.check(s.get(u + fs, headers=api()), fs, status=200)
    # a change to the settings (they hold show_security_notifications) is an operator's act
    d.check(s.patch(u + fs, headers=api(), json={"show_security_notifications": True}), fs, status=403)
    d.check(s.patch(u + fs, headers=api(ADMIN_TOKEN), json={"show_security_notifications": True}), fs, status=200)
    # turned off by an operator: waguard reads the settings again at once (not at settings_check_s)
    # and, with security_notifications = ensure, turns it on again
    d.check(s.patch(u + fs, headers=api(ADMIN_TOKEN), json={"show_security_notifications": False}), fs, status=200)
    wait_for(lambda: sim.app_settings().get("show_security_notifications") is True, 5,
             what="show_security_notifications turned on again right after the forwarded change")
    d.check(s.patch(u + fs, headers=api(ADMIN_TOKEN), params={"batch": "[]"}, json={}), fs, status=400)
    d.check(s.get(u + fs), fs, status=401)
    d.check(s.get(u + fs, headers=api(WEBHOOK_TOKEN)), fs, status=403)
    d.check(s.put(u + "/v1/messages/" + new_msg_id(), headers=api(), json={"status": "read"}),
            "/v1/messages/{message_id}", status=404)                    # the simulator's own 404, passed through
    r = s.get(u + "/v1/messages/" + new_msg_id(), headers=api())        # never forwarded
    d.check_edge(r.status_code, lower_headers(r), r.content, "GET /v1/messages/{id}", code=404)
    r = s.get(u + "/no/such/path", headers=api())
    d.check_edge(r.status_code, lower_headers(r), r.content, "GET /no/such/path", code=404)

    # -- the operators' routes: reads with an api token, acts with an admin token
    ov = d.check(s.get(u + "/v1/overview", headers=api()), "/v1/overview", status=200)
    assert ov["redis"]["up"] is True and "pending" in ov and ov["role"] == "api" and ov["caller"] == "svc", ov
    assert ov["ack"] == "manual" and ov["holds"] == [{"category": "authentication", "seconds": 600}], ov
    ov = d.check(s.get(u + "/v1/overview", headers=api(ADMIN_TOKEN)), "/v1/overview", status=200)
    assert ov["role"] == "admin" and ov["security_notifications"]["state"] == "on", ov
    d.check(s.get(u + "/v1/overview"), "/v1/overview", status=401)
    d.check(s.get(u + "/v1/overview", headers=api(WEBHOOK_TOKEN)), "/v1/overview", status=403)
    r = s.delete(u + "/v1/overview", headers=api(ADMIN_TOKEN))
    d.check_edge(r.status_code, lower_headers(r), r.content, "DELETE /v1/overview", code=405)
    assert r.headers["Allow"] == "GET", r.headers

    ids = "/v1/identities"
    page = d.check(s.get(u + ids, headers=api(ADMIN_TOKEN), params={"state": "pending", "limit": 1}), ids, status=200)
    assert page["identities"] and page["identities"][0]["state"] == "pending"
    d.check(s.get(u + ids, headers=api(ADMIN_TOKEN), params={"state": "other"}), ids, status=400)
    # Changed on purpose: reads take an api token (the console shows them to both roles).
    d.check(s.get(u + ids, headers=api()), ids, status=200)
    d.check(s.get(u + ids, headers=api(WEBHOOK_TOKEN)), ids, status=403)
    held = d.check(s.get(u + ids, headers=api(), params={"state": "held"}), ids, status=200)
    assert changed in [i["wa_id"] for i in held["identities"]], held
    found = d.check(s.get(u + ids, headers=api(), params={"state": "pending", "q": changed}), ids, status=200)
    assert [i["wa_id"] for i in found["identities"]] == [changed], found
    d.check(s.get(u + ids, headers=api(), params={"limit": "0"}), ids, status=400)
    d.check(s.get(u + ids, headers=api(), params={"q": "x" * 600}), ids, status=400)
    one = "/v1/identities/{wa_id}"
    d.check(s.get(u + ids + "/" + changed, headers=api(ADMIN_TOKEN)), one, status=200)
    rec = d.check(s.get(u + ids + "/" + mx, headers=api()), one, status=200)
    assert rec["name"] == "Mexico Mobile" and rec["identity"] is None, rec
    d.check(s.get(u + ids + "/" + new_wa_id(), headers=api(ADMIN_TOKEN)), one, status=404)
    d.check(s.get(u + ids + "/x!", headers=api(ADMIN_TOKEN)), one, status=400)
    amb = d.check(s.get(u + ids + "/" + quote(mx_dialled, safe=""), headers=api()), one, status=409)
    assert mx in amb["considered"], amb
    d.check(s.get(u + ids + "/" + changed), one, status=401)
    ack = "/v1/identities/{wa_id}/ack"
    d.check(s.post(u + ids + "/%s/ack" % acked, headers=api(ADMIN_TOKEN)), ack, status=200)
    d.check(s.post(u + ids + "/%s/ack" % new_wa_id(), headers=api(ADMIN_TOKEN)), ack, status=404)
    d.check(s.post(u + ids + "/%s/ack" % changed, headers=api()), ack, status=403)
    d.check(s.post(u + ids + "/%s/ack" % changed, headers=api(ADMIN_TOKEN), data="[1]"), ack, status=400)
    d.check(s.post(u + ids + "/%s/ack" % quote(mx_dialled, safe=""), headers=api(ADMIN_TOKEN)), ack, status=409)
    # The WABA client knows the changed identity: the operator's ack goes through and is recorded.
    sim.set_identity(changed, "CHG1hash=", acknowledged=False)
    q = d.check(s.post(u + ids + "/%s/ack" % changed, headers=api(ADMIN_TOKEN), json={"reason": "called the customer"}),
                ack, status=202)
    assert q["state"] == "queued" and q["requested_by"] == "ops" and q["wa_id"] == changed, q
    wait_for(lambda: s.get(u + "/v1/gate/" + changed, params={"type": "template"}, headers=api()).status_code == 200,
             5, what="the gate opening after the operator's ack")
    rec = d.check(s.get(u + ids + "/" + changed, headers=api(ADMIN_TOKEN)), one, status=200)
    assert rec["identity"]["acknowledged"] is True and rec["acks"], rec
    assert any(a["result"] == "requested" and a["answer"] == "called the customer" for a in rec["acks"]), rec
    # Work the WABA client refuses is parked as failed, and listed so.
    gone = new_wa_id()
    d.check(wg.webhook(identity_change(gone, "GONE1hash=", 1602535238)), "/webhook", status=200)
    d.check(s.post(u + ids + "/%s/ack" % gone, headers=api(ADMIN_TOKEN)), ack, status=202)
    wait_for(lambda: s.get(u + ids, headers=api(ADMIN_TOKEN), params={"state": "failed"}).json()["identities"],
             5, what="the refused acknowledgement parked as failed")
    failed = d.check(s.get(u + ids, headers=api(ADMIN_TOKEN), params={"state": "failed"}), ids, status=200)
    assert failed["identities"][0]["last_error"], failed
    # ... and asked for again, all at once, when the count is the one the operator saw.
    retry = "/v1/identities/retry"
    n_failed = d.check(s.get(u + "/v1/overview", headers=api()), "/v1/overview", status=200)["failed"]
    assert n_failed >= 1
    d.check(s.post(u + retry, headers=api(ADMIN_TOKEN), json={"expected": n_failed + 5}), retry, status=409)
    d.check(s.post(u + retry, headers=api(ADMIN_TOKEN), json={"expected": "all"}), retry, status=400)
    d.check(s.post(u + retry, headers=api(), json={"expected": n_failed}), retry, status=403)
    done = d.check(s.post(u + retry, headers=api(ADMIN_TOKEN), json={"expected": n_failed, "reason": "WABA back"}),
                   retry, status=202)
    assert done["retried"] == n_failed, done
    r = s.put(u + retry, headers=api(ADMIN_TOKEN))
    d.check_edge(r.status_code, lower_headers(r), r.content, "PUT /v1/identities/retry", code=405)
    assert r.headers["Allow"] == "POST", r.headers
    # a path a route names exactly is that route's: never read as a user called "retry"
    r = s.get(u + retry, headers=api(ADMIN_TOKEN))
    d.check_edge(r.status_code, lower_headers(r), r.content, "GET /v1/identities/retry", code=405)
    assert r.headers["Allow"] == "POST", r.headers

    # -- account-takeover holds and the CAMARA-shaped identity-change check
    rel = "/v1/identities/{wa_id}/release"
    d.check(s.post(u + ids + "/%s/release" % changed, headers=api(ADMIN_TOKEN),
                   json={"reason": "verified by phone"}), rel, status=200)
    d.check(s.get(u + "/v1/gate/" + changed, params={"type": "template", "category": "authentication"},
                  headers=api()), g, status=200)
    d.check(s.post(u + ids + "/%s/release" % changed, headers=api(ADMIN_TOKEN), json={}), rel, status=400)
    r = d.check(s.post(u + ids + "/%s/release" % changed, headers=api(ADMIN_TOKEN),
                       json={"reason": "r", "category": "marketing"}), rel, status=400)
    assert r["errors"][0]["title"] == "Unknown category", r            # as the gate answers it
    d.check(s.post(u + ids + "/%s/release" % new_wa_id(), headers=api(ADMIN_TOKEN),
                   json={"reason": "r"}), rel, status=404)
    d.check(s.post(u + ids + "/%s/release" % free, headers=api(ADMIN_TOKEN),
                   json={"reason": "r"}), rel, status=404)                # no identity change on record
    d.check(s.post(u + ids + "/%s/release" % quote(mx_dialled, safe=""), headers=api(ADMIN_TOKEN),
                   json={"reason": "r"}), rel, status=409)
    d.check(s.post(u + ids + "/%s/release" % changed, headers=api(), json={"reason": "r"}), rel, status=403)
    for route, extra in (("/identity-change/check", {"maxAge": 24}), ("/identity-change/retrieve-date", {})):
        d.check(s.post(u + route, headers=api(), json=dict(extra, phoneNumber="+" + changed)), route, status=200)
        d.check(s.post(u + route, headers=api(), json=dict(extra, phoneNumber="+" + free)), route, status=200)
        d.check(s.post(u + route, headers=api(), json={"phoneNumber": "nope"}), route, status=400)
        d.check(s.post(u + route, headers=api(), json=dict(extra, phoneNumber="+" + new_wa_id())), route,
                status=404)
        d.check(s.post(u + route, json={"phoneNumber": "+" + free}), route, status=401)

    # -- the audit log
    au = "/v1/audit"
    log = d.check(s.get(u + au, headers=api()), au, status=200)
    assert log["entries"] and log["entries"][0]["at"], log
    mine = d.check(s.get(u + au, headers=api(), params={"wa_id": "+" + changed, "limit": 1}), au, status=200)
    assert mine["entries"][0]["wa_id"] == changed and mine["next_cursor"], mine
    d.check(s.get(u + au, headers=api(), params={"wa_id": changed, "cursor": mine["next_cursor"]}), au, status=200)
    why = d.check(s.get(u + au, headers=api(), params={"q": "VERIFIED BY PHONE"}), au, status=200)
    assert why["entries"] and why["entries"][0]["result"] == "hold_released:*", why
    d.check(s.get(u + au, headers=api(), params={"wa_id": new_wa_id()}), au, status=404)
    d.check(s.get(u + au, headers=api(), params={"wa_id": mx_dialled}), au, status=409)
    d.check(s.get(u + au, headers=api(), params={"limit": "1001"}), au, status=400)
    d.check(s.get(u + au, headers=api(), params={"cursor": "abc"}), au, status=400)
    d.check(s.get(u + au, headers=api(), params={"q": "x" * 600}), au, status=400)
    d.check(s.get(u + au), au, status=401)
    d.check(s.get(u + au, headers=api(WEBHOOK_TOKEN)), au, status=403)

    # -- the answers every path may give, on the raw socket
    st, hd, content = raw_http(wg.port, b"FROB /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    d.check_edge(st, hd, content, "FROB /healthz", code=501)
    assert hd.get("connection") == "close", hd
    st, hd, content = raw_http(wg.port, b"POST /v1/gate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                         b"Content-Length: 2\r\n\r\n{}")
    d.check_edge(st, hd, content, "two Content-Lengths", code=400, path="/v1/gate")
    st, hd, content = raw_http(wg.port, b"POST /v1/gate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
    d.check_edge(st, hd, content, "a body over max_body_bytes", code=413, path="/v1/gate")
    # ... and on a Cloud path, in Graph's envelope (read from the head that was refused)
    st, hd, content = raw_http(wg.port, b"FROB /v21.0/PNID/messages HTTP/1.1\r\nHost: x\r\n\r\n")
    d.check_edge(st, hd, content, "FROB /v21.0/PNID/messages", code=501)
    st, hd, content = raw_http(wg.port, b"POST /v21.0/PNID/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                         b"Content-Length: 2\r\n\r\n{}")
    d.check_edge(st, hd, content, "POST /v21.0/PNID/messages (two Content-Lengths)", code=400)
    st, hd, content = raw_http(wg.port, b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
    d.check_edge(st, hd, content, "POST /messages (a body over max_body_bytes)", code=413)
    # HEAD of what anyone may GET (health checkers use it): the GET's status, no body
    r = s.head(u + "/healthz")
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.headers)
    r = s.head(u + "/v1/gate/16315551234", headers=api())
    assert r.status_code == 405 and r.headers["Allow"] == "GET", (r.status_code, r.headers)

    # -- the WABA client slow
    sim.delay(1500, count=1, path_prefix="/v1/messages")      # timeout_ms is 500
    d.check(s.post(u + mp, headers=api(), json={"to": free, "type": "text", "text": {"body": "hi"}}), mp, status=504)

    # -- Redis gone (the WABA client still answers)
    redis_srv.stop()
    wait_for(lambda: s.get(u + "/readyz").status_code == 503, 10, what="/readyz 503 with Redis stopped")
    d.check(s.get(u + "/readyz"), "/readyz", status=503)
    dec = d.check(s.get(u + "/v1/gate/" + free, headers=api()), g, status=423)
    assert dec["reasons"] == ["store_unavailable"]
    d.check(wg.webhook(inbound_text(free, msg_id="wamid." + uuid.uuid4().hex)), "/webhook", status=503)
    d.check(s.get(u + ids, headers=api(ADMIN_TOKEN)), ids, status=503)
    d.check(s.get(u + "/metrics"), "/metrics", status=200)
    ov = d.check(s.get(u + "/v1/overview", headers=api()), "/v1/overview", status=200)
    assert ov["redis"]["up"] is False and "pending" not in ov, ov
    d.check(s.get(u + ids + "/" + changed, headers=api()), one, status=503)
    d.check(s.post(u + ids + "/%s/ack" % changed, headers=api(ADMIN_TOKEN)), ack, status=503)
    d.check(s.post(u + ids + "/%s/release" % changed, headers=api(ADMIN_TOKEN), json={"reason": "r"}), rel,
            status=503)
    d.check(s.post(u + retry, headers=api(ADMIN_TOKEN), json={"expected": 0}), retry, status=503)
    d.check(s.get(u + au, headers=api()), au, status=503)
    d.check(s.post(u + "/identity-change/check", headers=api(), json={"phoneNumber": "+" + free}),
            "/identity-change/check", status=503)
    d.check(s.post(u + "/v1/contacts", headers=api(), json={"contacts": ["+16315550199"]}), "/v1/contacts",
            status=503)                                                  # the budget cannot be counted
    d.check(s.post(u + "/v1/contacts/%s/block" % free, headers=api(), json={}), blk + "block", status=503)
    d.check(s.post(u + "/block_users", headers=api(), json={"messaging_product": "whatsapp",
                                                             "block_users": [{"user": blockee}]}),
            "/block_users", status=503)
    d.check(s.get(u + "/v1/contacts/%s/identity" % looked, headers=api()), idp, status=200)   # best effort

    # -- Redis back, the WABA client gone
    redis_srv.start()
    wait_for(lambda: s.get(u + "/readyz").status_code == 200, 15, what="/readyz 200 with Redis back")
    sim.stop()
    d.check(s.post(u + mp, headers=api(), json={"to": new_wa_id(), "type": "template",
                                                 "template": {"name": "hello"}}), mp, status=502)


def cloud_answers(d, procs):
    """The Cloud API: Meta's signature on webhooks, the identity key check, user ids, 137000."""
    redis_srv = procs.redis()
    sim = procs.sim(auth="bearer", bearer_token=CLOUD_TOKEN)
    wg = procs.daemon(redis_srv, sim, overrides={
        "upstream": {"api": "cloud", "auth": "bearer", "token_file": "cloud_token", "phone_number_id": "PNID",
                     "identity_check": "on", "blocklist_sync_s": "0"},
        "webhook": {"hmac_secret_file": "hmac_secret"},
        "hold": HOLD,
    }, files={"cloud_token": CLOUD_TOKEN + "\n"})
    u = wg.url
    s = requests.Session()

    def hook(payload, **kw):
        return wg.webhook(payload, hmac_secret=HMAC_SECRET, **kw)

    wait_for(lambda: s.get(u + "/readyz").json().get("identity_check") == {"PNID": "on"}, 5,
             what="Meta's identity key check turned on for PNID")
    d.check(s.get(u + "/readyz"), "/readyz", status=200)
    ov = d.check(s.get(u + "/v1/overview", headers=api()), "/v1/overview", status=200)
    assert ov["api"] == "cloud" and ov["numbers"] == ["PNID"] and ov["identity_check"] == {"PNID": "on"}, ov

    # -- webhooks need Meta's signature; the token does not stand in for it
    w = world_wa_id("GB")
    d.check(hook(cloud_inbound(w, key_hash="K1=")), "/webhook", status=200)
    d.check(wg.webhook(cloud_inbound(w, key_hash="K1=")), "/webhook", status=401)
    d.check(wg.webhook(cloud_inbound(w, key_hash="K1="), signature="sha256=" + "0" * 64), "/webhook", status=401)
    d.check(hook(cloud_inbound(w, key_hash="K1="), token="wrong-token-123"), "/webhook", status=401)

    # -- gated sends, pinned, and refused by Meta for identity
    cm, pm, mm = ("/{version}/{phone_number_id}/messages", "/messages",
                  "/{version}/{phone_number_id}/marketing_messages")
    d.check(s.post(u + "/v21.0/PNID/messages", headers=api(), json=cloud_msg(w, "text")), cm, status=200)
    d.check(s.post(u + "/v21.0/PNID/marketing_messages", headers=api(), json=cloud_msg(w)), mm, status=200)
    auth_tpl = {"messaging_product": "whatsapp", "recipient": "US.13491208655302741918", "type": "template",
                "template": {"name": "otp_login", "language": {"code": "en"}}}
    for path, template in (("/v21.0/PNID/messages", cm), ("/v21.0/PNID/marketing_messages", mm)):
        r = d.check(s.post(u + path, headers=api(), json=auth_tpl), template, status=400)
        assert r["error"]["code"] == 131062, r
    r = d.check(s.post(u + "/v21.0/PNID/messages?fields=x", headers=api(), json=cloud_msg(w)), cm, status=400)
    assert r["error"]["code"] == 100, r
    d.check(s.post(u + "/v21.0/PNID/messages", json=cloud_msg(w)), cm, status=401)
    d.check(s.post(u + "/v21.0/PNID/messages", headers=api(WEBHOOK_TOKEN), json=cloud_msg(w)), cm, status=403)
    sim.configure(send_refusal="137000")
    r = d.check(s.post(u + "/v21.0/PNID/messages", headers=api(), json=cloud_msg(w)), cm, status=400)
    assert r["error"]["code"] == 137000, r                              # Meta's, passed through
    sim.configure(send_refusal=None)
    g = "/v1/gate/{wa_id}"
    dec = d.check(s.get(u + "/v1/gate/" + w, headers=api()), g, status=423)
    assert dec["identity"]["hash_unknown"] is True, dec
    for path, template in (("/v21.0/PNID/messages", cm), ("/messages", pm), ("/v21.0/PNID/marketing_messages", mm)):
        r = d.check(s.post(u + path, headers=api(), json=cloud_msg(w)), template, status=423)
        assert r["error"]["type"] == "WaguardGateRefusal" and r["decision"]["identity"]["hash_unknown"], r
    ack = "/v1/identities/{wa_id}/ack"
    r = d.check(s.post(u + "/v1/identities/%s/ack" % w, headers=api(ADMIN_TOKEN)), ack, status=409)
    assert "not known yet" in r["errors"][0]["title"], r
    # the failed status of a send refused for identity is in the user's history
    d.check(hook(cloud({"statuses": [{"id": new_msg_id("wamid."), "status": "failed", "recipient_id": w,
                                      "timestamp": str(now_s() - 5), "errors": [{"code": 137000}]}]})),
            "/webhook", status=200)
    rec = d.check(s.get(u + "/v1/identities/" + w, headers=api()), "/v1/identities/{wa_id}", status=200)
    assert rec["identity"]["state"] == "hash_unknown" and rec["history"][0]["source"] == "refused", rec

    # -- two key hashes as old as each other: which one the user holds cannot be told
    w3, t3 = world_wa_id("DE"), now_s() - 120
    d.check(hook(cloud_inbound(w3, key_hash="TB=", ts=t3)), "/webhook", status=200)
    d.check(hook(cloud_inbound(w3, key_hash="TA=", ts=t3)), "/webhook", status=200)
    rec = d.check(s.get(u + "/v1/identities/" + w3, headers=api()), "/v1/identities/{wa_id}", status=200)
    assert rec["history"][0].get("tied_with") == "TB=", rec

    # -- a retired user id names the new one
    u1, u2, w2 = "GB.100200300", "GB.400500600", world_wa_id("GB")
    d.check(hook(cloud_inbound(uid=u1, key_hash="GK1=")), "/webhook", status=200)
    d.check(hook(cloud({"messages": [{"from_user_id": u1, "id": new_msg_id("wamid."), "timestamp": str(now_s() - 30),
                                      "type": "system", "system": {"type": "user_changed_user_id", "body": "x",
                                                                   "user_id": u2, "previous_user_id": u1}}]})),
            "/webhook", status=200)
    d.check(hook(cloud_inbound(w2, uid=u2)), "/webhook", status=200)
    dec = d.check(s.get(u + "/v1/gate/" + u1, headers=api()), g, status=423)
    assert "number_changed" in dec["reasons"] and dec["new_user_id"] == u2, dec
    rec = d.check(s.get(u + "/v1/identities/" + u2, headers=api()), "/v1/identities/{wa_id}", status=200)
    assert set(rec["last_inbound_by_number"]) == {"PNID"} and rec["last_inbound"], rec   # the window per number
    # a block through one business number is that number's: the record shows it per number
    d.check(s.post(u + "/v21.0/PNID/block_users", headers=api(),
                   json={"messaging_product": "whatsapp", "block_users": [{"user": w2}]}),
            "/{version}/{phone_number_id}/block_users", status=200)
    rec = d.check(s.get(u + "/v1/identities/" + w2, headers=api()), "/v1/identities/{wa_id}", status=200)
    assert rec["blocked"] is True and rec["blocked_by_number"] == {"PNID": True}, rec

    # -- the Calling API is refused; other Cloud paths are forwarded
    for m in ("post", "get"):
        r = d.check(s.request(m, u + "/v21.0/PNID/calls", headers=api(), json={}), "/{version}/{phone_number_id}/calls",
                    status=400)
        assert r["error"]["message"] == "Calls are not forwarded", r
        d.check(s.request(m, u + "/v21.0/PNID/calls"), "/{version}/{phone_number_id}/calls", status=401)
        d.check(s.request(m, u + "/v21.0/PNID/calls", headers=api(WEBHOOK_TOKEN)), "/{version}/{phone_number_id}/calls",
                status=403)
    fs = "/{version}/{phone_number_id}/settings"
    got = d.check(s.get(u + "/v21.0/PNID/settings", headers=api()), fs, status=200)
    assert got["user_identity_change"]["enable_identity_key_check"] is True, got
    # a change to a number's settings (they hold the identity key check) is an operator's act
    d.check(s.post(u + "/v21.0/PNID/settings", headers=api(), json={"calling": {"status": "DISABLED"}}), fs,
            status=403)
    d.check(s.post(u + "/v21.0/PNID/settings", headers=api(ADMIN_TOKEN), json={"calling": {"status": "DISABLED"}}),
            fs, status=200)
    # the identity key check turned off by an operator: waguard turns it on again at once
    d.check(s.post(u + "/v21.0/PNID/settings", headers=api(ADMIN_TOKEN),
                   json={"user_identity_change": {"enable_identity_key_check": False}}), fs, status=200)
    wait_for(lambda: s.get(u + "/v21.0/PNID/settings", headers=api()).json()
             ["user_identity_change"]["enable_identity_key_check"] is True, 5,
             what="Meta's identity key check turned on again right after the forwarded change")
    d.check(s.get(u + "/v21.0/PNID/settings", headers=api(), params={"batch": "[]"}), fs, status=400)
    d.check(s.post(u + "/v21.0/PNID/settings", headers=api(ADMIN_TOKEN), data="batch=%5B%5D"), fs, status=400)
    d.check(s.get(u + "/v21.0/PNID/settings"), fs, status=401)
    d.check(s.get(u + "/v21.0/PNID/settings", headers=api(WEBHOOK_TOKEN)), fs, status=403)


def security_notifications_off_answers(d, procs):
    """On-Premises with show_security_notifications off and [upstream] security_notifications =
    check: the WABA client sends no identity change, so waguard is not ready."""
    redis_srv = procs.redis()
    sim = procs.sim()                       # show_security_notifications starts false
    wg = procs.daemon(redis_srv, sim, overrides={"upstream": {"security_notifications": "check"}}, wait=False)
    s = requests.Session()

    def off():
        # the setting's reason, not "connecting to Redis", which a slow start shows first
        r = s.get(wg.url + "/readyz", timeout=2)
        return (r.status_code == 503 and r.json().get("security_notifications", {}).get("state") == "off"
                and "show_security_notifications" in r.json().get("reason", ""))
    wait_for(off, 10, what="/readyz 503 naming show_security_notifications")
    rd = d.check(s.get(wg.url + "/readyz"), "/readyz", status=503)
    assert rd["security_notifications"]["policy"] == "check" and "show_security_notifications" in rd["reason"], rd
    ov = d.check(s.get(wg.url + "/v1/overview", headers=api()), "/v1/overview", status=200)
    assert ov["security_notifications"]["state"] == "off", ov
    assert not sim.calls_matching(method="PATCH", path="/v1/settings/application"), "check never turns it on"
