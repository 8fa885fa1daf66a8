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


# --- On-Premises application settings ----------------------------------------------------------

def test_app_settings_get_patch_and_refusal(sim):
    sess = authed(sim)
    url = sim.url + "/v1/settings/application"
    assert requests.get(url, timeout=5).status_code == 401          # the same auth as /v1
    assert requests.patch(url, json={}, timeout=5).status_code == 401
    r = sess.get(url, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"settings": {"application": {"show_security_notifications": False,
                                                     "webhooks": {"url": ""}}},
                        "meta": {"api_status": "stable", "version": "2.53.1"}}
    # the knob seeds the stored value
    requests.post(sim.url + "/_sim/config", json={"show_security_notifications": True},
                  timeout=5)
    app = sess.get(url, timeout=5).json()["settings"]["application"]
    assert app["show_security_notifications"] is True
    # PATCH deep-merges
    r = sess.patch(url, json={"webhooks": {"url": "https://wg.example/webhook",
                                           "max_concurrent_requests": 12}}, timeout=5)
    assert r.status_code == 200 and r.json() == {"meta": {"api_status": "stable",
                                                          "version": "2.53.1"}}
    sess.patch(url, json={"webhooks": {"max_concurrent_requests": 6},
                          "show_security_notifications": False}, timeout=5)
    want = {"show_security_notifications": False,
            "webhooks": {"url": "https://wg.example/webhook", "max_concurrent_requests": 6}}
    assert sim.app_settings() == want
    assert sess.get(url, timeout=5).json()["settings"]["application"] == want
    assert requests.get(sim.url + "/_sim/app_settings", timeout=5).json() == {"settings": want}
    # a copy: changing it changes nothing stored
    sim.app_settings()["webhooks"]["url"] = "x"
    assert sim.app_settings() == want
    # settings_patch_status: the WABA envelope, nothing changed
    for status, code in ((500, 1014), (403, 1005)):
        sim.configure(settings_patch_status=status)
        r = sess.patch(url, json={"show_security_notifications": True,
                                  "webhooks": {"url": "https://other/"}}, timeout=5)
        assert r.status_code == status
        assert r.json()["errors"][0]["code"] == code and r.json()["meta"]["version"]
        assert sim.app_settings() == want
    assert sess.get(url, timeout=5).status_code == 200      # GET unaffected
    sim.configure(settings_patch_status=200)
    assert sess.patch(url, json={"show_security_notifications": True}, timeout=5).ok
    assert sim.app_settings()["show_security_notifications"] is True
    # reset: the knob's default again
    sim.reset()
    assert sim.app_settings() == {"show_security_notifications": False, "webhooks": {"url": ""}}


# --- 2xx answers carrying errors[], forced refusals --------------------------------------------

def test_identity_put_errors_answers_200_without_ack(sim):
    sess = authed(sim)
    url = sim.url + "/v1/contacts/%s/identity" % WA
    sim.set_identity(WA, "h=")
    requests.post(sim.url + "/_sim/config", json={"identity_put_errors": [1009]}, timeout=5)
    r = sess.put(url, json={"hash": "h="}, timeout=5)
    assert r.status_code == 200
    j = r.json()
    assert j["meta"] == {"api_status": "stable", "version": "2.53.1"}
    assert len(j["errors"]) == 1
    e = j["errors"][0]
    assert e["code"] == 1009 and e["title"] == "Parameter value is not valid" and e["details"]
    assert sim.get_identity(WA)["acknowledged"] is False
    # several errors, an object with its own title
    sim.configure(identity_put_errors=[1014, {"code": 1000, "title": "Generic", "details": "d"}])
    errs = sess.put(url, json={"hash": "h="}, timeout=5).json()["errors"]
    assert [x["code"] for x in errs] == [1014, 1000]
    assert errs[1] == {"code": 1000, "title": "Generic", "details": "d"}
    assert sim.get_identity(WA)["acknowledged"] is False
    sim.configure(identity_put_errors=None)
    r = sess.put(url, json={"hash": "h="}, timeout=5)
    assert r.status_code == 200 and r.json() == {}
    assert sim.get_identity(WA)["acknowledged"] is True
    with pytest.raises(ValueError):
        sim.configure(identity_put_errors=[])


def test_messages_errors_200_sends_nothing(sim):
    sess = authed(sim)
    msg = {"to": WA, "type": "text", "text": {"body": "hi"}}
    sim.configure(messages_errors_200=[1000])
    r = sess.post(sim.url + "/v1/messages", json=msg, timeout=5)
    assert r.status_code == 200
    assert r.json()["errors"][0]["code"] == 1000 and "messages" not in r.json()
    assert r.json()["errors"][0]["title"] == "Generic error"
    assert sim.state()["messages_total"] == 0
    sim.configure(messages_errors_200=None)
    assert sess.post(sim.url + "/v1/messages", json=msg, timeout=5).status_code == 201
    assert sim.state()["messages_total"] == 1


def test_send_refusal_knob(sim):
    sess = authed(sim)
    onprem = {"to": WA, "type": "text", "text": {"body": "hi"}}
    cloud = {"messaging_product": "whatsapp", "to": WA, "type": "text", "text": {"body": "x"}}
    # "480": every /v1 send, identity or not; Cloud sends untouched
    requests.post(sim.url + "/_sim/config", json={"send_refusal": 480}, timeout=5)
    r = sess.post(sim.url + "/v1/messages", json=onprem, timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 480
    assert r.json()["errors"][0]["title"] == "User identity changed"
    assert sess.post(sim.url + "/v21.0/111/messages", json=cloud, timeout=5).status_code == 200
    # "137000": every Cloud send, /v1 untouched
    sim.configure(send_refusal="137000")
    assert sess.post(sim.url + "/v1/messages", json=onprem, timeout=5).status_code == 201
    for path in ("/v21.0/111/messages", "/messages", "/v21.0/111/marketing_messages"):
        r = sess.post(sim.url + path, json=cloud, timeout=5)
        assert r.status_code == 400, path
        e = r.json()["error"]
        assert e["code"] == 137000 and e["type"] == "OAuthException" and "errors" not in r.json()
    st = sim.state()
    assert st["messages_total"] == 2 and len(st["cloud_sent"]) == 1
    sim.configure(send_refusal=None)
    assert sess.post(sim.url + "/messages", json=cloud, timeout=5).status_code == 200
    with pytest.raises(ValueError):
        sim.configure(send_refusal="131000")


# --- 2026 Cloud shapes: business-scoped user ids -----------------------------------------------

UID = "US.13491208655302741918"
UID2 = "US.90000000000000000001"
PARENT = "US.ENT.11815799212886844830"


def cloud_send(sess, sim, path="/v21.0/111/messages", **fields):
    body = {"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}
    body.update(fields)
    return sess.post(sim.url + path, json=body, timeout=5)


def test_cloud_user_registry_and_send_answers(sim):
    sess = authed(sim)
    # unknown users: only the id given comes back
    assert cloud_send(sess, sim, recipient=UID).json()["contacts"] == [{"input": UID,
                                                                        "user_id": UID}]
    rec = sim.cloud_user(UID, wa_id="+" + WA, username="@zoe", parent_user_id=PARENT)
    assert rec == {"user_id": UID, "wa_id": WA, "username": "@zoe", "parent_user_id": PARENT,
                   "phone_hidden": False, "name": None}
    assert sim.get_cloud_user(WA) == sim.get_cloud_user(UID) == rec
    # by recipient: the phone filled in; by phone: the user id filled in; both: `to` wins
    r = cloud_send(sess, sim, recipient=UID)
    assert r.status_code == 200
    j = r.json()
    assert j["messaging_product"] == "whatsapp" and j["messages"][0]["id"].startswith("wamid.")
    assert j["contacts"] == [{"input": UID, "wa_id": WA, "user_id": UID}]
    by_user = sim.sent_message(j["messages"][0]["id"])
    assert (by_user["by"], by_user["to"], by_user["wa_id"], by_user["user_id"],
            by_user["phone_number_id"], by_user["endpoint"]) == (
        "user_id", UID, WA, UID, "111", "messages")
    r = cloud_send(sess, sim, path="/messages", to="+" + WA, recipient_identity_key_hash="K=")
    assert r.json()["contacts"] == [{"input": "+" + WA, "wa_id": WA, "user_id": UID}]
    by_phone = sim.sent_message(r.json()["messages"][0]["id"])
    assert (by_phone["by"], by_phone["to"], by_phone["phone_number_id"],
            by_phone["recipient_identity_key_hash"]) == ("phone", WA, "PNID", "K=")
    r = cloud_send(sess, sim, to="16315550000", recipient=UID)
    assert r.json()["contacts"] == [{"input": "16315550000", "wa_id": "16315550000"}]
    assert sim.sent_message(r.json()["messages"][0]["id"])["by"] == "phone"
    assert requests.get(sim.url + "/_sim/sent?id=" + urllib_quote(r.json()["messages"][0]["id"]),
                        timeout=5).json()["to"] == "16315550000"
    assert requests.get(sim.url + "/_sim/sent?id=nope", timeout=5).status_code == 404
    assert sim.sent_message("nope") is None
    # a phone-hidden user addressed by user id: no wa_id in the answer
    sim.cloud_user(UID, wa_id=WA, phone_hidden=True)
    assert cloud_send(sess, sim, recipient=UID).json()["contacts"] == [{"input": UID,
                                                                        "user_id": UID}]
    # the control route
    r = requests.post(sim.url + "/_sim/cloud_user", timeout=5,
                      json={"user_id": UID2, "wa_id": "16315559876", "username": "@x"})
    assert r.status_code == 200 and r.json()["user"]["wa_id"] == "16315559876"
    got = requests.get(sim.url + "/_sim/cloud_user?wa_id=16315559876", timeout=5).json()
    assert got["user_id"] == UID2 and got["username"] == "@x"
    assert set(sim.state()["cloud_users"]) == {UID, UID2}
    assert requests.delete(sim.url + "/_sim/cloud_user?user_id=" + UID2,
                           timeout=5).json() == {"ok": True}
    assert requests.get(sim.url + "/_sim/cloud_user?user_id=" + UID2, timeout=5).status_code == 404
    assert requests.post(sim.url + "/_sim/cloud_user", json={}, timeout=5).status_code == 400
    # ids are checked
    for bad in ("13491208655302741918", "USA.1", "US." + "1" * 129, "US.ENT.1"):
        with pytest.raises(ValueError):
            sim.cloud_user(bad)
    sim.cloud_user("US." + "a1" * 64)
    with pytest.raises(ValueError):
        sim.cloud_user(UID, parent_user_id=UID2)
    assert requests.post(sim.url + "/_sim/cloud_user", json={"user_id": "nope"},
                         timeout=5).status_code == 400
    sim.reset()
    assert sim.state()["cloud_users"] == {} and sim.state()["cloud_sent"] == []


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s, safe="")


def test_inbound_value_shapes(sim, hook):
    sim.cloud_user(UID, wa_id=WA, username="@zoe", parent_user_id=PARENT, name="Zoë")
    v = sim.inbound_value(UID, text="hello", msg_id="wamid.in1", ts=1700000000,
                          identity_key_hash="IK1=", pnid="111")
    assert v == {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "111"},
        "contacts": [{"profile": {"name": "Zoë", "username": "@zoe"}, "wa_id": WA,
                      "user_id": UID, "parent_user_id": PARENT, "identity_key_hash": "IK1="}],
        "messages": [{"from": WA, "from_user_id": UID, "from_parent_user_id": PARENT,
                      "id": "wamid.in1", "timestamp": "1700000000", "type": "text",
                      "text": {"body": "hello"}}]}
    # defaults: a fresh id, now, the default number, no hash
    v = sim.inbound_value(UID)
    assert v["messages"][0]["id"].startswith("wamid.") and v["messages"][0]["text"] == {
        "body": "hi"}
    assert abs(int(v["messages"][0]["timestamp"]) - time.time()) < 30
    assert v["metadata"]["phone_number_id"] == "PNID"
    assert "identity_key_hash" not in v["contacts"][0]
    # a new key is a new phone: its first message is after the old key's last, never a tie
    a = int(sim.inbound_value(UID, identity_key_hash="OLDKEY=")["messages"][0]["timestamp"])
    b = int(sim.inbound_value(UID, identity_key_hash="NEWKEY=")["messages"][0]["timestamp"])
    c_ = int(sim.inbound_value(UID, identity_key_hash="NEWKEY=")["messages"][0]["timestamp"])
    assert b > a and c_ >= b and c_ - a < 30, (a, b, c_)
    # a phone-hidden user: no wa_id, no from
    sim.cloud_user(UID2, wa_id="16315559876", username="@hid", phone_hidden=True)
    v = sim.inbound_value(UID2)
    c, m = v["contacts"][0], v["messages"][0]
    assert "wa_id" not in c and "from" not in m and "parent_user_id" not in c
    assert c["user_id"] == m["from_user_id"] == UID2 and c["profile"]["username"] == "@hid"
    assert "from_parent_user_id" not in m
    # an unregistered user id
    v = sim.inbound_value("BR.77")
    assert v["contacts"][0]["user_id"] == "BR.77" and "wa_id" not in v["contacts"][0]
    # posted through post_cloud_webhook
    sim.configure(cloud_webhook_url=hook.url)
    v = sim.inbound_value(UID, pnid="222")
    assert sim.post_cloud_webhook(v, pnid="222") == 200
    body = json.loads(hook.wait(1)[0]["raw"])
    ch = body["entry"][0]["changes"][0]
    assert ch["field"] == "messages" and ch["value"] == v


def test_status_value_shapes(sim):
    sim.cloud_user(UID, wa_id=WA, username="@zoe", parent_user_id=PARENT)
    # delivered, by user id: contacts beside statuses
    v = sim.status_value("wamid.A", "delivered", user_id=UID, identity_key_hash="IK=",
                         pnid="111")
    assert v["metadata"]["phone_number_id"] == "111"
    st = v["statuses"][0]
    assert (st["id"], st["status"], st["recipient_id"], st["recipient_user_id"],
            st["recipient_parent_user_id"], st["recipient_identity_key_hash"]) == (
        "wamid.A", "delivered", WA, UID, PARENT, "IK=")
    assert st["timestamp"].isdigit() and "errors" not in st
    assert v["contacts"] == [{"profile": {"username": "@zoe"}, "wa_id": WA, "user_id": UID,
                              "parent_user_id": PARENT}]
    for s in ("sent", "read"):
        assert "contacts" in sim.status_value("wamid.A", s, to_phone=WA)
    # failed: no contacts; sent by phone: no recipient_user_id either
    v = sim.status_value("wamid.B", "failed", to_phone=WA, errors=[131026])
    st = v["statuses"][0]
    assert "contacts" not in v
    assert st["recipient_id"] == WA
    assert "recipient_user_id" not in st and "recipient_parent_user_id" not in st
    assert st["errors"][0]["code"] == 131026 and st["errors"][0]["title"]
    assert st["errors"][0]["message"] and st["errors"][0]["error_data"]["details"]
    # failed, sent by user id: recipient_user_id kept
    st = sim.status_value("wamid.C", "failed", user_id=UID,
                          errors=[{"code": 137000}])["statuses"][0]
    assert st["recipient_user_id"] == UID and st["recipient_id"] == WA
    assert st["errors"][0]["title"] == "Identity key mismatch"
    # phone hidden: no recipient_id, no wa_id in contacts
    sim.cloud_user(UID, wa_id=WA, phone_hidden=True)
    v = sim.status_value("wamid.D", "read", user_id=UID)
    assert "recipient_id" not in v["statuses"][0] and v["contacts"] == [{"user_id": UID}]
    # no recipient given: the one recorded for the wamid, and its number
    sess = authed(sim)
    sim.cloud_user(UID, wa_id=WA)
    mid = cloud_send(sess, sim, path="/v21.0/333/messages", to=WA).json()["messages"][0]["id"]
    v = sim.status_value(mid, "failed")
    assert v["metadata"]["phone_number_id"] == "333"
    assert v["statuses"][0]["recipient_id"] == WA
    assert "recipient_user_id" not in v["statuses"][0]
    v = sim.status_value(mid, "delivered")
    assert v["statuses"][0]["recipient_user_id"] == UID and v["contacts"][0]["wa_id"] == WA


def test_user_id_update_value_posted_with_its_field(sim, hook):
    sim.configure(cloud_webhook_url=hook.url)
    sim.cloud_user(UID, wa_id=WA, parent_user_id=PARENT, username="@zoe")
    new_parent = "US.ENT.22"
    v = sim.user_id_update_value(UID, UID2, new_parent=new_parent, ts=1700000001)
    assert v["messaging_product"] == "whatsapp" and v["metadata"]["phone_number_id"] == "PNID"
    assert v["user_id_update"] == [{"wa_id": WA, "detail": v["user_id_update"][0]["detail"],
                                    "user_id": {"previous": UID, "current": UID2},
                                    "parent_user_id": {"previous": PARENT,
                                                       "current": new_parent},
                                    "timestamp": "1700000001"}]
    assert v["user_id_update"][0]["detail"]
    # the registry follows
    assert sim.get_cloud_user(UID) is None
    rec = sim.get_cloud_user(UID2)
    assert rec["wa_id"] == WA and rec["parent_user_id"] == new_parent and rec["username"] == "@zoe"
    assert sim.get_cloud_user(WA)["user_id"] == UID2
    # posted as a change with field user_id_update
    assert sim.post_cloud_webhook(v, field="user_id_update") == 200
    ch = json.loads(hook.wait(1)[0]["raw"])["entry"][0]["changes"][0]
    assert ch["field"] == "user_id_update" and ch["value"] == v
    # the default field stays "messages"; the control route takes a field
    sim.post_cloud_webhook({"statuses": []})
    assert json.loads(hook.wait(2)[1]["raw"])["entry"][0]["changes"][0]["field"] == "messages"
    r = requests.post(sim.url + "/_sim/cloud_webhook", timeout=5,
                      json={"value": v, "field": "user_id_update"})
    assert r.json() == {"ok": True, "status": 200}
    assert json.loads(hook.wait(3)[2]["raw"])["entry"][0]["changes"][0]["field"] == \
        "user_id_update"
    # a hidden phone is left out unless given; no parent when none is known
    sim.cloud_user("US.5", wa_id="16315550005", phone_hidden=True)
    item = sim.user_id_update_value("US.5", "US.6")["user_id_update"][0]
    assert "wa_id" not in item and "parent_user_id" not in item
    item = sim.user_id_update_value("US.6", "US.7", wa_id="16315550005")["user_id_update"][0]
    assert item["wa_id"] == "16315550005"


def test_system_messages_user_changed_user_id_and_number(sim):
    sim.cloud_user(UID, wa_id=WA, parent_user_id=PARENT)
    v = sim.user_changed_user_id_value(UID, UID2, msg_id="wamid.s1", ts=5, pnid="111")
    assert "contacts" not in v and v["metadata"]["phone_number_id"] == "111"
    m = v["messages"][0]
    assert (m["from_user_id"], m["from_parent_user_id"], m["id"], m["timestamp"], m["type"]) == (
        UID, PARENT, "wamid.s1", "5", "system")
    assert "from" not in m
    sy = m["system"]
    assert (sy["type"], sy["user_id"], sy["previous_user_id"]) == ("user_changed_user_id", UID2,
                                                                     UID)
    assert sy["body"] and "wa_id" not in sy
    assert sim.get_cloud_user(UID2)["wa_id"] == WA and sim.get_cloud_user(UID) is None
    # a number change: the user id is regenerated
    new_wa = "16315550777"
    v = sim.user_changed_number_value(WA, new_wa, "US.31", UID2, ts=6)
    assert "contacts" not in v
    m = v["messages"][0]
    assert m["from"] == WA and m["from_user_id"] == UID2 and m["type"] == "system"
    sy = m["system"]
    assert (sy["type"], sy["wa_id"], sy["user_id"], sy["previous_user_id"],
            sy["previous_parent_user_id"]) == ("user_changed_number", new_wa, "US.31", UID2,
                                               PARENT)
    assert sy["body"]
    rec = sim.get_cloud_user(new_wa)
    assert rec["user_id"] == "US.31" and sim.get_cloud_user(UID2) is None
    assert sim.get_cloud_user(WA) is None
    # the previous id taken from the registry, the new one made up
    sy = sim.user_changed_number_value(new_wa, "16315550888")["messages"][0]["system"]
    assert sy["previous_user_id"] == "US.31"
    assert re.fullmatch(r"US\.\d+", sy["user_id"]) and sy["user_id"] != "US.31"
    assert sim.get_cloud_user("16315550888")["user_id"] == sy["user_id"]


def test_cloud_event_route_builds_and_posts(sim, hook):
    sim.configure(cloud_webhook_url=hook.url)
    sim.cloud_user(UID, wa_id=WA)
    r = requests.post(sim.url + "/_sim/cloud_event", timeout=5, json={
        "kind": "user_id_update", "old_user_id": UID, "new_user_id": UID2})
    assert r.status_code == 200
    j = r.json()
    assert j["ok"] is True and j["status"] == 200 and j["field"] == "user_id_update"
    ch = json.loads(hook.wait(1)[0]["raw"])["entry"][0]["changes"][0]
    assert ch["field"] == "user_id_update" and ch["value"] == j["value"]
    r = requests.post(sim.url + "/_sim/cloud_event", timeout=5, json={
        "kind": "inbound", "user_id": UID2, "text": "yo", "pnid": "444", "post": False})
    j = r.json()
    assert j["field"] == "messages" and "status" not in j
    assert j["value"]["messages"][0]["text"]["body"] == "yo"
    assert j["value"]["metadata"]["phone_number_id"] == "444" and len(hook.got) == 1
    out = sim.cloud_event("status", msg_id="wamid.Z", status="read", user_id=UID2, pnid="555")
    assert out["status"] == 200
    got = json.loads(hook.wait(2)[1]["raw"])["entry"][0]["changes"][0]["value"]
    assert got["metadata"]["phone_number_id"] == "555" and got["statuses"][0]["id"] == "wamid.Z"
    assert requests.post(sim.url + "/_sim/cloud_event", json={"kind": "nope"},
                         timeout=5).status_code == 400
    assert requests.post(sim.url + "/_sim/cloud_event", json={"kind": "inbound", "bad": 1},
                         timeout=5).status_code == 400


def test_mismatch_status_in_the_2026_shape(sim, hook):
    sess = authed(sim)
    sim.configure(cloud_mismatch="status", cloud_webhook_url=hook.url, callback_delay_ms=10)
    sim.cloud_user(UID, wa_id=WA, parent_user_id=PARENT)
    sim.set_identity(WA, "NEW=")         # held under the phone number
    # sent by phone: no recipient_user_id, no contacts
    r = cloud_send(sess, sim, to=WA, recipient_identity_key_hash="OLD=")
    assert r.status_code == 200 and r.json()["contacts"][0]["user_id"] == UID
    v = json.loads(hook.wait(1)[0]["raw"])["entry"][0]["changes"][0]["value"]
    st = v["statuses"][0]
    assert "contacts" not in v and st["status"] == "failed" and st["recipient_id"] == WA
    assert "recipient_user_id" not in st and st["errors"][0]["code"] == 137000
    assert v["metadata"]["phone_number_id"] == "111"
    # sent by user id (the identity found under the phone): recipient_user_id and parent
    r = cloud_send(sess, sim, path="/v21.0/222/messages", recipient=UID,
                   recipient_identity_key_hash="OLD=")
    mid = r.json()["messages"][0]["id"]
    v = json.loads(hook.wait(2)[1]["raw"])["entry"][0]["changes"][0]["value"]
    st = v["statuses"][0]
    assert st["id"] == mid and st["recipient_user_id"] == UID and st["recipient_id"] == WA
    assert st["recipient_parent_user_id"] == PARENT and "contacts" not in v
    assert v["metadata"]["phone_number_id"] == "222"
    assert sim.sent_message(mid)["failed_code"] == 137000
    assert sim.state()["cloud_mismatches"][-1]["to"] == UID
    # phone hidden: no recipient_id
    sim.cloud_user(UID, wa_id=WA, phone_hidden=True)
    cloud_send(sess, sim, recipient=UID, recipient_identity_key_hash="OLD=")
    st = json.loads(hook.wait(3)[2]["raw"])["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert st["recipient_user_id"] == UID and "recipient_id" not in st
    # the current hash under the other id goes through without a status
    cloud_send(sess, sim, recipient=UID, recipient_identity_key_hash="NEW=")
    time.sleep(0.1)
    assert len(hook.got) == 3


def test_auth_templates_refused_to_user_ids(sim):
    sess = authed(sim)
    otp = {"name": "otp_login", "language": {"code": "en"}}
    for path in ("/v21.0/111/messages", "/messages", "/v21.0/111/marketing_messages"):
        r = cloud_send(sess, sim, path=path, recipient=UID, type="template", template=otp)
        assert r.status_code == 400, path
        e = r.json()["error"]
        assert e["code"] == 131062 and e["type"] == "OAuthException"
        assert "business-scoped" in e["message"] and "phone number" in e["message"]
    assert sim.state()["messages_total"] == 0 and sim.state()["cloud_sent"] == []
    # to a phone number (also with a recipient beside it): sent
    assert cloud_send(sess, sim, to=WA, type="template", template=otp).status_code == 200
    assert cloud_send(sess, sim, to=WA, recipient=UID, type="template",
                      template={"name": "auth_code"}).status_code == 200
    # other templates go to user ids
    assert cloud_send(sess, sim, recipient=UID, type="template",
                      template={"name": "order_update"}).status_code == 200
    # the list is a knob
    requests.post(sim.url + "/_sim/config", json={"auth_templates": ["order_update"]}, timeout=5)
    assert cloud_send(sess, sim, recipient=UID, type="template",
                      template={"name": "order_update"}).status_code == 400
    assert cloud_send(sess, sim, recipient=UID, type="template", template=otp).status_code == 200
    assert sim.state()["messages_total"] == 4


def test_marketing_messages_route(sim):
    sess = authed(sim)
    assert requests.post(sim.url + "/v21.0/111/marketing_messages", json={},
                         timeout=5).status_code == 401
    sim.cloud_user(UID, wa_id=WA)
    sim.set_identity(UID, "K1=")
    r = cloud_send(sess, sim, path="/v21.0/111/marketing_messages", recipient=UID,
                   type="template", template={"name": "promo"},
                   recipient_identity_key_hash="K1=")
    assert r.status_code == 200
    j = r.json()
    assert j["messaging_product"] == "whatsapp"
    assert j["contacts"] == [{"input": UID, "wa_id": WA, "user_id": UID}]
    mid = j["messages"][0]["id"]
    assert mid.startswith("wamid.")
    rec = sim.sent_message(mid)
    assert rec["endpoint"] == "marketing_messages" and rec["phone_number_id"] == "111"
    assert sim.state()["messages"][-1]["endpoint"] == "marketing_messages"
    calls = sim.calls_matching("POST", path="/v21.0/111/marketing_messages")
    assert len(calls) == 2 and calls[1]["status"] == 200 and calls[1]["body"]["recipient"] == UID
    # the same checks as /messages
    r = cloud_send(sess, sim, path="/v21.0/111/marketing_messages", to=WA,
                   recipient_identity_key_hash="OLD=")
    assert r.status_code == 400 and r.json()["error"]["code"] == 137000
    r = sess.post(sim.url + "/v21.0/111/marketing_messages", json={"to": WA}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == 100
    assert sess.get(sim.url + "/v21.0/111/marketing_messages", timeout=5).status_code == 405
    # no 360dialog variant
    assert sess.post(sim.url + "/marketing_messages", json={}, timeout=5).status_code == 404
