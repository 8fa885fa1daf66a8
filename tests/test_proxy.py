"""The forwarded routes: gated sends, contacts, identity GET/PUT, block/unblock/report,
blocklist.  The WABA client's answer comes back as it is, and what it says is recorded."""
import time

from daemon import ADMIN_TOKEN, API_TOKEN
from helpers import identity_change, inbound_text, new_wa_id, wait_for

MANUAL = {"identity": {"ack": "manual"}}


def pretty(w):
    return "+%s (%s) %s-%s" % (w[0], w[1:4], w[4:7], w[7:])


def reasons(wg, w, type_="template"):
    return wg.gate(w, type=type_).json()["reasons"]


def test_denied_send_answers_423_and_is_never_forwarded(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = new_wa_id()
    wg.webhook_ok(identity_change(w, "DENY=", int(time.time())))
    r = wg.post("/v1/messages", token=API_TOKEN,
                json={"to": w, "type": "template", "template": {"name": "hello"}})
    assert r.status_code == 423, r.text
    j = r.json()
    assert j["errors"][0]["code"] == 480 and "identity_unacknowledged" in j["errors"][0]["details"]
    assert j["decision"]["allowed"] is False and j["decision"]["identity"]["hash"] == "DENY="
    assert not sim.calls_matching(method="POST", path="/v1/messages")


def test_allowed_send_is_forwarded_and_answered_as_is(procs):
    _, sim, wg = procs.stack()
    w = new_wa_id()
    wg.webhook_ok(inbound_text(w))                # the user wrote: the 24-hour window is open
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "text", "text": {"body": "hi"}})
    sent = sim.calls_matching(method="POST", path="/v1/messages")
    assert len(sent) == 1 and sent[0]["body"] == {"to": w, "type": "text", "text": {"body": "hi"}}
    assert r.status_code == sent[0]["status"], (r.status_code, sent[0]["status"])
    assert r.json() == sent[0]["answer"]
    # without the window, a text is refused with the WABA client's 470 code
    r = wg.post("/v1/messages", token=API_TOKEN, json={"to": new_wa_id(), "type": "text"})
    assert r.status_code == 423 and r.json()["errors"][0]["code"] == 470, r.text


def test_contact_check_forwarded_and_recorded(procs):
    _, sim, wg = procs.stack(overrides={"gate": {"require_valid_contact": "true"}})
    good, bad = new_wa_id(), new_wa_id()
    sim.configure(invalid_numbers=["+" + bad])
    r = wg.post("/v1/contacts", token=API_TOKEN,
                json={"blocking": "wait", "contacts": [pretty(good), "+" + bad], "force_check": True})
    assert r.status_code == 200, r.text
    call = sim.calls_matching(method="POST", path="/v1/contacts")[-1]
    assert r.json() == call["answer"]
    statuses = {c["input"]: c["status"] for c in r.json()["contacts"]}
    assert statuses == {pretty(good): "valid", "+" + bad: "invalid"}, statuses
    assert "contact_invalid" in reasons(wg, bad)
    assert "contact_invalid" not in reasons(wg, good)


def test_identity_get_is_recorded_and_put_acknowledges(procs):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = new_wa_id()
    sim.set_identity(w, "SEEN=", created_timestamp=int(time.time() * 1000), acknowledged=False)
    r = wg.get("/v1/contacts/%s/identity" % pretty(w), token=API_TOKEN)
    assert r.status_code == 200 and r.json()["contacts"]["hash"] == "SEEN=", r.text
    d = wg.gate(w, type="template").json()
    assert d["identity"]["hash"] == "SEEN=" and d["reasons"] == ["identity_unacknowledged"], d

    # ack = manual: an internal service's token does not acknowledge, saying why, and
    # nothing reaches the WABA client
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=API_TOKEN, json={"hash": "SEEN="})
    assert r.status_code == 403 and "ack = manual" in r.text, r.text
    assert not sim.calls_matching(method="PUT", path_prefix="/v1/contacts/%s/identity" % w)
    assert wg.gate(w, type="template").status_code == 423
    # an operator's does
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=ADMIN_TOKEN, json={"hash": "SEEN="})
    assert r.status_code == 200, r.text
    assert wg.gate(w, type="template").status_code == 200
    rec = wg.identity(w)
    assert rec["identity"]["acknowledged"] is True and rec["identity"]["acknowledged_by"] == "ops"

    # a PUT the WABA client refuses changes nothing here and is answered as it is
    r = wg.request("PUT", "/v1/contacts/%s/identity" % w, token=ADMIN_TOKEN, json={"hash": "OTHER="})
    assert r.status_code == 400 and r.json()["errors"], r.text
    assert wg.gate(w, type="template").json()["identity"]["hash"] == "SEEN="
    assert wg.request("PUT", "/v1/contacts/%s/identity" % w, token=ADMIN_TOKEN,
                      json={"hash": 5}).status_code == 400


def test_block_unblock_and_report_are_mirrored(procs):
    _, sim, wg = procs.stack()
    w = new_wa_id()
    assert wg.post("/v1/contacts/%s/block" % pretty(w), token=API_TOKEN, json={}).status_code == 200
    assert "blocked" in reasons(wg, w)
    assert wg.post("/v1/contacts/+%s/unblock/" % w, token=API_TOKEN).status_code == 200
    assert "blocked" not in reasons(wg, w)
    r = wg.post("/v1/contacts/+%s/report" % w, token=API_TOKEN, json={"block": True, "reason": "spam"})
    assert r.status_code == 200, r.text
    assert "blocked" in reasons(wg, w)
    r = wg.get("/v1/contacts/blocklist?limit=10&offset=0", token=API_TOKEN)
    assert r.status_code == 200 and r.json() == sim.calls_matching(path="/v1/contacts/blocklist")[-1]["answer"]
    assert sim.calls_matching(path="/v1/contacts/blocklist")[-1]["query"] == "limit=10&offset=0"


def test_refused_block_is_not_mirrored(procs):
    _, sim, wg = procs.stack()
    sim.configure(require_engaged=True)
    w = new_wa_id()
    r = wg.post("/v1/contacts/+%s/block" % w, token=API_TOKEN, json={})
    assert r.status_code >= 400 and r.json()["errors"], r.text
    assert "blocked" not in reasons(wg, w)


def test_upstream_unreachable_502_and_slow_504(procs):
    r0 = procs.redis()
    wg = procs.daemon(r0, None)                    # upstream: a closed port
    r = wg.post("/v1/contacts", token=API_TOKEN, json={"contacts": ["+16315551234"]})
    assert r.status_code == 502 and r.json()["errors"][0]["code"] == 502, r.text

    _, sim, wg2 = procs.stack()
    sim.delay(1500, count=1, path_prefix="/v1/contacts", method="POST")
    t0 = time.monotonic()
    r = wg2.post("/v1/contacts", token=API_TOKEN, json={"contacts": ["+16315551234"]})
    assert r.status_code == 504, r.text           # [upstream] timeout_ms = 500
    assert time.monotonic() - t0 < 1.4


def test_forwarded_routes_need_an_api_token(procs):
    _, sim, wg = procs.stack()
    assert wg.post("/v1/messages", json={"to": "+16315551234"}).status_code == 401
    assert wg.post("/v1/contacts/+16315551234/block").status_code == 401
    wait_for(lambda: not sim.calls_matching(path="/v1/messages"), 1, what="nothing forwarded")
    assert not sim.calls_matching(path="/v1/contacts/16315551234/block")


def test_a_send_is_remembered_and_takes_its_numbers_off_the_budget(procs):
    """A forwarded send is remembered by the message id of its answer (the record, the
    business number, the pinned hash: a failed status may name nobody), for [proxy]
    sent_ttl_s, and its numbers stop counting as checked and never sent to.  With nothing
    on the budget this is plain commands; with numbers on it, apply takes the send's off."""
    from helpers import world_wa_id
    r, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "3"}, "proxy": {"sent_ttl_s": "3600"}})
    c = r.client()
    users = [world_wa_id(cc) for cc in ("BR", "IN", "NG", "GB")]
    for w in users:
        wg.webhook_ok(inbound_text(w))

    def send(w):
        res = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "text", "text": {"body": "hi"}})
        assert res.status_code in (200, 201), res.text
        return res.json()["messages"][0]["id"]

    def sent_items():
        return wg.metric("waguard_webhook_items_total", kind="sent") or 0

    # nothing checked: the memory alone
    before = sent_items()
    mid = send(users[3])
    assert c.get("waguard:sent:{%s}" % mid) == users[3] + "\n\n"
    assert 3500 < c.ttl("waguard:sent:{%s}" % mid) <= 3600
    assert not c.exists("waguard:checks")
    assert sent_items() == before + 1
    # three numbers checked and not sent to: the budget is full
    ok = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+" + w for w in users[:3]]})
    assert ok.status_code == 200, ok.text
    full = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+" + users[3]]})
    assert full.status_code == 429, full.text
    # a send to one of them takes it off: one more number fits
    mid = send(users[0])
    assert c.get("waguard:sent:{%s}" % mid) == users[0] + "\n\n"
    assert sent_items() == before + 2
    again = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+" + users[3]]})
    assert again.status_code == 200, again.text


def test_a_send_redis_cannot_remember_is_still_answered_as_the_waba_client_did(procs):
    """The memory of a send is two commands one after the other (SET of the message id,
    EXISTS of the budget's set), not a transaction: when Redis refuses the SET (here an ACL
    that takes SET away; the gate's reads still run) the other still runs, the send (which
    went out) is answered as the WABA client answered it, the refusal is logged in Redis's
    words, and nothing is counted as sent."""
    from helpers import world_wa_id
    r, sim, wg = procs.stack(overrides={"proxy": {"sent_ttl_s": "3600"}})
    c = r.client()
    w = world_wa_id("ID")
    wg.webhook_ok(inbound_text(w))
    before = wg.metric("waguard_webhook_items_total", kind="sent") or 0
    mark = len(wg.log())
    c.config_resetstat()
    c.execute_command("ACL", "SETUSER", "default", "-set")
    try:
        res = wg.post("/v1/messages", token=API_TOKEN, json={"to": w, "type": "text", "text": {"body": "hi"}})
        sent = sim.calls_matching(method="POST", path="/v1/messages")
        assert len(sent) == 1, (res.status_code, res.text)
        assert res.status_code == sent[0]["status"] and res.json() == sent[0]["answer"], res.text
        mid = res.json()["messages"][0]["id"]
        wg.wait_log("could not record the answer to a send to %s: NOPERM" % w, start=mark)
    finally:
        c.execute_command("ACL", "SETUSER", "default", "+set")
    assert not c.exists("waguard:sent:{%s}" % mid)
    assert (wg.metric("waguard_webhook_items_total", kind="sent") or 0) == before
    # the SET was refused on its own and the budget's EXISTS after it still ran
    stats = c.info("commandstats")
    assert stats["cmdstat_set"]["rejected_calls"] >= 1 and stats["cmdstat_exists"]["calls"] >= 1, stats
