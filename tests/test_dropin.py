"""A complete drop-in for the WABA client's API: everything else under /v1 forwarded with
waguard's credentials (and never a send), the contact-check budget, the blocklist read back
from the WABA client, a 200 carrying errors[] never recorded, the legacy hsm type as a
template, and the 413 in JSON."""
import socket
import time

from daemon import API_TOKEN
from helpers import identity_change, inbound_text, wait_for, world_dialled, world_wa_id


def test_unknown_v1_paths_are_forwarded_with_waguards_credentials(procs):
    _, sim, wg = procs.stack()
    r = wg.request("GET", "/v1/health", token=API_TOKEN)
    calls = sim.calls_matching(method="GET", path="/v1/health")
    assert len(calls) == 1 and r.status_code == calls[0]["status"], (r.status_code, r.text, calls)
    auth = calls[0]["headers"].get("Authorization", "")
    assert auth.startswith("Bearer ") and API_TOKEN not in auth, calls[0]["headers"]   # the login token
    # a media upload keeps its Content-Type; the caller's Authorization never goes through
    r = wg.request("POST", "/v1/media", token=API_TOKEN, data=b"\x89PNG....",
                   headers={"Content-Type": "image/png"})
    up = sim.calls_matching(method="POST", path="/v1/media")
    assert up and up[0]["headers"].get("Content-Type") == "image/png", up
    # callers need a token like every other route
    assert wg.request("GET", "/v1/health", token=None).status_code == 401


def test_no_send_is_forwarded_ungated_by_another_path(procs):
    _, sim, wg = procs.stack(overrides={"identity": {"ack": "manual"}})
    w = world_wa_id("GB")
    wg.webhook_ok(identity_change(w, "GBX=", int(time.time())))
    body = {"to": w, "type": "template", "template": {"name": "x"}}
    for path in ("/v1/messages/", "/v1//messages", "/v1/Messages", "/v1/%6dessages", "/v1/./messages",
                 "/v21.0/PNID/messages/", "/v21.0/PNID/MESSAGES", "/v1/messages/x/../../messages",
                 "/v21.0/PNID/marketing_messages", "/v1/messages/gBEG1/messages"):
        r = wg.request("POST", path, token=API_TOKEN, json=body)
        assert r.status_code in (400, 404, 423), (path, r.status_code, r.text)
    assert not [c for c in sim.calls if "essages" in c["path"].lower()], sim.calls
    # the On-Premises read receipt, PUT /v1/messages/{id}, sends nothing and is forwarded
    r = wg.request("PUT", "/v1/messages/gBEGkYiEB1VXAglK1ZEqA1YKPrU", token=API_TOKEN, json={"status": "read"})
    assert sim.calls_matching(method="PUT", path="/v1/messages/gBEGkYiEB1VXAglK1ZEqA1YKPrU"), r.text


def test_forward_unknown_off_answers_404_in_the_waba_envelope(procs):
    _, sim, wg = procs.stack(overrides={"proxy": {"forward_unknown": "false"}})
    r = wg.request("GET", "/v1/health", token=API_TOKEN)
    assert r.status_code == 404 and "forward_unknown" in r.json()["errors"][0]["details"], r.text
    assert not sim.calls_matching(path="/v1/health")


def test_contact_check_budget_refuses_then_recovers(procs):
    _, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "3", "check_window_s": "2"}})
    numbers = [world_dialled(c, world_wa_id(c)) for c in ("GB", "IN", "BR")]
    r = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": numbers})
    assert r.status_code == 200, r.text
    again = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": numbers[:1]})
    assert again.status_code == 200, again.text              # the same number again costs nothing
    extra = world_dialled("NG", world_wa_id("NG"))
    r = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": [extra]})
    assert r.status_code == 429, r.text
    e = r.json()["errors"][0]
    assert "never sent to" in e["details"] and "frees up" in e["details"], e
    assert 1 <= int(r.headers["Retry-After"]) <= 3, r.headers
    assert wg.metric("waguard_contact_checks_unsent") == 3
    assert wg.metric("waguard_contact_check_budget") == 3
    assert len(sim.calls_matching(method="POST", path="/v1/contacts")) == 2
    # The window rolls: the check goes through.
    wait_for(lambda: wg.post("/v1/contacts", token=API_TOKEN,
                             json={"blocking": "wait", "contacts": [extra]}).status_code == 200,
             5, what="the budget to free up")
    assert wg.metric("waguard_contact_checks_refused_total") >= 1


def test_a_send_frees_its_number_from_the_budget(procs):
    _, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "1", "check_window_s": "3600"}})
    w = world_wa_id("DE")
    assert wg.post("/v1/contacts", token=API_TOKEN,
                   json={"blocking": "wait", "contacts": ["+" + w]}).status_code == 200
    other = "+" + world_wa_id("DE")
    assert wg.post("/v1/contacts", token=API_TOKEN, json={"contacts": [other]}).status_code == 429
    wg.webhook_ok(inbound_text(w))
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "text", "text": {"body": "hi"}})
    assert r.status_code < 300, r.text
    wait_for(lambda: wg.post("/v1/contacts", token=API_TOKEN, json={"contacts": [other]}).status_code == 200,
             5, what="the sent number no longer counted")


def test_blocks_made_at_the_waba_client_reach_the_gate_and_a_newer_local_block_survives(procs):
    _, sim, wg = procs.stack(overrides={"upstream": {"blocklist_sync_s": "1"}})
    elsewhere, mine = world_wa_id("PH"), world_wa_id("PH")
    for w in (elsewhere, mine):
        wg.webhook_ok(inbound_text(w))
    sim.set_blocked(elsewhere, True)
    wait_for(lambda: "blocked" in wg.gate(elsewhere, type="template").json()["reasons"], 5,
             what="the block made elsewhere read back")
    r = wg.post("/v1/contacts/%s/block" % mine, token=API_TOKEN, json={})
    assert r.status_code == 200, r.text
    sim.set_blocked(elsewhere, False)
    wait_for(lambda: wg.gate(elsewhere, type="template").status_code == 200, 5, what="unblocked elsewhere")
    assert "blocked" in wg.gate(mine, type="template").json()["reasons"]


def test_a_200_that_carries_errors_is_not_recorded_as_a_block(procs):
    _, sim, wg = procs.stack(overrides={"upstream": {"blocklist_sync_s": "0"}})
    w = world_wa_id("ID")
    wg.webhook_ok(inbound_text(w))
    sim.fail(count=1, status=200, path_prefix="/v1/contacts/%s/block" % w,
             body={"errors": [{"code": 2048, "title": "Not engaged contact", "details": "no"}]})
    r = wg.post("/v1/contacts/%s/block" % w, token=API_TOKEN, json={})
    assert r.status_code == 200 and r.json()["errors"], r.text
    assert wg.gate(w, type="template").status_code == 200


def test_hsm_is_a_template(procs):
    _, sim, wg = procs.stack()
    w = world_wa_id("BR")                                 # never wrote: outside the 24-hour window
    assert wg.gate(w, type="text").json()["reasons"] == ["outside_session_window"]
    assert wg.gate(w, type="hsm").status_code == 200
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "hsm",
                                                      "hsm": {"namespace": "n", "element_name": "hello"}})
    assert r.status_code < 300, r.text


def test_413_is_json_and_comes_before_the_body(waguard):
    s = socket.create_connection(("127.0.0.1", waguard.port), timeout=5)
    s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 999999999\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data
    assert b"application/json" in head and b'"errors"' in body, data
