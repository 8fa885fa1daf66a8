"""Tests of the WABA client simulator itself (tests/waba_sim.py)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import waba_sim  # noqa: E402
from helpers import free_port  # noqa: E402
from waba_sim import WabaSim, make_test_ca, make_wrong_cert, make_wrong_host_cert  # noqa: E402

ACCESS_DENIED = {"errors": [{"code": 1005, "title": "Access denied",
                             "details": "Invalid credentials."}],
                 "meta": {"api_status": "stable", "version": "2.53.1"}}
WA = "16315551234"


@pytest.fixture
def sim():
    with WabaSim() as s:
        yield s


def login(sim, session=None, user="admin", pw="secret"):
    r = (session or requests).post(sim.url + "/v1/users/login", auth=(user, pw), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["users"][0]["token"]


def authed(sim):
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + login(sim, s)
    return s


# --- login and tokens ---------------------------------------------------------------------------

def test_login_answer_shape_and_use(sim):
    r = requests.post(sim.url + "/v1/users/login", auth=("admin", "secret"), timeout=5)
    assert r.status_code == 200
    user = r.json()["users"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", user["expires_after"])
    # 7 days from now by default
    exp = time.mktime(time.strptime(user["expires_after"][:19], "%Y-%m-%d %H:%M:%S")) \
        - time.timezone
    assert abs(exp - (time.time() + 7 * 86400)) < 5
    ok = requests.get(sim.url + "/v1/health", timeout=5,
                      headers={"Authorization": "Bearer " + user["token"]})
    assert ok.status_code == 200
    assert sim.state()["login_count"] == 1


def test_login_bad_password_and_missing_token(sim):
    r = requests.post(sim.url + "/v1/users/login", auth=("admin", "nope"), timeout=5)
    assert r.status_code == 401
    assert r.json() == ACCESS_DENIED
    r = requests.get(sim.url + "/v1/contacts/%s/identity" % WA, timeout=5)
    assert r.status_code == 401 and r.json() == ACCESS_DENIED
    r = requests.get(sim.url + "/v1/contacts/%s/identity" % WA, timeout=5,
                     headers={"Authorization": "Bearer made-up"})
    assert r.status_code == 401 and r.json() == ACCESS_DENIED
    st = sim.state()
    assert st["login_count"] == 0 and st["login_failures"] == 1


def test_token_expires_after_ttl():
    with WabaSim(token_ttl_s=0.3) as s:
        sess = authed(s)
        assert sess.get(s.url + "/v1/health", timeout=5).status_code == 200
        time.sleep(0.45)
        r = sess.get(s.url + "/v1/health", timeout=5)
        assert r.status_code == 401 and r.json() == ACCESS_DENIED
        # a new login gives a working token again
        sess.headers["Authorization"] = "Bearer " + login(s)
        assert sess.get(s.url + "/v1/health", timeout=5).status_code == 200
        assert s.state()["login_count"] == 2


def test_expire_tokens_knob(sim):
    sess = authed(sim)
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 200
    r = requests.post(sim.url + "/_sim/expire_tokens", timeout=5)
    assert r.json() == {"ok": True, "expired": 1}
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 401
    sess.headers["Authorization"] = "Bearer " + login(sim)
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 200


@pytest.mark.parametrize("mode,kwargs,good,bad", [
    ("bearer", {"bearer_token": "T0K"}, {"Authorization": "Bearer T0K"},
     {"Authorization": "Bearer other"}),
    ("header", {"api_key": "K3Y"}, {"D360-API-KEY": "K3Y"}, {"D360-API-KEY": "other"}),
    ("none", {}, {}, None),
])
def test_auth_modes(mode, kwargs, good, bad):
    with WabaSim(auth=mode, **kwargs) as s:
        r = requests.get(s.url + "/v1/contacts/blocklist", headers=good, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["pagination"]["total"] == 0
        if bad is not None:
            r = requests.get(s.url + "/v1/contacts/blocklist", headers=bad, timeout=5)
            assert r.status_code == 401 and r.json() == ACCESS_DENIED
            r = requests.get(s.url + "/v1/contacts/blocklist", timeout=5)
            assert r.status_code == 401


# --- identity -----------------------------------------------------------------------------------

def test_identity_get(sim):
    sess = authed(sim)
    r = sess.get(sim.url + "/v1/contacts/%s/identity" % WA, timeout=5)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == 1006
    assert r.json()["meta"]["api_status"] == "stable"
    sim.set_identity(WA, "UKD6Y/5SqDU=", 1600132094000, acknowledged=True)
    r = sess.get(sim.url + "/v1/contacts/%s/identity" % WA, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"contacts": {"hash": "UKD6Y/5SqDU=", "created_timestamp": 1600132094000,
                                     "acknowledged": True}}
    # a '+' in the path names the same user
    r = sess.get(sim.url + "/v1/contacts/%2B" + WA + "/identity", timeout=5)
    assert r.status_code == 200 and r.json()["contacts"]["hash"] == "UKD6Y/5SqDU="


def test_identity_put_rules(sim):
    sess = authed(sim)
    url = sim.url + "/v1/contacts/%s/identity" % WA
    # no identity known -> 404
    r = sess.put(url, json={"hash": "x"}, timeout=5)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == 1006

    sim.set_identity(WA, "old=", 1000)
    sim.set_identity(WA, "new=", 2000)
    assert sim.get_identity(WA)["acknowledged"] is False
    # an older hash is refused
    r = sess.put(url, json={"hash": "old="}, timeout=5)
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["code"] == 1009 and err["title"] == "Parameter value is not valid"
    # an unknown one too
    assert sess.put(url, json={"hash": "nope"}, timeout=5).status_code == 400
    # missing hash
    r = sess.put(url, json={}, timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 1008
    assert sim.get_identity(WA)["acknowledged"] is False
    # the newest acknowledges
    r = sess.put(url, json={"hash": "new="}, timeout=5)
    assert r.status_code == 200 and r.json() == {}
    assert sim.get_identity(WA)["acknowledged"] is True
    # again: still 200
    assert sess.put(url, json={"hash": "new="}, timeout=5).status_code == 200
    ident = sim.get_identity(WA)
    assert ident["put_count"] == 4  # the PUT without a hash never reached the check
    assert [h["hash"] for h in ident["history"]] == ["old="]
    # GET now says acknowledged
    assert sess.get(url, timeout=5).json()["contacts"]["acknowledged"] is True


def test_identity_put_body_knob(sim):
    sess = authed(sim)
    sim.set_identity(WA, "h=")
    requests.post(sim.url + "/_sim/config", json={"identity_put_body": "null"}, timeout=5)
    r = sess.put(sim.url + "/v1/contacts/%s/identity" % WA, json={"hash": "h="}, timeout=5)
    assert r.status_code == 200 and r.text == "null"
    sim.configure(identity_put_body="")
    r = sess.put(sim.url + "/v1/contacts/%s/identity" % WA, json={"hash": "h="}, timeout=5)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


def test_identity_control_route(sim):
    r = requests.post(sim.url + "/_sim/identity", timeout=5,
                      json={"wa_id": "+1 631 555 1234", "hash": "H1", "created_timestamp": 5,
                            "acknowledged": False})
    assert r.status_code == 200
    st = requests.get(sim.url + "/_sim/state", timeout=5).json()
    assert st["identities"][WA]["hash"] == "H1"
    assert st["identities"][WA]["created_timestamp"] == 5
    assert st["identities"][WA]["acknowledged"] is False


# --- messages, contacts, blocks, settings ------------------------------------------------------

def test_messages_blocked_by_unacknowledged_identity(sim):
    sess = authed(sim)
    msg = {"to": WA, "type": "text", "text": {"body": "hi"}}
    r = sess.post(sim.url + "/v1/messages", json=msg, timeout=5)
    assert r.status_code == 201
    assert r.json()["messages"][0]["id"].startswith("gBEG")
    assert r.json()["meta"]["version"] == "2.53.1"

    sim.set_identity(WA, "h=")
    r = sess.post(sim.url + "/v1/messages", json=msg, timeout=5)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == 480
    assert r.json()["errors"][0]["title"] == "User identity changed"

    sim.configure(block_unacked_sends=False)
    assert sess.post(sim.url + "/v1/messages", json=msg, timeout=5).status_code == 201
    sim.configure(block_unacked_sends=True)
    sess.put(sim.url + "/v1/contacts/%s/identity" % WA, json={"hash": "h="}, timeout=5)
    assert sess.post(sim.url + "/v1/messages", json=msg, timeout=5).status_code == 201
    st = sim.state()
    assert st["messages_total"] == 3
    assert [m["to"] for m in st["messages"]] == [WA, WA, WA]
    r = sess.post(sim.url + "/v1/messages", json={"type": "text"}, timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 1008


def test_contacts_check(sim):
    sess = authed(sim)
    body = {"blocking": "wait", "force_check": True,
            "contacts": ["+1 631 555 1001", "6315551002", "+1 (631) 555-1004", "+5491156121008",
                         "+1 631 555 9999", "no digits"]}
    sim.configure(invalid_numbers=["16315559999"])
    r = sess.post(sim.url + "/v1/contacts", json=body, timeout=5)
    assert r.status_code == 200
    got = r.json()["contacts"]
    assert got[0] == {"input": "+1 631 555 1001", "status": "valid", "wa_id": "16315551001"}
    assert got[1] == {"input": "6315551002", "status": "valid", "wa_id": "16315551002"}
    assert got[2]["wa_id"] == "16315551004"
    assert got[3]["wa_id"] == "5491156121008"
    assert got[4] == {"input": "+1 631 555 9999", "status": "invalid"}
    assert got[5] == {"input": "no digits", "status": "invalid"}
    # a valid set limits the valid ones; another home country code
    sim.configure(valid_numbers=["4915112345678"], home_country_code="49")
    got = sess.post(sim.url + "/v1/contacts", timeout=5,
                    json={"blocking": "wait", "contacts": ["015112345678", "+4915100000000"]}
                    ).json()["contacts"]
    assert got[0]["status"] == "invalid"   # 49 + 015112345678 keeps the 0: not in the set
    got = sess.post(sim.url + "/v1/contacts", timeout=5,
                    json={"contacts": ["15112345678", "+4915100000000"]}).json()["contacts"]
    assert got == [{"input": "15112345678", "status": "valid", "wa_id": "4915112345678"},
                   {"input": "+4915100000000", "status": "invalid"}]
    r = sess.post(sim.url + "/v1/contacts", json={"blocking": "sometimes", "contacts": []},
                  timeout=5)
    assert r.status_code == 400
    assert sess.post(sim.url + "/v1/contacts", json={}, timeout=5).status_code == 400


def test_block_unblock_report_blocklist(sim):
    sess = authed(sim)
    for n in range(5):
        r = sess.post(sim.url + "/v1/contacts/+1631555100%d/block" % n, json={"reason": "spam"},
                      timeout=5)
        assert r.status_code == 200 and "errors" not in r.json() and "meta" in r.json()
    r = sess.post(sim.url + "/v1/contacts/+16315552000/report", json={"block": True}, timeout=5)
    assert r.status_code == 200
    sess.post(sim.url + "/v1/contacts/+16315553000/report", json={}, timeout=5)
    assert sess.post(sim.url + "/v1/contacts/+16315551002/unblock", timeout=5).status_code == 200
    page = sess.get(sim.url + "/v1/contacts/blocklist?limit=2&offset=0", timeout=5).json()
    assert page["contacts"] == [{"wa_id": "16315551000"}, {"wa_id": "16315551001"}]
    assert page["pagination"] == {"limit": 2, "offset": 0, "total": 5}
    page = sess.get(sim.url + "/v1/contacts/blocklist?limit=2&offset=4", timeout=5).json()
    assert page["contacts"] == [{"wa_id": "16315552000"}]
    assert sess.get(sim.url + "/v1/contacts/blocklist?limit=201", timeout=5).status_code == 400
    assert sess.get(sim.url + "/v1/contacts/blocklist?limit=0", timeout=5).status_code == 400
    assert len(sim.state()["reports"]) == 2
    r = sess.post(sim.url + "/v1/contacts/abc/block", timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 1009
    sim.configure(require_engaged=True, engaged=["16315554000"])
    r = sess.post(sim.url + "/v1/contacts/+16315554001/block", timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 2048
    assert sess.post(sim.url + "/v1/contacts/+16315554000/block", timeout=5).status_code == 200


def test_settings_patch(sim):
    sess = authed(sim)
    r = sess.patch(sim.url + "/v1/settings/application", timeout=5,
                   json={"webhooks": {"url": "http://127.0.0.1:1/webhook"},
                         "show_security_notifications": True})
    assert r.status_code == 200
    sess.patch(sim.url + "/v1/settings/application", json={"callback_persist": True}, timeout=5)
    st = sim.state()["settings"]
    assert st == {"webhooks": {"url": "http://127.0.0.1:1/webhook"},
                  "show_security_notifications": True, "callback_persist": True}


def test_cloud_api_routes(sim):
    sess = authed(sim)
    r = requests.post(sim.url + "/v19.0/1234/messages", json={}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == 190
    sim.set_identity(WA, "K1")
    send = {"messaging_product": "whatsapp", "to": WA, "type": "text",
            "text": {"body": "x"}, "recipient_identity_key_hash": "K1"}
    r = sess.post(sim.url + "/v19.0/1234/messages", json=send, timeout=5)
    assert r.status_code == 200
    assert r.json()["contacts"] == [{"input": WA, "wa_id": WA}]
    assert r.json()["messages"][0]["id"].startswith("wamid.")
    send["recipient_identity_key_hash"] = "OLD"
    r = sess.post(sim.url + "/v19.0/1234/messages", json=send, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == 137000
    # blocks
    body = {"messaging_product": "whatsapp", "block_users": [{"user": "+16315551000"},
                                                             {"user": "16315551001"}]}
    r = sess.post(sim.url + "/v19.0/1234/block_users", json=body, timeout=5)
    assert r.status_code == 200
    assert r.json()["block_users"]["added_users"] == [
        {"input": "+16315551000", "wa_id": "16315551000"},
        {"input": "16315551001", "wa_id": "16315551001"}]
    page = sess.get(sim.url + "/v19.0/1234/block_users?limit=1", timeout=5).json()
    assert page["data"] == [{"messaging_product": "whatsapp", "wa_id": "16315551000"}]
    after = page["paging"]["cursors"]["after"]
    page = sess.get(sim.url + "/v19.0/1234/block_users?limit=1&after=" + after, timeout=5).json()
    assert page["data"][0]["wa_id"] == "16315551001" and "next" not in page["paging"]
    body["block_users"] = [{"user": "16315551001"}]
    r = sess.delete(sim.url + "/v19.0/1234/block_users", json=body, timeout=5)
    assert r.json()["block_users"]["removed_users"][0]["wa_id"] == "16315551001"
    # Cloud blocks belong to the business number; the On-Premises blocklist is apart
    assert sim.cloud_blocked("1234") == ["16315551000"]
    assert sim.state()["cloud_blocked"] == {"1234": ["16315551000"]}
    assert sim.state()["blocked"] == []
    # partial failure
    sim.configure(invalid_numbers=["16315559999"])
    body["block_users"] = [{"user": "16315551002"}, {"user": "16315559999"}]
    r = sess.post(sim.url + "/block_users", json=body, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == 139100
    assert r.json()["block_users"]["failed_users"][0]["input"] == "16315559999"
    # 360dialog style /messages
    assert sess.post(sim.url + "/messages", json=send | {"recipient_identity_key_hash": "K1"},
                     timeout=5).status_code == 200


# --- knobs --------------------------------------------------------------------------------------

def test_fail_next_calls_with_prefix_and_method(sim):
    sess = authed(sim)
    sim.set_identity(WA, "h=")
    url = sim.url + "/v1/contacts/%s/identity" % WA
    r = requests.post(sim.url + "/_sim/fail", timeout=5,
                      json={"count": 2, "status": 503, "path_prefix": "/v1/contacts/",
                            "method": "PUT"})
    assert r.status_code == 200
    # other methods / paths are not affected
    assert sess.get(url, timeout=5).status_code == 200
    assert sess.post(sim.url + "/v1/messages", json={"to": "1555"}, timeout=5).status_code == 201
    for _ in range(2):
        r = sess.put(url, json={"hash": "h="}, timeout=5)
        assert r.status_code == 503
        assert r.json()["errors"][0]["code"] == 1011
        assert r.json()["meta"]["api_status"] == "stable"
    assert sim.get_identity(WA)["acknowledged"] is False
    r = sess.put(url, json={"hash": "h="}, timeout=5)
    assert r.status_code == 200
    assert sim.get_identity(WA)["acknowledged"] is True
    statuses = [c["status"] for c in sim.calls_matching("PUT", path=url[len(sim.url):])]
    assert statuses == [503, 503, 200]


def test_fail_custom_envelope_and_forever(sim):
    sess = authed(sim)
    sim.fail(count=None, status=429, code=1015, title="Too many requests", details="slow down",
             path_prefix="/v1/messages", headers={"Retry-After": "1"})
    for _ in range(3):
        r = sess.post(sim.url + "/v1/messages", json={"to": WA}, timeout=5)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        assert r.json()["errors"] == [{"code": 1015, "title": "Too many requests",
                                       "details": "slow down"}]
    sim.clear_rules()
    assert sess.post(sim.url + "/v1/messages", json={"to": WA}, timeout=5).status_code == 201


def test_delay(sim):
    sess = authed(sim)
    requests.post(sim.url + "/_sim/delay", json={"ms": 300, "count": 1}, timeout=5)
    t0 = time.monotonic()
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 200
    assert time.monotonic() - t0 >= 0.29
    t0 = time.monotonic()
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 0.2
    # a client timeout shorter than the delay
    sim.delay(1000, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(sim.url + "/v1/health", headers=sess.headers, timeout=0.2)


def test_drop(sim):
    sess = authed(sim)
    requests.post(sim.url + "/_sim/drop", json={"count": 1, "path_prefix": "/v1/health"},
                  timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sim.url + "/v1/health", headers=sess.headers, timeout=5)
    assert requests.get(sim.url + "/v1/health", headers=sess.headers, timeout=5).status_code == 200
    sim.drop(count=1, mode="reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sim.url + "/v1/health", headers=sess.headers, timeout=5)
    calls = sim.calls_matching("GET", "/v1/health")
    assert [c["dropped"] for c in calls] == [True, False, True]
    assert calls[0]["status"] is None and calls[1]["status"] == 200


def test_drop_raw_socket_sees_no_answer(sim):
    sim.configure(auth="none")
    sim.drop(count=1)
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""


def test_calls_record(sim):
    sess = authed(sim)
    sess.post(sim.url + "/v1/contacts", json={"blocking": "wait", "contacts": ["+1 631 555 1000"]},
              timeout=5)
    calls = requests.get(sim.url + "/_sim/calls?path_prefix=/v1/contacts", timeout=5).json()
    assert calls["count"] == 1
    c = calls["calls"][0]
    assert c["method"] == "POST" and c["path"] == "/v1/contacts"
    assert c["headers"]["Authorization"] == sess.headers["Authorization"]
    assert c["headers"]["Content-Type"] == "application/json"
    assert c["body"]["contacts"] == ["+1 631 555 1000"]
    assert c["status"] == 200 and c["time"] <= time.time()
    assert [x["path"] for x in sim.calls] == ["/v1/users/login", "/v1/contacts"]
    # /_sim/ calls are not recorded
    assert all(not x["path"].startswith("/_sim") for x in sim.calls)


def test_wait_for_calls(sim):
    sim.configure(auth="none")
    with pytest.raises(TimeoutError):
        sim.wait_for_calls(1, method="PUT", timeout=0.1)
    r = requests.get(sim.url + "/_sim/wait?method=PUT&timeout=0.1", timeout=5)
    assert r.status_code == 408
    sim.set_identity(WA, "h=")
    requests.put(sim.url + "/v1/contacts/%s/identity" % WA, json={"hash": "h="}, timeout=5)
    got = sim.wait_for_calls(1, method="PUT", path_prefix="/v1/contacts/", timeout=1)
    assert got[0]["status"] == 200
    r = requests.get(sim.url + "/_sim/wait?method=PUT&count=1&timeout=1", timeout=5)
    assert r.status_code == 200 and r.json()["count"] == 1


def test_reset(sim):
    sess = authed(sim)
    sim.set_identity(WA, "h=")
    sess.post(sim.url + "/v1/contacts/+16315551000/block", timeout=5)
    sim.fail(count=5)
    sim.configure(password="changed")
    assert requests.post(sim.url + "/_sim/reset", timeout=5).json() == {"ok": True}
    st = sim.state()
    assert st["identities"] == {} and st["blocked"] == [] and st["login_count"] == 0
    assert st["rules"] == [] and sim.calls == []
    # the old token is gone, the start password is back
    assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 401
    login(sim)


def test_keep_alive_and_restart_same_port(sim):
    sess = authed(sim)
    for _ in range(5):
        assert sess.get(sim.url + "/v1/health", timeout=5).status_code == 200
    assert sim.state()["connections_total"] == 1
    r = sess.get(sim.url + "/v1/health", timeout=5)
    assert r.headers["Content-Length"] == str(len(r.content))
    port = sim.port
    sim.set_identity(WA, "keep=")
    sim.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sim.url + "/v1/health", timeout=1)
    sim.start()
    assert sim.port == port
    assert sess.get(sim.url + "/v1/contacts/%s/identity" % WA, timeout=5).json()["contacts"][
        "hash"] == "keep="


def test_normalise_phone():
    n = waba_sim.normalise_phone
    assert n("+1-631-555-1002") == "16315551002"
    assert n("6315551002", "91") == "916315551002"
    assert n("1-631-555-1002", "91") == "9116315551002"
    assert n("+54 9 11 5612-1008") == "5491156121008"
    assert n("US.13491208655302741918") == "US.13491208655302741918"
    assert n("---") is None


# --- TLS ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    ca, crt, key = make_test_ca(d)
    wrong = make_wrong_cert(d)
    wronghost = make_wrong_host_cert(d)
    return {"ca": ca, "crt": crt, "key": key, "wrong": wrong, "wronghost": wronghost}


def test_tls_with_test_ca(certs):
    assert all(os.path.exists(p) for p in (certs["ca"], certs["crt"], certs["key"]))
    with WabaSim(tls_cert=certs["crt"], tls_key=certs["key"]) as s:
        assert s.url.startswith("https://127.0.0.1:")
        r = requests.post(s.url + "/v1/users/login", auth=("admin", "secret"), verify=certs["ca"],
                          timeout=5)
        assert r.status_code == 200 and r.json()["users"][0]["token"]
        # by name too (DNS:localhost)
        r = requests.get("https://localhost:%d/_sim/health" % s.port, verify=certs["ca"],
                         timeout=5)
        assert r.json()["ok"] is True
        # a client not trusting the CA refuses
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(s.url + "/_sim/health", timeout=5)
        # and the server keeps serving after a failed handshake
        assert requests.get(s.url + "/_sim/health", verify=certs["ca"], timeout=5).ok
        # a plain-HTTP client gets nowhere
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get("http://127.0.0.1:%d/_sim/health" % s.port, timeout=5)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("which", ["wrong", "wronghost"])
def test_tls_wrong_certificates_refused(certs, which):
    crt, key = certs[which]
    with WabaSim(tls_cert=crt, tls_key=key) as s:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(s.url + "/_sim/health", verify=certs["ca"], timeout=5)
        assert requests.get(s.url + "/_sim/health", verify=False, timeout=5).json()["ok"]


# --- command line -------------------------------------------------------------------------------

def test_cli_runs_and_stops_on_sigterm(certs):
    port = free_port()
    p = subprocess.Popen(["/usr/bin/python3", waba_sim.__file__, "--host", "127.0.0.1",
                          "--port", str(port), "--tls-cert", certs["crt"], "--tls-key",
                          certs["key"], "--auth", "header", "--api-key", "K"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line == "waba_sim listening on https://127.0.0.1:%d" % port
        url = line.split()[-1]
        r = requests.get(url + "/v1/contacts/blocklist", headers={"D360-API-KEY": "K"},
                         verify=certs["ca"], timeout=5)
        assert r.status_code == 200
        assert requests.get(url + "/v1/contacts/blocklist", verify=certs["ca"],
                            timeout=5).status_code == 401
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        assert p.stderr.read() == ""   # quiet: no per-request logging
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_contacts_processing_callback_and_config_errors(sim):
    receiver = WabaSim(auth="none").start()
    try:
        sess = authed(sim)
        sess.patch(sim.url + "/v1/settings/application", timeout=5,
                   json={"webhooks": {"url": receiver.url + "/webhook"}})
        sim.configure(contacts_processing=True, callback_delay_ms=10,
                      webhook_headers={"Authorization": "Bearer hook"})
        got = sess.post(sim.url + "/v1/contacts", json={"contacts": ["+16315551000"]},
                        timeout=5).json()["contacts"]
        assert got == [{"input": "+16315551000", "status": "processing", "wa_id": "16315551000"}]
        cb = receiver.wait_for_calls(1, method="POST", path="/webhook", timeout=3)[0]
        assert cb["body"] == {"contacts": [{"input": "+16315551000", "status": "valid",
                                            "wa_id": "16315551000"}]}
        assert cb["headers"]["Authorization"] == "Bearer hook"
        # blocking=wait answers the final status at once
        got = sess.post(sim.url + "/v1/contacts", timeout=5,
                        json={"blocking": "wait", "contacts": ["+16315551000"]}).json()
        assert got["contacts"][0]["status"] == "valid"
    finally:
        receiver.stop()
    r = requests.post(sim.url + "/_sim/config", json={"no_such_knob": 1}, timeout=5)
    assert r.status_code == 400 and "no_such_knob" in r.json()["error"]
    r = requests.post(sim.url + "/_sim/config", json={"auth": "kerberos"}, timeout=5)
    assert r.status_code == 400


def test_cli_make_ca(tmp_path):
    out = subprocess.run(["/usr/bin/python3", waba_sim.__file__, "--make-ca", str(tmp_path)],
                         stdout=subprocess.PIPE, text=True, timeout=30, check=True).stdout
    paths = json.loads(out)
    assert set(paths) == {"ca_cert", "server_cert", "server_key", "wrong_cert", "wrong_key"}
    text = subprocess.run(["openssl", "x509", "-in", paths["server_cert"], "-noout", "-text"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert subprocess.run(["openssl", "verify", "-CAfile", paths["ca_cert"],
                           paths["server_cert"]], stdout=subprocess.PIPE).returncode == 0
    assert subprocess.run(["openssl", "verify", "-CAfile", paths["ca_cert"],
                           paths["wrong_cert"]], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE).returncode != 0


# --- Cloud API: several numbers, 137000 as a status, partial blocks, settings -------------------

class HookReceiver:
    """A webhook receiver keeping each POST's raw bytes and headers (the simulator's own
    recording keeps neither the raw JSON nor X-Hub-Signature-256)."""

    def __init__(self, status=200):
        import http.server
        import threading
        self.status = status
        self.got = []
        self.cond = threading.Condition()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.got.append({"path": self.path, "headers": dict(self.headers),
                                      "raw": raw})
                    outer.cond.notify_all()
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def wait(self, n=1, timeout=5):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), self.got
            return list(self.got)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = HookReceiver()
    yield h
    h.close()


def signature(secret, raw):
    import hashlib
    import hmac
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def cloud_block(sess, url, method, users):
    return sess.request(method, url, timeout=5, json={
        "messaging_product": "whatsapp", "block_users": [{"user": u} for u in users]})


def test_cloud_blocks_kept_per_number(sim):
    sess = authed(sim)
    a, b = sim.url + "/v21.0/111/block_users", sim.url + "/v21.0/222/block_users"
    users = ["+1631555100%d" % n for n in range(5)]
    assert cloud_block(sess, a, "POST", users).status_code == 200
    assert cloud_block(sess, b, "POST", [users[0]]).status_code == 200
    assert sim.cloud_blocked("111") == [u[1:] for u in users]
    assert sim.cloud_blocked("222") == ["16315551000"]
    # unblocking on one number leaves the other's block
    r = cloud_block(sess, b, "DELETE", [users[0]])
    assert r.status_code == 200
    assert r.json()["block_users"] == {"removed_users": [{"input": users[0],
                                                          "wa_id": "16315551000"}]}
    assert sim.cloud_blocked("222") == [] and "16315551000" in sim.cloud_blocked("111")
    # GET pages through one number's list only, following paging.next
    seen, nxt = [], "?limit=2"
    while nxt:
        page = sess.get(a + nxt, timeout=5).json()
        seen += [d["wa_id"] for d in page["data"]]
        nxt = page["paging"].get("next")
    assert seen == sim.cloud_blocked("111")
    assert sess.get(b + "?limit=2", timeout=5).json()["data"] == []
    # the paths without a number id are default_phone_number_id's
    cloud_block(sess, sim.url + "/block_users", "POST", ["16315552000"])
    assert sim.cloud_blocked() == sim.cloud_blocked("PNID") == ["16315552000"]
    sim.configure(default_phone_number_id=222)
    cloud_block(sess, sim.url + "/block_users", "POST", ["16315552001"])
    assert sim.cloud_blocked("222") == ["16315552001"]
    # blocks made elsewhere: set_blocked with a number id, or the control route; BSUIDs listed
    # as user_id
    sim.set_blocked("US.13491208655302741918", pnid="222")
    requests.post(sim.url + "/_sim/blocked", json={"wa_ids": ["16315553000"],
                                                   "phone_number_id": "222"}, timeout=5)
    data = sess.get(b, timeout=5).json()["data"]
    assert data[1:] == [{"messaging_product": "whatsapp", "user_id": "US.13491208655302741918"},
                        {"messaging_product": "whatsapp", "wa_id": "16315553000"}]
    assert sim.is_blocked("16315553000", pnid="222") and not sim.is_blocked("16315553000")
    # the On-Premises blocklist is apart
    st = sim.state()
    assert st["blocked"] == [] and set(st["cloud_blocked"]) == {"111", "222", "PNID"}
    assert sess.get(sim.url + "/v1/contacts/blocklist", timeout=5).json()["contacts"] == []
    sim.reset()
    assert sim.state()["cloud_blocked"] == {} and sim.cloud_blocked("111") == []


def test_cloud_block_partial_failures(sim):
    sess = authed(sim)
    url = sim.url + "/v21.0/111/block_users"
    sim.configure(block_fail_users=["16315559000"])
    r = cloud_block(sess, url, "POST", ["16315551000", "+16315559000", "16315551001"])
    assert r.status_code == 400
    j = r.json()
    assert j["error"]["code"] == 139100
    assert j["block_users"]["added_users"] == [{"input": "16315551000", "wa_id": "16315551000"},
                                               {"input": "16315551001", "wa_id": "16315551001"}]
    assert j["block_users"]["failed_users"] == [{"input": "+16315559000", "errors": [{
        "message": "Failed to block/unblock users", "code": 139100,
        "error_data": {"details": "Failed to block the user"}}]}]
    assert sim.cloud_blocked("111") == ["16315551000", "16315551001"]
    # several reasons in one answer, and the same for an unblock
    sim.set_blocked("16315559000", pnid="111")
    sim.configure(invalid_numbers=["16315558888"])
    r = cloud_block(sess, url, "DELETE", ["16315551000", "16315559000", "16315558888"])
    assert r.status_code == 400
    bu = r.json()["block_users"]
    assert bu["removed_users"] == [{"input": "16315551000", "wa_id": "16315551000"}]
    assert [(f["input"], f["errors"][0]["code"]) for f in bu["failed_users"]] == [
        ("16315559000", 139100), ("16315558888", 100)]
    assert sim.cloud_blocked("111") == ["16315551001", "16315559000"]
    sim.configure(require_engaged=True, engaged=["16315551002"])
    r = cloud_block(sess, url, "POST", ["16315551002", "16315551003"])
    assert r.status_code == 400
    assert r.json()["block_users"]["added_users"][0]["wa_id"] == "16315551002"
    assert r.json()["block_users"]["failed_users"][0]["errors"][0]["code"] == 131047


def test_cloud_settings_per_number_and_refusal(sim):
    sess = authed(sim)
    on = {"user_identity_change": {"enable_identity_key_check": True}}
    r = sess.post(sim.url + "/v21.0/111/settings", json=on, timeout=5)
    assert r.status_code == 200 and r.json() == {"success": True}
    st = sim.state()
    assert st["cloud_settings_by_pnid"] == {"111": on} and st["cloud_settings"] == on
    assert sess.get(sim.url + "/v21.0/111/settings", timeout=5).json() == on
    assert sess.get(sim.url + "/v21.0/222/settings", timeout=5).json() == {}
    # a refusal: Graph's envelope with the status, code and message given; nothing stored
    requests.post(sim.url + "/_sim/config", timeout=5, json={"settings_error": {
        "status": 403, "code": 10, "message": "Application does not have permission",
        "details": "needs whatsapp_business_management", "error_subcode": 2494011}})
    r = sess.post(sim.url + "/v21.0/222/settings", json=on, timeout=5)
    assert r.status_code == 403
    e = r.json()["error"]
    assert (e["code"], e["message"], e["type"], e["error_subcode"]) == (
        10, "Application does not have permission", "OAuthException", 2494011)
    assert e["error_data"]["details"] == "needs whatsapp_business_management" and e["fbtrace_id"]
    assert "222" not in sim.state()["cloud_settings_by_pnid"]
    # limited to some numbers
    sim.configure(settings_error={"status": 400, "code": 100, "message": "Invalid parameter",
                                  "phone_number_ids": [222]})
    assert sess.post(sim.url + "/v21.0/222/settings", json=on, timeout=5).status_code == 400
    assert sess.post(sim.url + "/v21.0/333/settings", json=on, timeout=5).status_code == 200
    calls = sim.calls_matching("POST", "/v21.0/")
    assert [(c["path"], c["status"]) for c in calls] == [
        ("/v21.0/111/settings", 200), ("/v21.0/222/settings", 403),
        ("/v21.0/222/settings", 400), ("/v21.0/333/settings", 200)]
    assert calls[0]["body"] == on
    sim.configure(settings_error=None)
    assert sess.post(sim.url + "/v21.0/222/settings", json=on, timeout=5).status_code == 200
    assert set(sim.state()["cloud_settings_by_pnid"]) == {"111", "222", "333"}
    with pytest.raises(ValueError):
        sim.configure(settings_error="no")


def test_cloud_mismatch_answered_then_failed_status(sim, hook):
    sess = authed(sim)
    sim.set_identity(WA, "OLD=")
    sim.set_identity(WA, "NEW=")
    sim.configure(cloud_mismatch="status", cloud_webhook_url=hook.url, app_secret="s3cret",
                  webhook_token="hooktok", callback_delay_ms=10)
    send = {"messaging_product": "whatsapp", "to": WA, "type": "text", "text": {"body": "x"},
            "recipient_identity_key_hash": "OLD="}
    r = sess.post(sim.url + "/v21.0/111/messages", json=send, timeout=5)
    assert r.status_code == 200
    wamid = r.json()["messages"][0]["id"]
    assert r.json()["contacts"] == [{"input": WA, "wa_id": WA}]
    got = hook.wait(1)[0]
    assert got["headers"]["X-Hub-Signature-256"] == signature("s3cret", got["raw"])
    assert got["headers"]["Authorization"] == "Bearer hooktok"
    body = json.loads(got["raw"])
    assert body["object"] == "whatsapp_business_account"
    entry = body["entry"][0]
    assert entry["id"] == "WABA_ID" and entry["changes"][0]["field"] == "messages"
    value = entry["changes"][0]["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {"display_phone_number": "15550001111", "phone_number_id": "111"}
    st = value["statuses"][0]
    assert (st["id"], st["status"], st["recipient_id"]) == (wamid, "failed", WA)
    assert st["timestamp"].isdigit() and abs(int(st["timestamp"]) - time.time()) < 30
    assert st["errors"][0]["code"] == 137000
    assert st["errors"][0]["title"] == st["errors"][0]["message"] == "Identity key mismatch"
    assert st["errors"][0]["error_data"]["details"]
    assert "recipient_identity_key_hash" not in st
    cb = sim.wait_for_callbacks(1, kind="cloud")
    assert len(cb) == 1 and cb[0]["status"] == 200 and cb[0]["url"] == hook.url
    state = sim.state()
    assert cb[0]["body"] == body
    assert state["messages"][-1]["id"] == wamid and state["messages"][-1]["failed_code"] == 137000
    mm = state["cloud_mismatches"][-1]
    assert (mm["sent"], mm["current"], mm["id"], mm["mode"]) == ("OLD=", "NEW=", wamid, "status")
    # the current hash goes through without a status
    sess.post(sim.url + "/v21.0/111/messages", json=send | {"recipient_identity_key_hash": "NEW="},
              timeout=5)
    assert "failed_code" not in sim.state()["messages"][-1]
    # a BSUID recipient; the hash in the status when asked; settings.webhooks.url when no
    # cloud_webhook_url; no Authorization without webhook_token
    bsuid = "US.13491208655302741918"
    sim.set_identity(bsuid, "B2=")
    sim.configure(cloud_webhook_url=None, webhook_token=None, mismatch_status_includes_hash=True)
    sess.patch(sim.url + "/v1/settings/application", json={"webhooks": {"url": hook.url}},
               timeout=5)
    r = sess.post(sim.url + "/messages", timeout=5, json={
        "messaging_product": "whatsapp", "recipient": bsuid, "type": "text",
        "text": {"body": "x"}, "recipient_identity_key_hash": "B1="})
    assert r.status_code == 200
    got = hook.wait(2)[1]
    assert "Authorization" not in got["headers"]
    value = json.loads(got["raw"])["entry"][0]["changes"][0]["value"]
    assert value["metadata"]["phone_number_id"] == "PNID"
    st = value["statuses"][0]
    assert st["recipient_user_id"] == bsuid and "recipient_id" not in st
    assert st["recipient_identity_key_hash"] == "B2="
    assert len(hook.got) == 2


def test_post_cloud_webhook_helper(sim, hook):
    # no URL anywhere: nothing posted, recorded with an error
    assert sim.post_cloud_webhook({"statuses": []}) is None
    assert "no webhook URL" in sim.state()["callbacks"][-1]["error"]
    sim.configure(cloud_webhook_url=hook.url)
    value = {"contacts": [{"profile": {"name": "Zoë"}, "wa_id": WA,
                           "identity_key_hash": "H1="}],
             "messages": [{"from": WA, "id": "wamid.in1", "timestamp": "1", "type": "text",
                           "text": {"body": "hé"}}]}
    assert sim.post_cloud_webhook(value, pnid="222") == 200
    got = hook.wait(1)[0]
    assert "X-Hub-Signature-256" not in got["headers"]    # app_secret not set
    assert b"\\u00eb" in got["raw"] and got["raw"].isascii()   # escaped as Meta signs it
    v = json.loads(got["raw"])["entry"][0]["changes"][0]["value"]
    assert v["metadata"]["phone_number_id"] == "222" and v["contacts"] == value["contacts"]
    # the receiver's status comes back; the control route does the same
    sim.configure(app_secret="k")
    hook.status = 401
    assert sim.post_cloud_webhook({"statuses": []}) == 401
    assert sim.state()["callbacks"][-1]["status"] == 401
    r = requests.post(sim.url + "/_sim/cloud_webhook", timeout=5,
                      json={"value": {"statuses": []}, "phone_number_id": "333"})
    assert r.json() == {"ok": False, "status": 401}
    got = hook.wait(3)[2]
    assert got["headers"]["X-Hub-Signature-256"] == signature("k", got["raw"])
    assert json.loads(got["raw"])["entry"][0]["changes"][0]["value"]["metadata"][
        "phone_number_id"] == "333"
    assert requests.post(sim.url + "/_sim/cloud_webhook", json={}, timeout=5).status_code == 400
    assert len(sim.wait_for_callbacks(4, kind="cloud", timeout=1)) == 4
    with pytest.raises(TimeoutError):
        sim.wait_for_callbacks(1, kind="contacts", timeout=0.05)
