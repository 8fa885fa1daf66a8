"""Who a recipient is (issue "The gate must never fail open"): users from many countries,
dialled numbers, contact-check mappings, Cloud user ids linked to wa_ids, ambiguous
inputs decided by the strictest known user; identity times from the future; strict
send bodies.  Every case goes through the real binary, Redis and the WABA simulator."""
import json
import time

import pytest
import requests

from daemon import API_TOKEN
from helpers import (WORLD, contact_result, contacts_callback, identity_change, identity_obj,
                     inbound_text, inbound_text_msg, body, new_msg_id, new_wa_id, number_changed,
                     world_dialled, world_wa_id)

MANUAL = {"identity": {"ack": "manual"}}
T0 = int(time.time()) - 3600


def gate(wg, who, type_="template"):
    r = wg.gate(requests.utils.quote(who, safe=""), type=type_, raw_path=True)
    assert r.status_code in (200, 423), r.text
    d = r.json()
    assert (r.status_code == 200) == d["allowed"], d
    return d


def send(wg, payload, path="/v1/messages"):
    return wg.post(path, token=API_TOKEN, data=json.dumps(payload) if isinstance(payload, dict) else payload,
                   headers={"Content-Type": "application/json"})


# ----------------------------------------------------------------------------- every country

@pytest.mark.parametrize("country", sorted(WORLD))
def test_identity_change_refuses_every_form_of_a_user_from_any_country(procs, country):
    """home_country_code = 1: a British, Indian, Nigerian … user is looked up under the wa_id
    WhatsApp gave, whatever form the caller uses, and nothing is forwarded while the
    change is unacknowledged."""
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id(country)
    wg.webhook_ok(inbound_text(w))
    wg.webhook_ok(identity_change(w, "NEW%s=" % country, T0 + 60))
    forms = [w, "+" + w, "00" + w]
    if country != "MX":
        forms.append(world_dialled(country, w))
    for form in forms:
        d = gate(wg, form)
        assert d["wa_id"] == w and d["reasons"] == ["identity_unacknowledged"], (form, d)
    for to in (w, "+" + w):
        r = send(wg, {"to": to, "type": "text", "text": {"body": "hi"}})
        assert r.status_code == 423, (to, r.text)
    assert not sim.calls_matching(method="POST", path="/v1/messages")


def test_user_from_another_country_who_wrote_can_be_answered(procs):
    """An Argentinian user who has just written is inside the 24-hour window, asked by wa_id."""
    _, sim, wg = procs.stack()
    w = world_wa_id("AR")
    wg.webhook_ok(inbound_text(w))
    d = gate(wg, w, "text")
    assert d["allowed"] is True and d["wa_id"] == w, d
    r = send(wg, {"to": w, "type": "text", "text": {"body": "hola"}})
    assert r.status_code < 300, r.text
    assert [c["body"]["to"] for c in sim.calls_matching(method="POST", path="/v1/messages")] == [w]


# ----------------------------------------------------------------------------- contact-check mapping

def test_contact_check_mapping_names_the_mapped_wa_id(procs):
    """+52 55 1234 5678 was answered with wa_id 5215512345678: the gate asked with the phone
    number decides for that wa_id, which has an unacknowledged change."""
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("MX")
    dialled = world_dialled("MX", w)
    assert dialled.replace(" ", "").lstrip("+") != w
    wg.webhook_ok(contacts_callback(contact_result(dialled, "valid", w)))
    wg.webhook_ok(identity_change(w, "MXNEW=", T0))
    d = gate(wg, dialled)
    assert d["wa_id"] == w and d["reasons"] == ["identity_unacknowledged"], d
    r = send(wg, {"to": dialled, "type": "template", "template": {"name": "hello"}})
    assert r.status_code == 423 and r.json()["decision"]["wa_id"] == w, r.text
    assert not sim.calls_matching(method="POST", path="/v1/messages")


def test_contact_check_through_the_proxy_maps_too(procs):
    """The synchronous answer of POST /v1/contacts records the same mapping."""
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("MX")
    dialled = world_dialled("MX", w)
    sim.configure(wa_id_map={"".join(c for c in dialled if c.isdigit()): w})
    r = wg.post("/v1/contacts", token=API_TOKEN,
                json={"blocking": "wait", "contacts": [dialled], "force_check": True})
    assert r.status_code == 200 and r.json()["contacts"][0]["wa_id"] == w, r.text
    wg.webhook_ok(identity_change(w, "MXP=", T0))
    assert gate(wg, dialled)["reasons"] == ["identity_unacknowledged"]


# ----------------------------------------------------------------------------- ambiguity

def test_bare_number_that_names_two_known_users_is_decided_by_the_strictest(procs):
    """6315551234 is a Philippine wa_id and a US number dialled without its country code
    (home_country_code = 1).  With both known, the gate refuses if either must be refused,
    and says whom it considered."""
    _, sim, wg = procs.stack(overrides=MANUAL)
    ph, us = "6315552468", "16315552468"
    wg.webhook_ok(inbound_text(ph))
    wg.webhook_ok(inbound_text(us))
    d = gate(wg, "6315552468", "text")
    assert d["allowed"] is True and sorted(d["considered"]) == sorted([ph, us]), d
    wg.webhook_ok(identity_change(us, "USCHG=", T0))
    d = gate(wg, "6315552468", "text")
    assert d["allowed"] is False and d["wa_id"] == us and d["reasons"] == ["identity_unacknowledged"], d
    assert sorted(d["considered"]) == sorted([ph, us]), d
    r = send(wg, {"to": "6315552468", "type": "text", "text": {"body": "?"}})
    assert r.status_code == 423, r.text
    # Each user named unambiguously is decided for itself.
    assert gate(wg, "+63 1555 2468", "text")["allowed"] is True
    assert gate(wg, "+1 631 555 2468", "text")["allowed"] is False
    assert not sim.calls_matching(method="POST", path="/v1/messages")


def test_batch_decisions_resolve_each_recipient(procs):
    _, _, wg = procs.stack(overrides=MANUAL)
    gb, inn, ng = world_wa_id("GB"), world_wa_id("IN"), world_wa_id("NG")
    for w in (gb, inn, ng):
        wg.webhook_ok(inbound_text(w))
    wg.webhook_ok(identity_change(inn, "INX=", T0))
    r = wg.gate_batch([gb, world_dialled("IN", inn), "+" + ng], type="text")
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["wa_id"] for x in res] == [gb, inn, ng], res
    assert [x["allowed"] for x in res] == [True, False, True], res


# ----------------------------------------------------------------------------- Cloud user ids

def cloud(value):
    value = dict(value, messaging_product="whatsapp",
                 metadata={"display_phone_number": "15550000000", "phone_number_id": "PNID"})
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}


def test_user_id_and_wa_id_seen_together_name_one_record(procs):
    r, _, wg = procs.stack(overrides={"identity": {"ack": "manual", "first_seen": "hold"},
                                      "upstream": {"api": "cloud"}})
    w = world_wa_id("BR")
    uid = "BR." + "7" * 120          # user ids run to 128 characters after the dot
    wg.webhook_ok(cloud({"contacts": [{"wa_id": w, "user_id": uid, "profile": {"name": "Bia"},
                                        "identity_key_hash": "K1="}],
                         "messages": [{"from": w, "from_user_id": uid, "id": new_msg_id("wamid."),
                                       "timestamp": str(int(time.time())), "type": "text",
                                       "text": {"body": "oi"}}]}))
    # Later only the user id: the same record, the same identity, no second one.
    wg.webhook_ok(cloud({"contacts": [{"user_id": uid, "identity_key_hash": "K2="}],
                         "messages": [{"from_user_id": uid, "id": new_msg_id("wamid."),
                                       "timestamp": str(int(time.time())), "type": "text",
                                       "text": {"body": "oi"}}]}))
    for who in (w, uid, "+" + w):
        d = gate(wg, who)
        assert d["wa_id"] == w and d["identity"]["hash"] == "K2=", (who, d)
    assert not r.client().exists(wg.user_key(uid))


def test_a_user_first_known_by_user_id_alone_is_merged_when_linked(procs):
    r, _, wg = procs.stack(overrides={"identity": {"ack": "manual", "first_seen": "hold"},
                                      "upstream": {"api": "cloud"}})
    w = world_wa_id("ID")
    uid = "ID.55510203040506070809"
    wg.webhook_ok(cloud({"contacts": [{"user_id": uid, "identity_key_hash": "U1="}],
                         "messages": [{"from_user_id": uid, "id": new_msg_id("wamid."),
                                       "timestamp": str(int(time.time())), "type": "text",
                                       "text": {"body": "halo"}}]}))
    d = gate(wg, uid, "text")
    assert d["wa_id"] == uid and d["reasons"] == ["identity_unacknowledged"], d
    wg.webhook_ok(cloud({"contacts": [{"wa_id": w, "user_id": uid, "profile": {"name": "Ani"}}]}))
    for who in (w, uid):
        d = gate(wg, who, "text")
        assert d["wa_id"] == w and d["reasons"] == ["identity_unacknowledged"], (who, d)
        assert d["identity"]["hash"] == "U1=", d
    assert not r.client().exists(wg.user_key(uid))


# ----------------------------------------------------------------------------- time

def test_identity_from_the_future_does_not_hide_a_later_change(procs):
    """An inbound message says its identity is acknowledged, created a year ahead (a skewed
    WABA host, or seconds taken for milliseconds): a real change that arrives after it
    still closes the gate."""
    _, _, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("DE")
    year_ahead_ms = (int(time.time()) + 365 * 86400) * 1000
    wg.webhook_ok(body(messages=[inbound_text_msg(w, identity=identity_obj("FUTURE=", year_ahead_ms, True))]))
    assert gate(wg, w)["allowed"] is True
    wg.webhook_ok(identity_change(w, "REAL=", int(time.time())))
    d = gate(wg, w)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash"] == "REAL=", d
    assert wg.metric("waguard_identity_future_total") >= 1


def test_created_timestamp_in_seconds_or_milliseconds_orders_the_same(procs):
    _, _, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("PH")
    now = int(time.time())
    wg.webhook_ok(body(messages=[inbound_text_msg(w, identity=identity_obj("NEWER=", (now - 10) * 1000))]))
    # an older identity given in seconds is older, not a thousand times newer
    wg.webhook_ok(body(messages=[inbound_text_msg(w, identity=identity_obj("OLDER=", now - 100))]))
    assert gate(wg, w)["identity"]["hash"] == "NEWER="


# ----------------------------------------------------------------------------- strict bodies

def test_send_with_two_to_keys_is_refused(procs):
    _, sim, wg = procs.stack()
    a, b = world_wa_id("GB"), world_wa_id("IN")
    wg.webhook_ok(inbound_text(a))
    raw = '{"to":"%s","type":"text","text":{"body":"x"},"to":"%s"}' % (a, b)
    r = send(wg, raw)
    assert r.status_code == 400 and "twice" in r.json()["errors"][0]["details"], r.text
    r = send(wg, '{"to":"%s","type":"text","text":{"body":"x","body":"y"}}' % a)
    assert r.status_code == 400, r.text
    # "recipient" is a user id, never a second phone number
    r = send(wg, {"to": a, "recipient": b, "type": "text", "text": {"body": "x"}}, "/v21.0/PNID/messages")
    assert r.status_code == 400 and "user id" in r.text, r.text
    assert not sim.calls_matching(method="POST", path="/v1/messages")
    assert not sim.calls_matching(method="POST", path="/v21.0/PNID/messages")


def test_only_an_exact_read_receipt_skips_the_gate(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("NG")
    wg.webhook_ok(identity_change(w, "NGX=", T0))
    # "status" with a non-string "to": not a read receipt, so it is gated (and refused)
    r = send(wg, {"status": "read", "message_id": "wamid.X", "to": 2348035550000}, "/v21.0/PNID/messages")
    assert r.status_code == 400, r.text
    r = send(wg, {"status": "read", "message_id": "wamid.X", "type": "text", "text": {"body": "sneaky"}},
             "/v21.0/PNID/messages")
    assert r.status_code == 400, r.text
    assert not sim.calls_matching(method="POST", path="/v21.0/PNID/messages")
    r = send(wg, {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"},
             "/v21.0/PNID/messages")
    fwd = sim.calls_matching(method="POST", path="/v21.0/PNID/messages")
    assert len(fwd) == 1 and r.status_code == fwd[0]["status"], (r.status_code, fwd)


def test_poison_error_code_is_a_dead_letter_not_a_503(procs):
    """{"code":1e400} is infinity to cJSON: the item is kept as a dead letter and the rest
    of the body (an identity change) is applied and answered 200."""
    _, _, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("GB")
    raw = ('{"errors":[{"code":1e400,"title":"x"}],"messages":[{"from":"%s","id":"%s","timestamp":"%d",'
           '"type":"system","system":{"customer":"%s","identity":"POISON=","type":"user_identity_changed"}}]}'
           % (w, new_msg_id(), T0, w))
    r = wg.webhook(raw)
    assert r.status_code == 200 and r.json()["dead_letters"] == 1, r.text
    assert gate(wg, w)["reasons"] == ["identity_unacknowledged"]


def test_hash_outside_its_alphabet_is_not_stored(procs):
    _, _, wg = procs.stack(overrides=MANUAL)
    w = world_wa_id("BR")
    r = wg.webhook(identity_change(w, "bad\u00e9\"hash", T0))
    assert r.status_code == 200 and r.json()["dead_letters"] == 1, r.text
    # not stored, and the change it announced closes the gate until the hash is known
    d = gate(wg, w)
    assert d["identity"]["hash"] == "" and d["identity"].get("hash_unknown") is True, d
    assert d["reasons"] == ["identity_unacknowledged"], d


def test_a_redelivered_message_of_a_user_id_linked_since_changes_nothing(procs):
    """first_seen = hold: a Cloud user known by user id alone brings a first hash the WABA
    client calls acknowledged (held); the user id is then linked to a wa_id; the same
    message delivered again must not acknowledge it (found by the promise test)."""
    _, _, wg = procs.stack(overrides={"identity": {"ack": "manual", "first_seen": "hold"},
                                      "upstream": {"api": "cloud"}})
    w, uid = world_wa_id("MX"), "MX.31913625358619336223"
    msg = {"from_user_id": uid, "id": new_msg_id("wamid."), "timestamp": str(int(time.time()) - 3600),
           "type": "text", "text": {"body": "hola"},
           "identity": {"hash": "HELD=", "created_timestamp": (int(time.time()) - 3600) * 1000,
                        "acknowledged": True}}
    wg.webhook_ok(cloud({"contacts": [{"user_id": uid}], "messages": [msg]}))
    assert gate(wg, uid)["reasons"] == ["identity_unacknowledged"]
    wg.webhook_ok(cloud({"contacts": [{"wa_id": w, "user_id": uid, "profile": {"name": "M"}}]}))
    res = wg.webhook_ok(cloud({"contacts": [{"user_id": uid}], "messages": [msg]}))
    assert res["duplicates"] >= 1, res
    for who in (w, uid):
        d = gate(wg, who)
        assert d["reasons"] == ["identity_unacknowledged"] and d["wa_id"] == w, (who, d)


# ----------------------------------------------------------------------------- the common case

def _fcalls(client):
    return client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0)


def test_a_single_decision_reads_plainly_and_agrees_with_the_function(procs):
    """GET /v1/gate reads a recipient with no user id and no contact mapping in one MULTI of
    plain reads (gate.c), not the gate function; POST /v1/gate always asks the function.
    Both must decide alike for every state and every way of naming a user, from every
    country: pending, acknowledged, blocked, moved, a record with only a name, a bare number
    naming two users, a mapping to the number itself (plain) and to another wa_id (the
    function)."""
    r, sim, wg = procs.stack(overrides=MANUAL)
    c = r.client()
    inputs = []
    for i, country in enumerate(WORLD):
        w = world_wa_id(country)
        wg.webhook_ok(inbound_text(w))
        if i % 3 == 0:
            wg.webhook_ok(identity_change(w, "P%d=" % i, T0))                 # pending
        elif i % 3 == 1:
            wg.webhook_ok(identity_change(w, "A%d=" % i, T0))
            c.hset(wg.user_key(w), mapping={"id_state": "acknowledged", "id_ack": "1"})
        inputs += [w, "+" + w, world_dialled(country, w)]
    blocked, moved, new = world_wa_id("DE"), world_wa_id("NG"), world_wa_id("NG")
    wg.webhook_ok(inbound_text(blocked))
    c.hset(wg.user_key(blocked), "blocked", "1")
    wg.webhook_ok(inbound_text(moved))
    wg.webhook_ok(number_changed(moved, new))
    named = world_wa_id("PH")
    c.hset(wg.user_key(named), "name", "only a name")
    ph, us = "6315553579", "16315553579"                  # a bare number naming two users
    wg.webhook_ok(inbound_text(ph))
    wg.webhook_ok(identity_change(us, "US=", T0))
    mx = world_wa_id("MX")                                 # a mapping to another wa_id
    mx_dialled = world_dialled("MX", mx)
    wg.webhook_ok(contacts_callback(contact_result(mx_dialled, "valid", mx)))
    wg.webhook_ok(identity_change(mx, "MX=", T0))
    gb = world_wa_id("GB")                                 # a mapping to the number itself
    wg.webhook_ok(contacts_callback(contact_result("+" + gb, "valid", gb)))
    wg.webhook_ok(inbound_text(gb))
    inputs += [blocked, moved, "+" + moved, named, ph, us, "+" + us, mx_dialled, mx, "+" + gb, gb,
               new_wa_id(), "+44 7700 900999"]
    for t in ("text", "template"):
        batch = wg.gate_batch(inputs, type=t)
        assert batch.status_code == 200, batch.text
        for x, b in zip(inputs, batch.json()["results"]):
            one = wg.gate(x, type=t)
            assert one.status_code == (200 if b["allowed"] else 423), (x, one.text, b)
            assert one.json() == b, (x, t)
    # the plain case asks no function; a mapping to someone else does
    before = _fcalls(c)
    for x in (inputs[0], inputs[1], inputs[2], ph, "+" + gb):
        wg.gate(x)
    assert _fcalls(c) == before
    assert gate(wg, mx_dialled)["wa_id"] == mx
    assert _fcalls(c) == before + 1
    # a decision about one record reads no EXISTS; a number naming two reads it for each
    exists = lambda: c.info("commandstats").get("cmdstat_exists", {}).get("calls", 0)
    e0 = exists()
    for x in (inputs[1], inputs[2], "+" + gb, "+" + us, "+" + moved):
        wg.gate(x)
    assert exists() == e0
    d = gate(wg, ph)
    assert exists() == e0 + 2 and len(d["considered"]) == 2, d
