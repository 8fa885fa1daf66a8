"""The send decision: GET /v1/gate/{wa_id}, POST /v1/gate; session window, contacts, phone
normalisation, number changes."""
from urllib.parse import quote

import pytest

from daemon import API_TOKEN
from helpers import (assert_decision, assert_error_body, check_gate_response, contact_result,
                     contacts_callback, identity_change, inbound_text, metric_value, new_wa_id,
                     now_s, number_changed)

T0 = 1602535238


def ok(r):
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def pretty(w):
    """16315551234 → '+1 (631) 555-1234'."""
    assert len(w) == 11 and w[0] == "1"
    return "+1 (%s) %s-%s" % (w[1:4], w[4:7], w[7:])


# ----------------------------------------------------------------------------- session window

def test_no_inbound_text_outside_window_template_allowed(waguard):
    w = new_wa_id()
    r = waguard.gate(w, type="text")
    assert r.status_code == 423, r.text
    d = check_gate_response(r, w)
    assert d == {"wa_id": w, "allowed": False, "reasons": ["outside_session_window"], "identity": None}
    r = waguard.gate(w, type="template")
    assert r.status_code == 200, r.text
    d = check_gate_response(r, w)
    assert d == {"wa_id": w, "allowed": True, "reasons": [], "identity": None}


@pytest.mark.parametrize("mtype", ["text", "image", "interactive"])
def test_non_template_types_need_window(waguard, mtype):
    w = new_wa_id()
    d = check_gate_response(waguard.gate(w, type=mtype), w)
    assert d["reasons"] == ["outside_session_window"], d


def test_inbound_message_opens_window(waguard):
    w = new_wa_id()
    ok(waguard.webhook(inbound_text(w)))
    r = waguard.gate(w, type="text")
    assert r.status_code == 200, r.text
    assert check_gate_response(r, w) == {"wa_id": w, "allowed": True, "reasons": [], "identity": None}


def test_inbound_23h_ago_still_in_window(waguard):
    w = new_wa_id()
    ok(waguard.webhook(inbound_text(w, ts=now_s() - 23 * 3600)))
    assert waguard.gate(w, type="text").status_code == 200


def test_inbound_25h_ago_outside_window(waguard):
    """A message delivered late (the WABA client retries for about a day) opens no window:
    the 24 h run from the user's message."""
    w = new_wa_id()
    ok(waguard.webhook(inbound_text(w, ts=now_s() - 25 * 3600)))
    d = check_gate_response(waguard.gate(w, type="text"), w)
    assert d["reasons"] == ["outside_session_window"], d


def test_window_and_identity_reasons_together(waguard):
    w = new_wa_id()
    ok(waguard.webhook(identity_change(w, "BOTH=", T0)))
    d = check_gate_response(waguard.gate(w, type="text"), w)
    assert sorted(d["reasons"]) == ["identity_unacknowledged", "outside_session_window"], d
    d = check_gate_response(waguard.gate(w, type="template"), w)
    assert d["reasons"] == ["identity_unacknowledged"], d


def test_session_window_off(waguard_factory):
    wg = waguard_factory({"gate": {"session_window": "off"}})
    w = new_wa_id()
    r = wg.gate(w, type="text")
    assert r.status_code == 200, r.text
    assert check_gate_response(r, w)["reasons"] == []
    ok(wg.webhook(identity_change(w, "OFF=", T0)))
    d = check_gate_response(wg.gate(w, type="text"), w)
    assert d["reasons"] == ["identity_unacknowledged"], d


def test_decision_metrics(waguard):
    w = new_wa_id()
    m = waguard.metrics
    s0 = m()
    waguard.gate(w, type="text")
    waguard.gate(w, type="template")
    s1 = m()
    assert metric_value(s1, "waguard_decisions_total", outcome="denied") == \
        metric_value(s0, "waguard_decisions_total", outcome="denied") + 1
    assert metric_value(s1, "waguard_decisions_total", outcome="allowed") == \
        metric_value(s0, "waguard_decisions_total", outcome="allowed") + 1
    assert metric_value(s1, "waguard_decision_reasons_total", reason="outside_session_window") == \
        metric_value(s0, "waguard_decision_reasons_total", reason="outside_session_window") + 1


# ----------------------------------------------------------------------------- contacts

@pytest.fixture
def strict_contacts(waguard_factory):
    return waguard_factory({"gate": {"require_valid_contact": "true"}})


def test_contact_invalid_then_valid(strict_contacts, redis_client):
    wg = strict_contacts
    w = new_wa_id()
    # an invalid answer has no wa_id: only the input as the business gave it
    ok(wg.webhook(contacts_callback(contact_result(pretty(w), "invalid"))))
    r = wg.gate(w, type="template")
    assert r.status_code == 423, r.text
    d = check_gate_response(r, w)
    assert d["reasons"] == ["contact_invalid"], d
    ok(wg.webhook(contacts_callback(contact_result("+" + w, "valid", w))))
    r = wg.gate(w, type="template")
    assert r.status_code == 200, r.text
    assert check_gate_response(r, w)["reasons"] == []


def test_contact_invalid_with_wa_id(strict_contacts):
    wg = strict_contacts
    w = new_wa_id()
    ok(wg.webhook(contacts_callback(contact_result("+" + w, "invalid", w))))
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["reasons"] == ["contact_invalid"], d


def test_contact_invalid_ignored_when_not_required(waguard):
    w = new_wa_id()
    ok(waguard.webhook(contacts_callback(contact_result("+" + w, "invalid"))))
    r = waguard.gate(w, type="template")
    assert r.status_code == 200, r.text
    assert "contact_invalid" not in check_gate_response(r, w)["reasons"]


def test_contact_processing_or_failed_does_not_invalidate(strict_contacts):
    wg = strict_contacts
    w = new_wa_id()
    ok(wg.webhook(contacts_callback(contact_result("+" + w, "valid", w))))
    ok(wg.webhook(contacts_callback(contact_result("+" + w, "processing", w))))
    assert wg.gate(w, type="template").status_code == 200


# ----------------------------------------------------------------------------- normalisation

def test_route_normalises_formatted_number(waguard):
    w = new_wa_id()
    ok(waguard.webhook(inbound_text(w)))
    for form in (pretty(w), "+" + w, "+1 %s %s %s" % (w[1:4], w[4:7], w[7:]),
                 "+1-%s-%s-%s" % (w[1:4], w[4:7], w[7:]), w[1:], w):
        r = waguard.gate(form, type="text")
        assert r.status_code == 200, (form, r.status_code, r.text)
        assert check_gate_response(r)["wa_id"] == w, (form, r.text)


def test_route_plus_sign_encoded_and_identity(waguard):
    w = new_wa_id()
    ok(waguard.webhook(identity_change(w, "ENC=", T0)))
    r = waguard.gate(quote(pretty(w), safe=""), type="template", raw_path=True)
    d = check_gate_response(r, w)
    assert d["identity"]["hash"] == "ENC=", d


def test_home_country_code_other(waguard_factory):
    wg = waguard_factory({"gate": {"home_country_code": "91"}})
    # Bare digits nobody is known by: the answer names them as given (a wa_id) ...
    d = check_gate_response(wg.gate("6315551002", type="template"))
    assert d["wa_id"] == "6315551002", d
    # ... but the same digits dialled in India name a known Indian user, who is refused.
    ok(wg.webhook(identity_change("916315551002", "IN1=", T0)))
    d = check_gate_response(wg.gate("6315551002", type="template"))
    assert d["wa_id"] == "916315551002" and d["reasons"] == ["identity_unacknowledged"], d
    d = check_gate_response(wg.gate("+1-631-555-1002", type="template"))
    assert d["wa_id"] == "16315551002", d
    d = check_gate_response(wg.gate("+54 9 11 5612-1008", type="template"))
    assert d["wa_id"] == "5491156121008", d


def test_contact_callback_input_normalised(strict_contacts):
    wg = strict_contacts
    w = new_wa_id()
    ok(wg.webhook(contacts_callback(contact_result(w[1:], "invalid"))))   # home country code 1
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["reasons"] == ["contact_invalid"], d


def test_business_scoped_user_id(waguard):
    bsuid = "US.13491208655302741918"
    r = waguard.gate(bsuid, type="template")
    d = check_gate_response(r, bsuid)
    assert d["allowed"] is True


# ----------------------------------------------------------------------------- number change

def test_number_changed_old_number_denied(waguard):
    old, new = new_wa_id(), new_wa_id()
    ok(waguard.webhook(number_changed(old, new)))
    r = waguard.gate(old, type="template")
    assert r.status_code == 423, r.text
    assert check_gate_response(r, old)["reasons"] == ["number_changed"]
    # the formatted old number is the same user
    assert "number_changed" in check_gate_response(waguard.gate(pretty(old), type="template"))["reasons"]


# ----------------------------------------------------------------------------- batch

def test_batch_in_order(waguard):
    a, b, c = new_wa_id(), new_wa_id(), new_wa_id()
    ok(waguard.webhook(identity_change(a, "BATCH=", T0)))
    ok(waguard.webhook(inbound_text(a)))
    ok(waguard.webhook(inbound_text(b)))
    r = waguard.gate_batch([a, b, c, pretty(b), "+" + c], type="text")
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [d["wa_id"] for d in res] == [a, b, c, b, c], res
    for d in res:
        assert_decision(d)
    assert res[0]["reasons"] == ["identity_unacknowledged"]
    assert res[0]["identity"] == {"hash": "BATCH=", "created_timestamp": T0, "acknowledged": False}
    assert res[1]["allowed"] is True and res[1]["reasons"] == [] and res[1]["identity"] is None
    assert res[2]["reasons"] == ["outside_session_window"]
    assert res[3] == res[1] and res[4] == res[2]


def test_batch_template_and_single_agree(waguard):
    ids = [new_wa_id() for _ in range(4)]
    ok(waguard.webhook(identity_change(ids[1], "AGREE=", T0)))
    r = waguard.gate_batch(ids, type="template")
    assert r.status_code == 200
    res = r.json()["results"]
    assert len(res) == 4
    for w, d in zip(ids, res):
        assert d == check_gate_response(waguard.gate(w, type="template"), w)


def test_batch_empty_list(waguard):
    r = waguard.gate_batch([], type="text")
    assert r.status_code == 200 and r.json() == {"results": []}, r.text


@pytest.mark.parametrize("payload", [b"[]", b"{", b'{"type":"text","wa_ids":"16315551234"}',
                                     b'{"type":"text"}', b""],
                         ids=["array", "broken", "wa_ids-string", "no-wa_ids", "empty"])
def test_batch_bad_body_400(waguard, payload):
    r = waguard.post("/v1/gate", token=API_TOKEN, data=payload,
                     headers={"Content-Type": "application/json"})
    assert_error_body(r, 400)
