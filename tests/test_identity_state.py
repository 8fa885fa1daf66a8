"""The identity state machine (src/lua/identity.lua) and its invariants, through the real
daemon, Redis and the simulator: each test is one way the gate used to fail open (the
adversarial probe's list, "The promise fails open…"), or one invariant:

  I1  a hash once seen for a user never becomes the newest again;
  I2  hash_unknown is left only by a hash never seen, or the WABA client's own GET;
  I3  an acknowledgement names the newest hash or does nothing; none in hash_unknown;
  I4  the gate is open for identity only in acknowledged;
  I5  records that become one keep the stricter state.

Users come from several countries (helpers.WORLD)."""
import json
import time
from urllib.parse import quote

import pytest

from daemon import ADMIN_TOKEN, API_TOKEN
from helpers import (body, cloud, cloud_inbound, contact_result, contacts_callback, gate_decision,
                     identity_change, identity_change_msg, identity_obj, inbound_text, inbound_text_msg, new_msg_id,
                     status_item, statuses, wait_for, world_wa_id)

MANUAL = {"identity": {"ack": "manual"}}
NOW = int(time.time())


def gate(wg, who, type_="template", **q):
    return gate_decision(wg, who, type_, **q)


def closed(wg, who, **q):
    d = gate(wg, who, **q)
    assert d["allowed"] is False and "identity_unacknowledged" in d["reasons"], d
    return d


def opened(wg, who, **q):
    d = gate(wg, who, **q)
    assert d["allowed"] is True, d
    return d


def acked_first(wg, w, h="H1=", ts=NOW - 7200):
    """w's first identity, reported acknowledged by the WABA client in a message."""
    wg.webhook_ok(body(messages=[inbound_text_msg(w, ts=ts + 10, identity=identity_obj(h, ts * 1000, True))]))
    opened(wg, w)


# ----------------------------------------------------------------------------- 1. errors[]

def test_a_200_with_errors_is_no_acknowledgement_from_the_worker_or_a_forwarded_put(procs):
    _, sim, wg = procs.stack()
    w = world_wa_id("IN")
    sim.configure(identity_put_errors=[1009])
    sim.set_identity(w, "ERR=", created_timestamp=(NOW - 60) * 1000, acknowledged=False)
    wg.webhook_ok(identity_change(w, "ERR=", NOW - 60))
    # the worker PUT it, was answered 200 with errors[], asked again (GET) and gave up
    wait_for(lambda: wg.identity(w)["identity"]["state"] == "failed", 10, "given up")
    closed(wg, w)
    assert sim.get_identity(w)["acknowledged"] is False
    # an operator's forwarded PUT answered the same way acknowledges nothing either
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=ADMIN_TOKEN, json={"hash": "ERR="})
    assert r.status_code == 200 and r.json()["errors"], r.text
    closed(wg, w)


# ----------------------------------------------------------------------------- 2. future, then old

def test_a_future_dated_change_is_not_overturned_by_the_old_hash_acknowledged(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    w = world_wa_id("DE")
    acked_first(wg, w, "H1=")
    wg.webhook_ok(identity_change(w, "H2=", NOW + 600))           # 10 min ahead: recorded at arrival
    assert closed(wg, w)["identity"]["hash"] == "H2="
    # a late message from the old phone, saying its hash is acknowledged, with a true time
    wg.webhook_ok(body(messages=[inbound_text_msg(w, ts=NOW - 30,
                                                  identity=identity_obj("H1=", (NOW - 7200) * 1000, True))]))
    assert closed(wg, w)["identity"]["hash"] == "H2="                   # I1
    assert [i["wa_id"] for i in wg.identities("pending")] == [w]


# ----------------------------------------------------------------------------- 3. hash_unknown

def test_hash_unknown_is_not_undone_by_an_old_copy_on_premises(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    w = world_wa_id("BR")
    acked_first(wg, w, "OLD=")
    wg.webhook_ok(statuses(status_item("wamid.F1", w, "failed", errors=[{"code": 480, "title": "x"}])))
    d = closed(wg, w)
    assert d["identity"].get("hash_unknown") is True, d
    wg.webhook_ok(body(messages=[inbound_text_msg(w, ts=NOW - 20,
                                                  identity=identity_obj("OLD=", (NOW - 7200) * 1000, True))]))
    assert closed(wg, w)["identity"].get("hash_unknown") is True      # I2
    # a hash never seen leaves it (and is what must be acknowledged now)
    wg.webhook_ok(identity_change(w, "NEW=", NOW - 10))
    d = closed(wg, w)
    assert d["identity"]["hash"] == "NEW=" and "hash_unknown" not in d["identity"], d


def test_hash_unknown_resolved_by_the_waba_clients_own_answer_and_then_acknowledged(procs):
    _, sim, wg = procs.stack()                                             # ack = auto
    w = world_wa_id("NG")
    sim.set_identity(w, "NG1=", created_timestamp=(NOW - 3600) * 1000, acknowledged=False)
    wg.webhook_ok(identity_change(w, "NG1=", NOW - 3600))
    wait_for(lambda: gate(wg, w)["allowed"], 10, "acknowledged")
    # a late 480: the WABA client's GET says NG1= is still its newest -> PUT again -> open
    sim.set_identity(w, "NG1=", created_timestamp=(NOW - 3600) * 1000, acknowledged=False)
    wg.webhook_ok(statuses(status_item("wamid.L", w, "failed", errors=[{"code": 480, "title": "x"}])))
    wait_for(lambda: gate(wg, w)["allowed"], 10, "acknowledged again")
    puts = sim.calls_matching(method="PUT", path="/v1/contacts/%s/identity" % w)
    gets = sim.calls_matching(method="GET", path="/v1/contacts/%s/identity" % w)
    assert len(puts) >= 2 and gets, (puts, gets)
    assert gets[-1]["seq"] < puts[-1]["seq"]                             # fetched first, then PUT


def test_cloud_137000_is_not_undone_by_an_old_key_hash_and_an_operator_cannot_ack_it(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}})
    w = world_wa_id("MX")
    wg.webhook_ok(cloud_inbound(w, key_hash="K1=", ts=NOW - 600))        # first: trusted
    opened(wg, w)
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.S1", "status": "failed", "recipient_id": w,
                                        "timestamp": str(NOW - 30), "errors": [{"code": 137000}]}]}))
    closed(wg, w)
    # a late message, and a status, carrying the old key hash change nothing
    wg.webhook_ok(cloud_inbound(w, key_hash="K1=", ts=NOW - 5))
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.S2", "status": "read", "recipient_id": w,
                                        "timestamp": str(NOW - 4), "recipient_identity_key_hash": "K1="}]}))
    assert closed(wg, w)["identity"].get("hash_unknown") is True
    # an operator's ack would acknowledge the stale hash: refused, saying why
    a = wg.ack_now(w)
    assert a.status_code == 409 and "not known yet" in a.text, a.text
    closed(wg, w)
    # the new key hash fills it in; ack = auto acknowledges it (the Cloud API has no call)
    wg.webhook_ok(cloud_inbound(w, key_hash="K2=", ts=NOW - 1))
    wait_for(lambda: gate(wg, w)["allowed"], 5, "K2 acknowledged")
    assert gate(wg, w)["identity"]["hash"] == "K2="


# ----------------------------------------------------------------------------- 4. Cloud order

def test_an_old_cloud_key_hash_dated_later_never_becomes_newest_again(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}, "identity": {"ack": "manual"}})
    w = world_wa_id("PH")
    wg.webhook_ok(cloud_inbound(w, key_hash="K1=", ts=NOW - 900))
    wg.webhook_ok(cloud_inbound(w, key_hash="K2=", ts=NOW - 600))
    assert closed(wg, w)["identity"]["hash"] == "K2="
    # a read status of a message sent under K1, dated after K2 (history K1, K2, K1)
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.R", "status": "read", "recipient_id": w,
                                        "timestamp": str(NOW - 60), "recipient_identity_key_hash": "K1="}]}))
    assert closed(wg, w)["identity"]["hash"] == "K2="                   # I1
    hist = [e["hash"] for e in wg.identity(w)["history"]]
    assert hist == ["K2=", "K1="], hist


# ----------------------------------------------------------------------------- 5. user ids

def test_a_137000_under_a_user_id_alone_survives_the_link_to_its_wa_id(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}, "identity": {"ack": "manual"}})
    w, u = world_wa_id("AR"), "AR.8812004455"
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.U", "status": "failed", "recipient_user_id": u,
                                        "timestamp": str(NOW - 60), "errors": [{"code": 137000}]}]}))
    closed(wg, u)
    wg.webhook_ok(cloud_inbound(w, uid=u, ts=NOW - 5))                   # seen together: linked
    for who in (w, u, "+" + w):
        assert closed(wg, who)["identity"].get("hash_unknown") is True  # I5


def test_a_renamed_user_id_names_nobody_new_and_is_refused(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}})
    w, u1, u2 = world_wa_id("GB"), "GB.100200300", "GB.400500600"
    wg.webhook_ok(cloud_inbound(uid=u1, key_hash="GK1=", ts=NOW - 900))
    opened(wg, u1)
    wg.webhook_ok(cloud({"messages": [{"from_user_id": u1, "id": new_msg_id("wamid."), "timestamp": str(NOW - 600),
                                       "type": "system", "system": {"type": "user_changed_user_id", "body": "x",
                                                                    "user_id": u2, "previous_user_id": u1}}]}))
    wg.webhook_ok(cloud_inbound(w, uid=u2, ts=NOW - 300))                # the new id linked to its wa_id
    d = gate(wg, u1)
    assert d["allowed"] is False and "number_changed" in d["reasons"] and d["new_user_id"] == u2, d
    # the user id change is an identity event: acknowledged again (ack = auto on the Cloud: locally)
    wait_for(lambda: gate(wg, u2)["allowed"], 5, "acknowledged again")
    assert gate(wg, w)["allowed"] and gate(wg, w)["identity"]["hash"] == "GK1="
    assert "number_changed" in gate(wg, u1)["reasons"]


# ----------------------------------------------------------------------------- 6. a send's answer

@pytest.mark.parametrize("platform", ["onprem", "cloud"])
def test_a_refusal_in_a_sends_own_answer_closes_the_gate(procs, platform):
    cloud_api = platform == "cloud"
    over = {"identity": {"ack": "manual"}}
    if cloud_api:
        over["upstream"] = {"api": "cloud", "auth": "none"}
    _, sim, wg = procs.stack(sim_options={} if not cloud_api else {"auth": "none"}, overrides=over)
    w = world_wa_id("ID")
    if cloud_api:
        wg.webhook_ok(cloud_inbound(w, key_hash="IDK=", ts=NOW - 60))
    else:
        acked_first(wg, w, "IDH=", ts=NOW - 600)
        wg.webhook_ok(inbound_text(w, ts=NOW - 60))
    opened(wg, w, type_="text")
    sim.configure(send_refusal="137000" if cloud_api else "480")
    path = "/v21.0/PN1/messages" if cloud_api else "/v1/messages"
    r = wg.post(path, token=API_TOKEN, json={"messaging_product": "whatsapp", "to": w, "type": "text",
                                             "text": {"body": "hi"}})
    assert r.status_code == 400, r.text
    d = closed(wg, w, type_="text")
    assert d["identity"].get("hash_unknown") is True, d
    if not cloud_api:
        # On-Premises then asks the WABA client for the new hash (an operator's request here)
        sim.configure(send_refusal=None)
        sim.set_identity(w, "IDH2=", created_timestamp=(NOW - 5) * 1000, acknowledged=False)
        assert wg.ack_now(w).status_code == 202
        wait_for(lambda: gate(wg, w, type_="text")["allowed"], 10, "the new hash fetched and acknowledged")
        assert gate(wg, w)["identity"]["hash"] == "IDH2="


# ----------------------------------------------------------------------------- 7. dead letters

@pytest.mark.parametrize("shape", ["bad-hash", "bad-time", "code-as-string", "top-level-error"])
def test_an_identity_change_or_refusal_that_cannot_be_used_still_closes_the_gate(procs, shape):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    w = world_wa_id("NG")
    acked_first(wg, w, "NGOK=")
    if shape == "bad-hash":
        m = identity_change_msg(w, "not a hash\"", NOW - 10)
        b = body(messages=[m])
    elif shape == "bad-time":
        m = identity_change_msg(w, "GOOD=", NOW)
        m["timestamp"] = "yesterday"
        b = body(messages=[m])
    elif shape == "code-as-string":
        b = statuses(status_item("wamid.S", w, "failed", errors=[{"code": "480", "title": "x"}]))
    else:
        b = statuses(status_item("wamid.T", w, "failed"))
        b["errors"] = [{"code": 480, "title": "User identity changed"}]
    wg.webhook_ok(b)
    assert closed(wg, w)["identity"].get("hash_unknown") is True


def test_a_refusal_that_names_nobody_is_counted_never_dropped_silently(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}})
    before = wg.metric("waguard_identity_refusals_unplaced_total")
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.NOBODY", "status": "failed", "timestamp": str(NOW),
                                        "errors": [{"code": 137000}]}]}))
    assert wg.metric("waguard_identity_refusals_unplaced_total") == before + 1
    assert any(e[1]["kind"] == "identity_refusal_unplaced"
               for e in r.client().xrange(wg.key("events")))


# ----------------------------------------------------------------------------- 8. forms

@pytest.mark.parametrize("country,dialled,bare", [
    ("AR", "+54 11 5612-1008", "541156121008"),     # mapped to 5491156121008
    ("MX", "+52 55 1234 5678", "525512345678"),     # mapped to 5215512345678
    ("BR", "+55 11 8765-4321", "551187654321"),     # mapped to 5511987654321
])
def test_bare_international_digits_follow_the_contact_mapping(procs, country, dialled, bare):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    mapped = {"AR": "5491156121008", "MX": "5215512345678", "BR": "5511987654321"}[country]
    wg.webhook_ok(contacts_callback(contact_result(dialled, "valid", mapped)))
    wg.webhook_ok(identity_change(mapped, "MAP=", NOW - 60))
    for form in (bare, "+" + bare, dialled):
        d = closed(wg, form)
        assert d["wa_id"] == mapped, (form, d)


def test_a_bracketed_trunk_zero_is_read_both_ways(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    w = "447700900123"
    wg.webhook_ok(identity_change(w, "UK=", NOW - 60))
    for form in ("+44 (0)7700 900123", "+44 7700 900123", "0044 7700 900123"):
        assert closed(wg, form)["wa_id"] == w, form


# ----------------------------------------------------------------------------- 9. read one way

def send_raw(wg, raw, path="/v1/messages"):
    return wg.post(path, token=API_TOKEN, data=raw, headers={"Content-Type": "application/json"})


def test_a_send_that_can_be_read_two_ways_is_refused_and_never_forwarded(procs):
    _, sim, wg = procs.stack(overrides={"upstream": {"api": "cloud"}})
    w = world_wa_id("GB")
    wg.webhook_ok(inbound_text(w))
    for raw in ('{"to":" %s","type":"text","text":{"body":"x"}}' % w,
                '{"to":"%s ","type":"text","text":{"body":"x"}}' % w,
                '{"to":"%s\\u0000123","type":"text","text":{"body":"x"}}' % w,
                '{"to":"%s","type":"text","text":{"body":"x"}} {"to":"16315550000"}' % w):
        for path in ("/v1/messages", "/v21.0/PN1/messages"):
            r = send_raw(wg, raw, path)
            assert r.status_code == 400, (raw, path, r.text)
    r = send_raw(wg, json.dumps({"type": "text", "text": {"body": "x"}, "to": w}), "/v21.0/PN1/messages?to=16315550000")
    assert r.status_code == 400 and "query" in r.text, r.text
    r = wg.post("/v21.0/", token=API_TOKEN, data="batch=%5B%5D")
    assert r.status_code in (400, 404), r.text
    r = wg.post("/v21.0/PN1", token=API_TOKEN, data="batch=%5B%7B%22method%22%3A%22POST%22%7D%5D",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "batch" in r.text.lower(), r.text
    r = wg.post("/v21.0/PN1/calls", token=API_TOKEN, json={"messaging_product": "whatsapp", "to": w,
                                                           "action": "connect"})
    assert r.status_code in (400, 404), r.text
    assert not [c for c in sim.calls_matching(method="POST") if c["path"].startswith(("/v1/messages", "/v21.0/"))]


# ----------------------------------------------------------------------------- 10. holds

HOLD = {"identity": {"ack": "manual"}, "hold": {"authentication_s": "3600",
                                                "authentication_templates": "otp_login"}}


def test_holds_follow_the_type_and_ignore_case_and_spaces(procs):
    _, sim, wg = procs.stack(overrides=HOLD)
    w = world_wa_id("IN")
    acked_first(wg, w, "INH1=")
    sim.set_identity(w, "INH2=", created_timestamp=(NOW - 30) * 1000, acknowledged=False)
    wg.webhook_ok(identity_change(w, "INH2=", NOW - 30))
    assert wg.ack_now(w).status_code == 202
    wait_for(lambda: gate(wg, w)["allowed"], 10, "acknowledged")
    tmpl = lambda name: {"namespace": "ns", "name": name, "language": {"policy": "deterministic", "code": "en"}}
    for msg in ({"to": w, "type": "hsm", "hsm": {"element_name": "otp_login", "namespace": "ns"}},
                {"to": w, "type": "template", "template": tmpl("OTP_LOGIN")},
                {"to": w, "type": "template", "template": tmpl("otp_login ")}):
        r = wg.post("/v1/messages", token=API_TOKEN, json=msg)
        assert r.status_code == 423 and "identity_recently_changed" in r.text, (msg, r.text)
    # a decoy template beside an hsm: refused, the body says two things
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "hsm", "template": tmpl("hello"),
                                                      "hsm": {"element_name": "otp_login"}})
    assert r.status_code == 400, r.text
    r = wg.get("/v1/gate/%s?type=template&category=nosuch" % w, token=API_TOKEN)
    assert r.status_code == 400, r.text
    assert not sim.calls_matching(method="POST", path="/v1/messages")


# ----------------------------------------------------------------------------- 11. ack = manual

def test_under_manual_only_an_operator_acknowledges_through_the_forwarded_put(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("US")
    sim.set_identity(w, "MAN=", created_timestamp=(NOW - 60) * 1000, acknowledged=False)
    wg.webhook_ok(identity_change(w, "MAN=", NOW - 60))
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=API_TOKEN, json={"hash": "MAN="})
    assert r.status_code == 403 and "operator" in r.text, r.text
    assert not sim.calls_matching(method="PUT")
    closed(wg, w)
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=ADMIN_TOKEN, json={"hash": "MAN="})
    assert r.status_code == 200, r.text
    opened(wg, w)


# ----------------------------------------------------------------------------- 12. nothing lost

def test_a_contact_check_whose_mapping_cannot_be_kept_is_answered_503(procs):
    r = procs.redis()
    sim = procs.sim()
    wg = procs.daemon(r, sim, overrides={"contacts": {"check_budget": "0"}})
    c = r.client()
    c.config_set("maxmemory-policy", "noeviction")
    c.set("filler", "x" * (256 * 1024))
    c.config_set("maxmemory", str(int(c.info("memory")["used_memory"]) - 64 * 1024))   # out of memory now
    try:
        r_ = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+5491156121008"]})
        assert r_.status_code == 503 and "could not record" in r_.text, r_.text
        assert sim.calls_matching(method="POST", path="/v1/contacts")     # it was asked: retrying is free
    finally:
        c.config_set("maxmemory", "0")


# ----------------------------------------------------------------------------- the invariants

def test_every_hash_seen_stays_old_whatever_its_time_or_flag(procs):
    """I1 across platforms: a hash that was found late (older) is remembered as seen, so a
    copy of it with a time ahead of the clock cannot become the newest either."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    w = world_wa_id("PH")
    wg.webhook_ok(identity_change(w, "NEWER=", NOW - 100))
    wg.webhook_ok(identity_change(w, "OLDER=", NOW - 5000))              # late
    m = inbound_text_msg(w, ts=NOW - 1, identity=identity_obj("OLDER=", (NOW + 86400) * 1000, True))
    wg.webhook_ok(body(messages=[m]))
    assert closed(wg, w)["identity"]["hash"] == "NEWER="
    # and as a notification of its own, with a time ahead: late
    assert wg.webhook_ok(identity_change(w, "OLDER=", NOW + 86400))["late"] == 1
    assert closed(wg, w)["identity"]["hash"] == "NEWER="


def test_one_move_for_links_and_number_changes_lease_not_carried_old_record_unindexed(procs):
    """The two moves (a user id linked to its wa_id, a number change) are one: the stricter
    state wins, the lease of a worker that held the old record does not come along, and
    the old record leaves every index."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    c = r.client()
    old, new = world_wa_id("BR"), world_wa_id("BR")
    wg.webhook_ok(identity_change(old, "MV=", NOW - 600))
    c.hset(wg.user_key(old), "id_lease", str((NOW + 3600) * 1000))     # a worker holds it
    wg.webhook_ok(body(messages=[{"from": old, "id": new_msg_id(), "timestamp": str(NOW - 60), "type": "system",
                                  "system": {"type": "user_changed_number", "new_wa_id": new, "body": "x"}}]))
    rec_new = c.hgetall(wg.user_key(new))
    assert rec_new["id_hash"] == "MV=" and rec_new["id_state"] == "pending" and "id_lease" not in rec_new, rec_new
    assert "id_hash" not in c.hgetall(wg.user_key(old))
    pending = [i["wa_id"] for i in wg.identities("pending")]
    assert new in pending and old not in pending, pending
    d = gate(wg, old)
    assert "number_changed" in d["reasons"] and d["new_wa_id"] == new, d


def test_a_reacknowledgement_is_not_given_by_an_old_messages_flag(procs):
    """After a user id change the identity is acknowledged again; a late copy of an old
    message saying the hash is acknowledged (delivered again past the duplicate check's
    horizon) does not give it (the promise test found it: seed 43227730)."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}, "identity": {"ack": "manual"}})
    w, u1, u2 = world_wa_id("ID"), "ID.5550001", "ID.5550002"
    old = cloud_inbound(w, uid=u1, ts=NOW - 3000)
    old["entry"][0]["changes"][0]["value"]["messages"][0]["identity"] = identity_obj("IDK=", (NOW - 4000) * 1000, True)
    wg.webhook_ok(old)
    opened(wg, w)
    wg.webhook_ok(cloud({"messages": [{"from_user_id": u1, "id": new_msg_id("wamid."), "timestamp": str(NOW - 60),
                                       "type": "system", "system": {"type": "user_changed_user_id", "body": "x",
                                                                    "user_id": u2, "previous_user_id": u1}}]}))
    closed(wg, w)
    for _ in range(9):                                                   # past the rings' horizon
        wg.webhook_ok(cloud_inbound(w, uid=u2, ts=NOW - 30))
    wg.webhook_ok(old)
    closed(wg, w)
    assert wg.ack_now(w).status_code == 202                                # an operator does
    wait_for(lambda: gate(wg, w)["allowed"], 5, "acknowledged again")



@pytest.mark.parametrize("wa_record", ["none", "same_hash_acknowledged"])
def test_a_reacknowledgement_waits_on_when_the_user_id_is_linked_to_its_wa_id(procs, wa_record):
    """A user known by a user id alone changes user id: the identity waits for an
    acknowledgement again.  When the new id is then seen with its wa_id, the two records
    become one, and the hash still waits: an old message's flag does not give it under the
    wa_id either (the promise test found it: seed 599179022)."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud"}, "identity": {"ack": "manual"}})
    w, u1, u2 = world_wa_id("AR"), "AR.5410210201256848", "AR.277771046691"
    ident = identity_obj("ARK=", (NOW - 4000) * 1000, True)
    old = cloud_inbound(uid=u1, ts=NOW - 3000)
    old["entry"][0]["changes"][0]["value"]["messages"][0]["identity"] = ident
    wg.webhook_ok(old)
    opened(wg, u1)
    if wa_record == "same_hash_acknowledged":
        # the wa_id has a record of its own already, holding the same hash acknowledged
        wg.webhook_ok(body(messages=[inbound_text_msg(w, ts=NOW - 2900, identity=ident)]))
        opened(wg, w)
    wg.webhook_ok(cloud({"messages": [{"from_user_id": u1, "id": new_msg_id("wamid."), "timestamp": str(NOW - 60),
                                       "type": "system", "system": {"type": "user_changed_user_id", "body": "x",
                                                                    "user_id": u2, "previous_user_id": u1}}]}))
    closed(wg, u2)
    wg.webhook_ok(cloud_inbound(w, uid=u2, ts=NOW - 30))                 # the new id seen with its wa_id
    closed(wg, w)
    # a message from the wa_id carrying the old flag: no acknowledgement
    wg.webhook_ok(body(messages=[inbound_text_msg(w, ts=NOW - 20, identity=ident)]))
    for who in (w, "+" + w, u2):
        assert closed(wg, who)["identity"]["hash"] == "ARK="
    assert wg.ack_now(w).status_code == 202                                # an operator does
    wait_for(lambda: gate(wg, u2)["allowed"], 5, "acknowledged again")
@pytest.mark.parametrize("first,second", [("AAAtie1=", "zzztie2="), ("zzztie2=", "AAAtie1=")])
def test_two_hashes_in_the_same_second_close_the_gate_whichever_comes_first(procs, first, second):
    """Cloud times are whole seconds: a user whose key changed within the second of their last
    message sends two hashes of one time. Which one they hold cannot be told: the gate closes
    until someone acknowledges, in either arrival order (a lexical tie-break alone let the
    second hash be ignored as late, the gate open on the first)."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud", "auth": "none"}, **MANUAL})
    for w, uid in [("5511987654321", None), (None, "BR.77812300045")]:
        who = w or uid
        ts = NOW - 10
        wg.webhook_ok(cloud_inbound(w=w, uid=uid, key_hash=first + who[-3:], ts=ts))
        opened(wg, who)                                    # first_seen = trust
        wg.webhook_ok(cloud_inbound(w=w, uid=uid, key_hash=second + who[-3:], ts=ts))
        d = closed(wg, who)
        hist = [e["hash"] for e in wg.identity(who)["history"]]
        assert second + who[-3:] in hist, hist
        # The same delivery again changes nothing; an acknowledgement opens it.
        r2 = wg.post("/v1/identities/%s/ack" % quote(who, safe=""), token=ADMIN_TOKEN, json={"reason": "verified"})
        assert r2.status_code in (200, 202), r2.text
        wait_for(lambda: gate(wg, who)["allowed"], timeout=5, what="acknowledged")
        assert d["identity"]["hash"] in (first + who[-3:], second + who[-3:])


def test_admin_routes_name_a_user_as_the_gate_does(procs):
    """Issue "One owner for every rule", item 3: an operator's name for a user (wa_id, +number,
    a dialled number with its contact-check mapping, bare digits, a linked user id) picks the
    record the gate decides for; acknowledging by any of them opens the gate for all. (The
    admin routes once read a dialled number as its digits and a user id as its own record.)"""
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = "5215512345678"                                  # Mexico: wa_id differs from the dialled number
    uid = "MX.8812093"
    wg.webhook_ok(contacts_callback(contact_result("+52 55 1234 5678", "valid", w)))
    wg.webhook_ok(cloud_inbound(w=w, uid=uid, key_hash="MXA=", ts=NOW - 7200))   # links uid to w
    sim.set_identity(w, "MXB=", created_timestamp=(NOW - 60) * 1000, acknowledged=False)
    wg.webhook_ok(identity_change(w, "MXB=", NOW - 60))
    forms = [w, "+" + w, "+52 55 1234 5678", "525512345678", uid]
    for form in forms:
        assert closed(wg, form)["wa_id"] == w, form
        got = wg.admin_get("/v1/identities/%s" % quote(form, safe=""), token=ADMIN_TOKEN)
        assert got.status_code == 200 and got.json()["wa_id"] == w, (form, got.status_code, got.text)
    res = wg.post("/v1/identities/%s/ack" % quote("+52 55 1234 5678", safe=""), token=ADMIN_TOKEN,
                  json={"reason": "called the customer"})
    assert res.status_code == 202 and res.json()["wa_id"] == w, res.text
    wait_for(lambda: all(gate(wg, f)["allowed"] for f in forms), timeout=10, what="open for every form")
    audit = wg.admin_get("/v1/audit?wa_id=%s" % quote(uid, safe=""), token=ADMIN_TOKEN).json()["entries"]
    asked = [e for e in audit if e["result"] == "requested"]
    assert asked and all(e["wa_id"] == w for e in audit) and asked[0]["reason"] == "called the customer", audit


def test_the_record_shows_what_the_gate_decides_by(procs):
    """GET /v1/identities/{id} (the console's and waguardctl's user page) shows the blocks and
    windows of each business number the gate decides by, and no acknowledgement of a hash
    that is no longer the newest."""
    r, sim = procs.redis(), procs.sim(auth="none")
    wg = procs.daemon(r, sim, overrides={"upstream": {"api": "cloud", "auth": "none", "phone_number_id": "PN1,PN2",
                                                      "blocklist_sync_s": "1"}, **MANUAL})
    w = world_wa_id("NG")
    wg.webhook_ok(cloud_inbound(w=w, key_hash="NGA=", ts=NOW - 60))
    sim.set_blocked(w, True, pnid="PN2")
    wait_for(lambda: "blocked" in gate(wg, w, phone_number_id="PN2")["reasons"], timeout=10)
    assert "blocked" not in gate(wg, w, phone_number_id="PN1")["reasons"]
    rec = wg.identity(w)
    assert rec["blocked"] is True and rec["blocked_by_number"] == {"PN2": True}, rec
    assert set(rec["last_inbound_by_number"]) == {"PN1"} and rec["last_inbound"], rec
    assert rec["identity"]["acknowledged_by"] == "first_seen", rec
    wg.webhook_ok(cloud_inbound(w=w, key_hash="NGB=", ts=NOW - 30))
    rec = wg.identity(w)
    assert rec["identity"]["state"] == "pending" and rec["identity"].get("acknowledged_by") is None, rec


@pytest.mark.parametrize("mid", ["gBGGFlA5FpafAgkOuJbRqPlain01", "wamid.HBgL/MTY+NTA=", 'id"with\\quotes/and/slashes'])
def test_an_identity_change_delivered_again_is_a_duplicate_whatever_its_id(waguard, mid):
    """The identity history is searched by message id without decoding every entry, unless
    the id holds a character JSON escapes ('/', '"', '\\'): each kind is still recognised
    when the WABA client delivers the same notification again, after others."""
    w = world_wa_id("IN")
    first = body(messages=[identity_change_msg(w, "DUP1=", NOW - 100, msg_id=mid)])
    assert waguard.webhook_ok(first)["duplicates"] == 0
    for i in range(3):
        waguard.webhook_ok(body(messages=[identity_change_msg(w, "DUPX%d=" % i, NOW - 90 + i)]))
    again = waguard.webhook_ok(first)
    assert again["duplicates"] == 1, again
    assert waguard.webhook_ok(body(messages=[identity_change_msg(w, "DUP1=", NOW - 100, msg_id=mid + "x")]))["duplicates"] == 0


def test_the_history_and_trail_keep_the_newest_50_and_are_trimmed_in_steps(procs):
    """A user's identity history (and the trail of acknowledgements) is read as its newest
    50 entries; the list is trimmed back to 50 once 64 are held (docs/data-model.md), so
    what a reader sees never changes and the list never grows past 64."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    c = r.client()
    w = world_wa_id("NG")
    hashes = ["NGH%03d=" % i for i in range(80)]
    lengths = []
    for i, h in enumerate(hashes):
        wg.webhook_ok(identity_change(w, h, NOW - 90000 + i * 60))
        lengths.append(c.llen(wg.user_key(w) + ":history"))
    assert max(lengths) == 63 and min(lengths[60:]) == 50, lengths
    hist = [e["hash"] for e in wg.identity(w)["history"]]
    assert hist == hashes[::-1][:50], hist
    closed(wg, w)
    assert wg.identity(w)["identity"]["hash"] == hashes[-1]
    trail = []
    for _ in range(70):                                     # the trail: an operator's requests
        assert wg.ack_now(w).status_code in (202, 409)
        trail.append(c.llen(wg.user_key(w) + ":acks"))
    assert max(trail) == 63 and trail[-1] < 64 and 50 <= min(trail[63:]), trail
    assert len(wg.identity(w)["acks"]) == 50
