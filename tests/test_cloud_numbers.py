"""Meta's Cloud API as a first-class platform: several business numbers behind one
webhook, 137000 closing the gate before the new hash is known and the next hash opening
it by policy, Graph's error envelope, blocks mirrored from Meta's answers and read back,
users known only by a user id, number and user-id changes, and turning Meta's identity
key check on.  Real binary, Redis, and the simulator's Graph surface."""
import json
import time

import pytest
import requests

from daemon import API_TOKEN, WEBHOOK_TOKEN
from helpers import new_msg_id, wait_for, world_wa_id
from waba_sim import WabaSim

A, B = "111000111", "222000222"           # two business numbers behind one webhook


@pytest.fixture
def sim():
    s = WabaSim(auth="bearer", bearer_token="cloudtoken-123456").start()
    yield s
    s.stop()


def start(waguard_factory, sim, identity=None, upstream=None, **hold):
    up = {"api": "cloud", "url": sim.url, "auth": "bearer", "token_file": "cloud_token",
          "phone_number_id": "%s,%s" % (A, B), "blocklist_sync_s": "0", "timeout_ms": "2000"}
    up.update(upstream or {})
    wg = waguard_factory(overrides={"upstream": up, "identity": identity or {}},
                         files={"cloud_token": "cloudtoken-123456\n"})
    sim.configure(cloud_webhook_url=wg.url + "/webhook", webhook_token=WEBHOOK_TOKEN, callback_delay_ms=10)
    return wg


def inbound(sim, pnid, w=None, uid=None, key_hash=None, text="hi"):
    contact = {"profile": {"name": "U"}}
    msg = {"id": new_msg_id("wamid."), "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
    if w:
        contact["wa_id"] = w
        msg["from"] = w
    if uid:
        contact["user_id"] = uid
        msg["from_user_id"] = uid
    if key_hash:
        contact["identity_key_hash"] = key_hash
    assert sim.post_cloud_webhook({"contacts": [contact], "messages": [msg]}, pnid=pnid) == 200


def gate(wg, who, pnid=None, type_="text"):
    p = "/v1/gate/%s?type=%s" % (requests.utils.quote(who, safe=""), type_)
    if pnid:
        p += "&phone_number_id=" + pnid
    r = wg.get(p, token=API_TOKEN)
    assert r.status_code in (200, 423), r.text
    return r.json()


def send(wg, pnid, to, type_="text", path=None):
    body = {"messaging_product": "whatsapp", "to": to, "type": type_}
    body.update({"text": {"body": "hello"}} if type_ == "text" else {"template": {"name": "hello"}})
    return wg.post(path or "/v21.0/%s/messages" % pnid, token=API_TOKEN, data=json.dumps(body),
                   headers={"Content-Type": "application/json"})


def sent(sim, pnid):
    return sim.calls_matching(method="POST", path="/v21.0/%s/messages" % pnid)


# ----------------------------------------------------------------------------- several numbers

def test_two_numbers_have_their_own_windows_and_blocks(waguard_factory, sim):
    wg = start(waguard_factory, sim)
    w = world_wa_id("BR")
    inbound(sim, A, w)                                   # the user wrote to number A only
    assert gate(wg, w, A)["allowed"] is True
    assert gate(wg, w, B)["reasons"] == ["outside_session_window"]
    # No number named: [upstream] phone_number_id's first, A.
    assert gate(wg, w)["allowed"] is True
    r = send(wg, B, w)
    assert r.status_code == 423 and r.json()["error"]["error_data"]["details"] == "outside_session_window", r.text
    assert not sent(sim, B)
    assert send(wg, A, w).status_code == 200 and len(sent(sim, A)) == 1
    # A block on number B is B's: A still sends.
    r = wg.post("/v21.0/%s/block_users" % B, token=API_TOKEN,
                json={"messaging_product": "whatsapp", "block_users": [{"user": "+" + w}]})
    assert r.status_code == 200, r.text
    assert "blocked" in gate(wg, w, B, "template")["reasons"]
    assert gate(wg, w, A, "template")["allowed"] is True


def test_without_a_configured_number_the_strictest_of_those_seen(waguard_factory, sim, redis_client):
    wg = start(waguard_factory, sim, upstream={"phone_number_id": ""})
    w = world_wa_id("ID")
    inbound(sim, A, w)
    assert gate(wg, w)["allowed"] is True                # one number seen: that one
    inbound(sim, B, world_wa_id("ID"))                   # someone else writes to B
    d = gate(wg, w)
    assert d["reasons"] == ["outside_session_window"], d   # two seen, none named: the strictest
    assert gate(wg, w, A)["allowed"] is True


# ----------------------------------------------------------------------------- 137000

def test_137000_closes_the_gate_and_the_next_hash_reopens_it(waguard_factory, sim):
    """A change slipped in after the decision: Meta refuses the pinned send with 137000;
    waguard closes the gate before it knows the new hash, the next webhook carrying a hash
    fills it in, the policy acknowledges it, and the next send is pinned to it."""
    wg = start(waguard_factory, sim)
    w = world_wa_id("GB")
    sim.set_identity(w, "KEY1=")
    inbound(sim, A, w, key_hash="KEY1=")                 # first hash: trusted
    assert gate(wg, w, A)["identity"]["acknowledged"] is True
    sim.set_identity(w, "KEY2=")                         # the user's new phone, unseen by waguard
    sim.configure(cloud_mismatch="status")
    before = len(sim.state()["callbacks"])
    r = send(wg, A, w)
    assert r.status_code == 200, r.text                  # Meta takes the message ...
    assert sent(sim, A)[-1]["body"]["recipient_identity_key_hash"] == "KEY1="
    cb = sim.wait_for_callbacks(before + 1, kind="cloud", timeout=5)[-1]   # ... and reports it failed: 137000
    assert cb["status"] == 200 and cb["body"]["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0][
        "code"] == 137000, cb
    d = gate(wg, w, A)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash_unknown"] is True, d
    r = send(wg, A, w)
    assert r.status_code == 423 and r.json()["error"]["code"] == 423, r.text
    assert len(sent(sim, A)) == 1
    # The next webhook with a hash fills it in; ack = auto acknowledges it (no call on Cloud).
    inbound(sim, A, w, key_hash="KEY2=")
    wait_for(lambda: gate(wg, w, A)["allowed"], 5, what="the new hash acknowledged by policy")
    assert gate(wg, w, A)["identity"]["hash"] == "KEY2="
    sim.configure(cloud_mismatch="error")
    r = send(wg, A, w)
    assert r.status_code == 200, r.text
    assert sent(sim, A)[-1]["body"]["recipient_identity_key_hash"] == "KEY2="


def test_480_on_premises_closes_the_gate_and_fetches_the_hash(procs):
    """On-Premises: a failed status with 480; the worker asks the WABA client for the
    identity, records it and acknowledges it."""
    _, sim, wg = procs.stack()
    w = world_wa_id("NG")
    sim.set_identity(w, "ON1=", int(time.time()) * 1000, acknowledged=True)
    wg.webhook_ok({"messages": [{"from": w, "id": new_msg_id(), "timestamp": str(int(time.time())),
                                 "type": "text", "text": {"body": "x"}}]})
    assert gate(wg, w)["allowed"] is True
    sim.set_identity(w, "ON2=", int(time.time()) * 1000 + 5)
    # the worker's GET is held a moment, so that the closed gate is seen before it opens
    sim.delay(400, count=1, path_prefix="/v1/contacts/%s/identity" % w, method="GET")
    wg.webhook_ok({"statuses": [{"id": new_msg_id(), "status": "failed", "recipient_id": w,
                                 "timestamp": str(int(time.time())), "errors": [{"code": 480, "title": "x"}]}]})
    assert gate(wg, w)["reasons"] == ["identity_unacknowledged"]
    wait_for(lambda: gate(wg, w)["allowed"], 5, what="the fetched hash acknowledged")
    assert gate(wg, w)["identity"]["hash"] == "ON2="
    assert sim.get_identity(w)["acknowledged"] is True


# ----------------------------------------------------------------------------- Graph envelope

def test_graph_envelope_on_waguards_own_cloud_answers(waguard_factory, sim):
    wg = start(waguard_factory, sim, upstream={"timeout_ms": "300"})
    w = world_wa_id("DE")
    r = send(wg, A, w)
    e = r.json()["error"]
    assert r.status_code == 423 and e["type"] == "WaguardGateRefusal" and e["fbtrace_id"], r.text
    assert r.json()["decision"]["reasons"] == ["outside_session_window"]
    r = wg.post("/v21.0/%s/messages" % A, token=API_TOKEN, data='{"to":"1","to":"2"}',
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 100, r.text
    inbound(sim, A, w)
    sim.delay(1000, count=1, path_prefix="/v21.0/%s/messages" % A)
    r = send(wg, A, w)
    assert r.status_code == 504 and r.json()["error"]["code"] == 504, r.text
    # /v1 keeps the WABA envelope
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": world_wa_id("DE"), "type": "text"})
    assert r.status_code == 423 and "errors" in r.json(), r.text


# ----------------------------------------------------------------------------- blocks

def test_blocks_mirrored_from_full_and_partial_answers(waguard_factory, sim):
    wg = start(waguard_factory, sim)
    ok_user, bad_user = world_wa_id("IN"), world_wa_id("IN")
    sim.configure(block_fail_users=[bad_user])
    r = wg.post("/v21.0/%s/block_users" % A, token=API_TOKEN, json={
        "messaging_product": "whatsapp", "block_users": [{"user": ok_user}, {"user": bad_user}]})
    assert r.status_code == 400 and r.json()["block_users"]["failed_users"], r.text
    assert "blocked" in gate(wg, ok_user, A, "template")["reasons"]
    assert "blocked" not in gate(wg, bad_user, A, "template")["reasons"]
    r = wg.request("DELETE", "/v21.0/%s/block_users" % A, token=API_TOKEN, json={
        "messaging_product": "whatsapp", "block_users": [{"user": ok_user}]})
    assert r.status_code == 200 and r.json()["block_users"]["removed_users"], r.text
    assert gate(wg, ok_user, A, "template")["allowed"] is True


def test_blocks_made_elsewhere_are_read_back_per_number(waguard_factory, sim):
    elsewhere, mine = world_wa_id("AR"), world_wa_id("AR")
    sim.set_blocked(elsewhere, True, pnid=A)
    wg = start(waguard_factory, sim, upstream={"blocklist_sync_s": "1"})
    wait_for(lambda: "blocked" in gate(wg, elsewhere, A, "template")["reasons"], 5, what="the read-back block")
    assert gate(wg, elsewhere, B, "template")["allowed"] is True
    # Blocked through waguard, then unblocked elsewhere: the next read unblocks it.
    r = wg.post("/v21.0/%s/block_users" % A, token=API_TOKEN, json={
        "messaging_product": "whatsapp", "block_users": [{"user": mine}]})
    assert r.status_code == 200
    sim.set_blocked(elsewhere, False, pnid=A)
    wait_for(lambda: gate(wg, elsewhere, A, "template")["allowed"], 5, what="unblocked elsewhere, read back")
    assert "blocked" in gate(wg, mine, A, "template")["reasons"]
    assert wg.metric("waguard_blocklist_syncs_total", result="ok") >= 2


# ----------------------------------------------------------------------------- user ids

def test_a_user_known_only_by_user_id_can_be_answered(waguard_factory, sim):
    wg = start(waguard_factory, sim)
    uid = "US.13491208655302741918"
    inbound(sim, A, uid=uid)
    assert gate(wg, uid, A)["allowed"] is True
    r = wg.post("/v21.0/%s/messages" % A, token=API_TOKEN,
                json={"messaging_product": "whatsapp", "recipient": uid, "type": "text", "text": {"body": "x"}})
    assert r.status_code == 200, r.text


def test_number_change_moves_window_identity_and_blocks(waguard_factory, sim):
    wg = start(waguard_factory, sim, identity={"ack": "manual"})
    old, new, uid = world_wa_id("MX"), world_wa_id("MX"), "MX.777000111222"
    inbound(sim, A, old, uid=uid, key_hash="OLDK=")
    wg.post("/v21.0/%s/block_users" % B, token=API_TOKEN,
            json={"messaging_product": "whatsapp", "block_users": [{"user": old}]})
    assert sim.post_cloud_webhook({"messages": [{
        "from": old, "id": new_msg_id("wamid."), "timestamp": str(int(time.time())), "type": "system",
        "system": {"body": "changed", "wa_id": new, "type": "user_changed_number", "user_id": uid}}]},
        pnid=A) == 200
    # the window and the identity moved, and a new number's identity is acknowledged again
    d = gate(wg, new, A)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash"] == "OLDK=", d
    assert wg.ack_now(new).status_code == 202
    d = wait_for(lambda: (lambda d: d if d["allowed"] else None)(gate(wg, new, A)), 5, "acknowledged again")
    assert d["identity"]["hash"] == "OLDK=", d
    assert "blocked" in gate(wg, new, B, "template")["reasons"]               # and the block
    assert "number_changed" in gate(wg, old, A)["reasons"]
    assert gate(wg, uid, A)["wa_id"] == new


def test_user_id_change_moves_the_state(waguard_factory, sim):
    wg = start(waguard_factory, sim, identity={"ack": "manual", "first_seen": "hold"})
    prev, uid = "GB.100200300", "GB.400500600"
    inbound(sim, A, uid=prev, key_hash="UK1=")
    assert gate(wg, prev, A)["reasons"] == ["identity_unacknowledged"]
    assert sim.post_cloud_webhook({"messages": [{
        "id": new_msg_id("wamid."), "timestamp": str(int(time.time())), "type": "system",
        "system": {"body": "id changed", "type": "user_changed_user_id", "user_id": uid,
                   "previous_user_id": prev}}]}, pnid=A) == 200
    d = gate(wg, uid, A)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash"] == "UK1=", d


# ----------------------------------------------------------------------------- Meta's check

def test_identity_check_turned_on_per_number_and_refusal_reported(waguard_factory, sim):
    sim.configure(settings_error={"status": 400, "code": 100, "message": "Unsupported for this number",
                                  "phone_number_ids": [B]})
    wg = start(waguard_factory, sim, upstream={"identity_check": "on"})
    wait_for(lambda: len(wg.get("/readyz").json().get("identity_check", {})) == 2 and
             "pending" not in wg.get("/readyz").json()["identity_check"].values(), 5, what="both settings calls")
    ic = wg.get("/readyz").json()["identity_check"]
    assert ic[A] == "on" and ic[B].startswith("refused") and "Unsupported for this number" in ic[B], ic
    calls = sim.calls_matching(method="POST", path="/v21.0/%s/settings" % A)
    assert calls and calls[0]["body"] == {"user_identity_change": {"enable_identity_key_check": True}}
    assert wg.metric("waguard_identity_check", phone_number_id=A, state="on") == 1
    assert wg.metric("waguard_identity_check", phone_number_id=B, state="refused") == 1
    assert "Unsupported for this number" in wg.log()


def test_single_decisions_per_number_agree_with_the_function(waguard_factory, sim):
    """GET /v1/gate?phone_number_id=N reads the record plainly (N's window, the plain block or
    N's, gate.c); POST /v1/gate with the same number asks the gate function.  For users of
    several countries with windows and blocks on one number or the other, and one blocked on
    every number, both answer alike for each number, and for no number named (the default
    number)."""
    wg = start(waguard_factory, sim)
    users = {}
    for i, country in enumerate(("US", "GB", "IN", "BR", "NG", "ID")):
        w = world_wa_id(country)
        inbound(sim, A if i % 2 == 0 else B, w=w, key_hash="K%d=" % i)
        users[w] = country
    ws = list(users)
    wait_for(lambda: all(gate(wg, w, A, "template")["wa_id"] == w for w in ws), 5, what="webhooks applied")
    assert wg.post("/%s/%s/block_users" % ("v21.0", B), token=API_TOKEN,
                   json={"messaging_product": "whatsapp", "block_users": [{"user": ws[0]}]}).status_code < 500
    for number in (A, B, None):
        for t in ("text", "template"):
            payload = {"wa_ids": ws + ["+" + ws[1], world_wa_id("DE")], "type": t}
            if number:
                payload["phone_number_id"] = number
            batch = wg.post("/v1/gate", token=API_TOKEN, json=payload)
            assert batch.status_code == 200, batch.text
            for x, b in zip(payload["wa_ids"], batch.json()["results"]):
                assert gate(wg, x, number, t) == b, (x, number, t)
    # the windows differ by number, so the comparison above compared something
    assert gate(wg, ws[0], A)["allowed"] != gate(wg, ws[0], B)["allowed"] or \
        gate(wg, ws[1], A)["allowed"] != gate(wg, ws[1], B)["allowed"]
