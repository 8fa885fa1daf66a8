"""Credentials per role, the webhook's bearer/HMAC check, the Cloud API handshake, the body
limit, and the open routes (/healthz, /readyz, /metrics)."""
import json
import signal
import socket

import pytest
import requests

from daemon import (ADMIN_TOKEN, API_TOKEN, HMAC_SECRET, VERIFY_TOKEN, WEBHOOK_TOKEN)
from helpers import (assert_error_body, check_gate_response, errors_body, hmac_sig,
                     identity_change, metric_present, metric_value, new_wa_id,
                     wait_for, world_wa_id)

T0 = 1602535238


# ----------------------------------------------------------------------------- role matrix

def api_routes(w):
    return [("GET", "/v1/gate/%s?type=text" % w, None),
            ("POST", "/v1/gate", {"type": "text", "wa_ids": [w]})]


def admin_routes(w):
    return [("GET", "/v1/identities?state=pending", None),
            ("GET", "/v1/identities/%s" % w, None),
            ("POST", "/v1/identities/%s/ack" % w, None)]


def call(wg, method, path, payload, token=None, auth_header=None):
    h = {}
    if auth_header is not None:
        h["Authorization"] = auth_header
    kw = {"json": payload} if payload is not None else {}
    return wg.request(method, path, token=token, headers=h, **kw)


@pytest.mark.parametrize("cred", ["none", "garbage", "basic", "empty-bearer"])
def test_unknown_credentials_401(waguard, cred):
    w = new_wa_id()
    for method, path, payload in api_routes(w) + admin_routes(w):
        if cred == "none":
            r = call(waguard, method, path, payload)
        elif cred == "garbage":
            r = call(waguard, method, path, payload, token="not-a-real-token-xyz")
        elif cred == "basic":
            r = call(waguard, method, path, payload, auth_header="Basic YWRtaW46c2VjcmV0")
        else:
            r = call(waguard, method, path, payload, auth_header="Bearer ")
        assert r.status_code == 401, (cred, method, path, r.status_code, r.text)
        assert_error_body(r, 401)


def test_webhook_token_on_api_and_admin_routes_403(waguard):
    w = new_wa_id()
    for method, path, payload in api_routes(w) + admin_routes(w):
        r = call(waguard, method, path, payload, token=WEBHOOK_TOKEN)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert_error_body(r, 403)


def test_api_token_reads_identity_state_but_never_acts(waguard):
    """An api token sees what an operator sees (the console's read-only view), and every
    route that changes identity state refuses it (403)."""
    w = new_wa_id()
    waguard.webhook(identity_change(w, "RO=", T0))
    for method, path, payload in admin_routes(w):
        r = call(waguard, method, path, payload, token=API_TOKEN)
        if method == "GET":
            assert r.status_code == 200, (method, path, r.status_code, r.text)
        else:
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert_error_body(r, 403)
    assert any(m != "GET" for m, _, _ in admin_routes(w))
    assert waguard.identity(w)["identity"]["acknowledged"] is False


def test_api_token_on_api_routes(waguard):
    w = new_wa_id()
    r = call(waguard, *api_routes(w)[0], token=API_TOKEN)
    check_gate_response(r, w)
    r = call(waguard, *api_routes(w)[1], token=API_TOKEN)
    assert r.status_code == 200, r.text


def test_admin_token_everywhere_but_webhook(waguard):
    w = new_wa_id()
    waguard.webhook(identity_change(w, "ADM=", T0))
    r = call(waguard, *api_routes(w)[0], token=ADMIN_TOKEN)
    check_gate_response(r, w)
    r = call(waguard, *api_routes(w)[1], token=ADMIN_TOKEN)
    assert r.status_code == 200, r.text
    r = call(waguard, "GET", "/v1/identities?state=pending", None, token=ADMIN_TOKEN)
    assert r.status_code == 200, r.text
    assert w in [i["wa_id"] for i in r.json()["identities"]]
    r = call(waguard, "GET", "/v1/identities/" + w, None, token=ADMIN_TOKEN)
    assert r.status_code == 200, r.text
    r = call(waguard, "POST", "/v1/identities/%s/ack" % w, None, token=ADMIN_TOKEN)
    assert r.status_code == 202, r.text


def test_named_tokens_and_comments(waguard_factory):
    """Token files: NAME:TOKEN, bare TOKEN, '#' comments and blank lines."""
    wg = waguard_factory(files={"api_tokens": "# a comment\n\nsvc-a:token-aaaa-1111\ntoken-bbbb-2222\n"})
    w = new_wa_id()
    for tok in ("token-aaaa-1111", "token-bbbb-2222"):
        check_gate_response(wg.gate(w, token=tok), w)
    for tok in ("svc-a:token-aaaa-1111", "svc-a", "# a comment", API_TOKEN):
        assert wg.gate(w, token=tok).status_code == 401, tok


# ----------------------------------------------------------------------------- webhook bearer

def test_webhook_bearer(waguard):
    b = errors_body()
    assert waguard.webhook(b).status_code == 200
    assert_error_body(waguard.webhook(b, token=None), 401)
    assert_error_body(waguard.webhook(b, token="wrong-token-1234"), 401)
    assert_error_body(waguard.webhook(b, token=WEBHOOK_TOKEN + "x"), 401)
    assert_error_body(waguard.webhook(b, token=WEBHOOK_TOKEN[:-1]), 401)
    r = waguard.webhook(b, token=API_TOKEN)
    assert r.status_code in (401, 403), r.text


def test_webhook_401_before_parsing_and_nothing_recorded(waguard, redis_client):
    assert waguard.webhook(b"{", token=None).status_code == 401
    w = new_wa_id()
    assert waguard.webhook(identity_change(w, "NOAUTH=", T0), token="bad-token-0000").status_code == 401
    d = check_gate_response(waguard.gate(w, type="template"), w)
    assert d["identity"] is None and d["allowed"] is True
    assert redis_client.xlen(waguard.key("events")) == 0


# ----------------------------------------------------------------------------- webhook HMAC

@pytest.fixture
def hmac_wg(waguard_factory):
    return waguard_factory({"webhook": {"token_file": "", "hmac_secret_file": "hmac_secret"}})


def test_webhook_hmac(hmac_wg):
    wg = hmac_wg
    w = new_wa_id()
    raw = json.dumps(identity_change(w, "HMAC=", T0)).encode()
    r = wg.webhook(raw, token=None, hmac_secret=HMAC_SECRET)
    assert r.status_code == 200, r.text
    assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "HMAC="


def test_webhook_hmac_key_follows_a_reload(hmac_wg):
    """The signing key is made ready when the configuration is read: a reload with a new app
    secret takes it at once, and a body signed with the old one is refused from then on."""
    wg = hmac_wg
    w = world_wa_id("ID")
    raw = json.dumps(errors_body()).encode()
    assert wg.webhook(raw, token=None, hmac_secret=HMAC_SECRET).status_code == 200
    (wg.workdir / "hmac_secret").write_text("a-rotated-app-secret-2026\n")
    wg.send_signal(signal.SIGHUP)
    wait_for(lambda: wg.webhook(raw, token=None, hmac_secret="a-rotated-app-secret-2026").status_code == 200,
             10, what="the rotated app secret accepted after SIGHUP")
    assert wg.webhook(raw, token=None, hmac_secret=HMAC_SECRET).status_code == 401
    body_ = json.dumps(identity_change(w, "Um90YXRlZA==", T0)).encode()
    assert wg.webhook(body_, token=None, hmac_secret="a-rotated-app-secret-2026").status_code == 200
    assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "Um90YXRlZA=="
    assert wg.alive()


def test_webhook_hmac_over_raw_bytes(hmac_wg):
    """The signature is over the bytes as received: non-ASCII and odd spacing included."""
    wg = hmac_wg
    w = new_wa_id()
    raw = ('{ "messages" : [ {"from":"%s","id":"gRaw1%s","timestamp":"%d","type":"text",'
           '"text":{"body":"h\u00e9llo \U0001F600 \\u00e9"}} ] }' % (w, w, T0)).encode("utf-8")
    assert wg.webhook(raw, token=None, hmac_secret=HMAC_SECRET).status_code == 200


@pytest.mark.parametrize("case", ["missing", "wrong-secret", "other-body", "no-prefix",
                                  "truncated", "garbage", "bearer-instead"])
def test_webhook_hmac_wrong_401(hmac_wg, redis_client, case):
    wg = hmac_wg
    raw = json.dumps(errors_body()).encode()
    good = hmac_sig(HMAC_SECRET, raw)
    if case == "missing":
        r = wg.webhook(raw, token=None)
    elif case == "wrong-secret":
        r = wg.webhook(raw, token=None, hmac_secret="another-secret")
    elif case == "other-body":
        r = wg.webhook(raw, token=None, signature=hmac_sig(HMAC_SECRET, raw + b" "))
    elif case == "no-prefix":
        r = wg.webhook(raw, token=None, signature=good[len("sha256="):])
    elif case == "truncated":
        r = wg.webhook(raw, token=None, signature=good[:-2])
    elif case == "garbage":
        r = wg.webhook(raw, token=None, signature="sha256=zz" + "0" * 62)
    else:
        r = wg.webhook(raw, token=WEBHOOK_TOKEN)
    assert_error_body(r, 401)
    assert redis_client.xlen(wg.key("events")) == 0


def test_webhook_hmac_checked_before_json(hmac_wg):
    r = hmac_wg.webhook(b"[1,2", token=None, hmac_secret="bad")
    assert r.status_code == 401
    r = hmac_wg.webhook(b"[1,2", token=None, hmac_secret=HMAC_SECRET)
    assert r.status_code == 400


# ----------------------------------------------------------------------------- handshake

def handshake(wg, mode="subscribe", token=VERIFY_TOKEN, challenge="1158201444", path="/webhook"):
    params = {}
    if mode is not None:
        params["hub.mode"] = mode
    if token is not None:
        params["hub.verify_token"] = token
    if challenge is not None:
        params["hub.challenge"] = challenge
    return wg.session.get(wg.url + path, params=params, timeout=10)


def test_verification_handshake(waguard):
    r = handshake(waguard)
    assert r.status_code == 200, r.text
    assert r.text == "1158201444"
    for kw in ({"token": "wrong"}, {"token": None}, {"mode": "unsubscribe"}, {"mode": None},
               {"token": VERIFY_TOKEN + "x"}):
        r = handshake(waguard, **kw)
        assert r.status_code == 403, (kw, r.status_code, r.text)
        assert "1158201444" not in r.text


def test_verification_handshake_without_verify_token(waguard_factory):
    wg = waguard_factory({"webhook": {"verify_token_file": ""}})
    assert handshake(wg).status_code == 403
    assert handshake(wg, token="").status_code == 403


# ----------------------------------------------------------------------------- open routes

def test_healthz_readyz_metrics(waguard):
    r = requests.get(waguard.url + "/healthz", timeout=5)
    assert r.status_code == 200
    r = requests.get(waguard.url + "/readyz", timeout=5)
    assert r.status_code == 200
    text = waguard.metrics_text()
    s = waguard.metrics()
    assert metric_present(s, "waguard_build_info"), text[:2000]
    assert any(n == "waguard_build_info" and l.get("version") for n, l, v in s), text[:2000]
    assert metric_value(s, "waguard_redis_up") == 1
    for name in ("waguard_http_requests_total", "waguard_webhook_duplicates_total",
                 "waguard_identity_late_total", "waguard_dead_letters_total",
                 "waguard_fail_open_total", "waguard_identities_pending",
                 "waguard_ack_queue_depth"):
        assert metric_present(s, name), name
    assert "# TYPE waguard_http_request_duration_seconds histogram" in text


def test_http_requests_counted_by_route_and_code(waguard):
    s0 = waguard.metrics()
    waguard.webhook(b"[]")
    s1 = waguard.metrics()
    before = metric_value(s0, "waguard_http_requests_total", code="400")
    assert metric_value(s1, "waguard_http_requests_total", code="400") == before + 1


def test_unknown_route_404(waguard):
    # Outside /v1/ and the Cloud /{version}/: nothing to forward.
    r = waguard.get("/nothing-here", token=ADMIN_TOKEN)
    assert r.status_code == 404, r.text
    # Under /v1/, forward_unknown (the default) sends it to the WABA client, unreachable here.
    r = waguard.get("/v1/nothing-here", token=ADMIN_TOKEN)
    assert r.status_code in (502, 504), r.text


# ----------------------------------------------------------------------------- body limit

@pytest.fixture
def small_body_wg(waguard_factory):
    return waguard_factory({"server": {"max_body_bytes": "4096"}})


def padded(size):
    """A valid webhook body of exactly `size` bytes."""
    base = json.dumps(errors_body(details=""))
    pad = size - len(base)
    assert pad >= 0
    b = json.dumps(errors_body(details="x" * pad)).encode()
    assert len(b) == size
    return b


def test_body_limit_413(small_body_wg):
    wg = small_body_wg
    assert wg.webhook(padded(4000)).status_code == 200
    assert wg.webhook(padded(4096)).status_code == 200
    r1 = wg.webhook(padded(4097))
    assert r1.status_code == 413, r1.text
    r2 = wg.webhook(padded(60000))
    assert r2.status_code == 413, r2.text
    # the daemon is fine afterwards
    assert wg.webhook(padded(1000)).status_code == 200
    # The 413 is waguard's JSON error envelope (the declared length is checked on the
    # request head, before the body is read: tests/test_http_edge.py), not libevent's page.
    for r in (r1, r2):
        j = assert_error_body(r, 413)
        assert "max_body_bytes (4096)" in j["errors"][0]["details"], j
        assert r.headers.get("Connection", "").lower() == "close", r.headers


def test_body_limit_chunked(small_body_wg):
    wg = small_body_wg
    data = padded(20000)

    def gen():
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]
    try:
        r = requests.post(wg.url + "/webhook", data=gen(), timeout=10,
                          headers={"Authorization": "Bearer " + WEBHOOK_TOKEN,
                                   "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
    except requests.ConnectionError:
        pass   # the daemon may close the connection after its 413; it must stay up
    assert requests.get(wg.url + "/healthz", timeout=5).status_code == 200
    assert wg.webhook(padded(1000)).status_code == 200


def test_body_limit_applies_to_api(small_body_wg):
    ids = [new_wa_id() for _ in range(600)]
    r = small_body_wg.gate_batch(ids)
    assert r.status_code == 413, r.text


def test_huge_header_rejected_and_alive(waguard):
    s = socket.create_connection(("127.0.0.1", waguard.port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
        data = s.recv(100)
    except OSError:
        data = b""
    finally:
        s.close()
    assert not data.startswith(b"HTTP/1.1 200"), data
    wait_for(lambda: requests.get(waguard.url + "/healthz", timeout=5).status_code == 200, 5,
             what="/healthz after an oversized header")


def test_auth_checked_before_validation(waguard):
    """An unauthenticated caller learns nothing about the input: 401 comes first."""
    for method, path, kw in (("GET", "/v1/gate/not-a-number?type=text", {}),
                             ("POST", "/v1/gate", {"data": b"[1"}),
                             ("GET", "/v1/identities?state=bogus&limit=-1", {}),
                             ("GET", "/v1/identities/not-a-number", {})):
        r = waguard.request(method, path, **kw)
        assert_error_body(r, 401)


def test_bad_input_with_credentials_400(waguard):
    assert_error_body(waguard.gate("not-a-number", type="text"), 400)
    assert_error_body(waguard.admin_get("/v1/identities?state=bogus"), 400)
    assert_error_body(waguard.admin_get("/v1/identities?state=pending&limit=-1"), 400)
