"""Cloud API: the entry[].changes[].value envelope, identity_key_hash observations,
first_seen, and the gated Cloud send that pins the acknowledged hash."""
import json
import time

import pytest
import requests

from daemon import ADMIN_TOKEN, API_TOKEN
from helpers import new_wa_id, wait_for
from waba_sim import WabaSim


def cloud_body(w, key_hash, mid, text="hi"):
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": w, "identity_key_hash": key_hash}],
            "messages": [{"from": w, "id": mid, "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}}]}}]}]}


@pytest.fixture
def sim():
    s = WabaSim(auth="bearer", bearer_token="cloudtoken-123456").start()
    yield s
    s.stop()


def start(waguard_factory, sim, **identity):
    return waguard_factory(overrides={
        "upstream": {"api": "cloud", "url": sim.url, "auth": "bearer", "token_file": "cloud_token"},
        "identity": identity}, files={"cloud_token": "cloudtoken-123456\n"})


def decision(wg, w, type_="text"):
    r = wg.gate(w, type=type_)
    return r.status_code, r.json()


def test_first_hash_trusted_then_a_new_one_is_recorded_and_pinned(waguard_factory, sim):
    wg = start(waguard_factory, sim)
    w = new_wa_id()
    assert wg.webhook(cloud_body(w, "KEY1=", "wamid.A1")).status_code == 200
    code, d = decision(wg, w)
    assert code == 200, d                       # first_seen = trust, and the user just wrote
    assert d["identity"]["hash"] == "KEY1=" and d["identity"]["acknowledged"] is True

    # A new key hash: recorded; with api = cloud there is no acknowledgement call,
    # so the worker records it as acknowledged itself.
    assert wg.webhook(cloud_body(w, "KEY2=", "wamid.A2")).status_code == 200
    wait_for(lambda: decision(wg, w)[1]["identity"]["acknowledged"] is True
             and decision(wg, w)[1]["identity"]["hash"] == "KEY2=", 5, what="KEY2 recorded")
    assert not [c for c in sim.calls if c["path"].endswith("/identity")]

    # The gated Cloud send carries the acknowledged hash to Meta.
    r = requests.post(wg.url + "/v21.0/PNID/messages", timeout=5,
                      headers={"Authorization": "Bearer " + API_TOKEN},
                      data=json.dumps({"messaging_product": "whatsapp", "to": w, "type": "text",
                                       "text": {"body": "hello"}}))
    assert r.status_code < 300, r.text
    sent = sim.calls_matching(method="POST", path="/v21.0/PNID/messages")
    assert sent and sent[-1]["body"]["recipient_identity_key_hash"] == "KEY2="
    assert sent[-1]["headers"].get("Authorization") == "Bearer cloudtoken-123456"


def test_first_seen_hold_with_manual_ack_keeps_the_gate_closed(waguard_factory, sim):
    wg = start(waguard_factory, sim, first_seen="hold", ack="manual")
    w = new_wa_id()
    assert wg.webhook(cloud_body(w, "HOLD=", "wamid.H1")).status_code == 200
    code, d = decision(wg, w, "template")
    assert code == 423 and d["reasons"] == ["identity_unacknowledged"], d
    # A denied Cloud send is never forwarded.
    r = requests.post(wg.url + "/messages", timeout=5, headers={"Authorization": "Bearer " + API_TOKEN},
                      data=json.dumps({"messaging_product": "whatsapp", "to": w, "type": "template",
                                       "template": {"name": "hello"}}))
    err = r.json()["error"]                                 # Graph's envelope on a Cloud route
    assert r.status_code == 423 and err["code"] == 423 and err["error_subcode"] == 1, r.text
    assert err["error_data"]["details"] == "identity_unacknowledged" and err["fbtrace_id"], r.text
    assert not sim.calls_matching(method="POST", path="/messages")
    # The operator verified the person: acknowledge by hand.
    r = requests.post(wg.url + "/v1/identities/%s/ack" % w, timeout=5,
                      headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    assert r.status_code == 202, r.text
    wait_for(lambda: decision(wg, w, "template")[0] == 200, 5, what="gate open after the operator's ack")
