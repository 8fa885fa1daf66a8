"""Meta's Cloud API as it stands in late 2026 (issue 21), through the real binary, a real
Redis and the simulator's Graph surface and 2026 webhook builders (tests/waba_sim.py):

  1. users named by a business-scoped user id alone are first-class: every user field of
     every webhook kind is read, a user id and a wa_id seen together are one record
     (parents kept), and a user id change (the user_id_update field, the system message
     user_changed_user_id) moves the state, retires the old id and closes the gate until
     acknowledged;
  2. a 137000 (Cloud) or 480 (On-Premises) failed status that names nobody is tied to its
     send by the message id waguard remembered ([proxy] sent_ttl_s); one it cannot place is
     counted and logged;
  3. sends by a top-level "recipient" are gated by that user, "to" and "recipient" by both;
     an authentication template to a user id alone is refused before it leaves (131062);
  4. /{version}/{pnid}/marketing_messages is gated like /messages; any other "…messages"
     path is refused, never forwarded;
  5. two business numbers behind one webhook: windows and blocks per number, identity per
     user;

and the claims of docs/cloud.md (once the README's "On Meta's Cloud API" / "Users without phone numbers").

Users come from several countries (helpers.WORLD) and include users known only by a user
id (CC.…, parents CC.ENT.…) whose phone number Meta hides."""
import itertools
import json
import random
import time

import pytest

from daemon import API_TOKEN, HMAC_SECRET
from helpers import free_port, gate_decision, new_msg_id, wait_for, world_wa_id

PN1, PN2 = "PN1", "PN2"                  # two business numbers behind one webhook
NOW = int(time.time())

_ids = itertools.count(random.randrange(10 ** 9, 9 * 10 ** 9, 1000))


def uid(cc):
    """A fresh business-scoped user id of country cc (US.13491208655302741918's shape)."""
    return "%s.%d%d" % (cc, next(_ids), random.randrange(10 ** 6, 10 ** 7))


def parent(cc):
    return "%s.ENT.%d" % (cc, next(_ids))


# ----------------------------------------------------------------------------- the stack

def cloud_stack(procs, identity=None, upstream=None, extra=None, knobs=None):
    """Redis, the simulator (Graph, no auth) and a Cloud daemon for PN1,PN2 whose webhook the
    simulator posts to, signed with the app secret.  The simulator's knobs are set before the
    daemon starts.  ack = manual unless identity says otherwise."""
    r = procs.redis()
    sim = procs.sim(auth="none")
    port = free_port()
    sim.configure(app_secret=HMAC_SECRET, cloud_webhook_url="http://127.0.0.1:%d/webhook" % port,
                  callback_delay_ms=10, default_phone_number_id=PN1, **(knobs or {}))
    over = {"upstream": {"api": "cloud", "auth": "none", "phone_number_id": "%s,%s" % (PN1, PN2),
                         "blocklist_sync_s": "0", "timeout_ms": "800"},
            "webhook": {"hmac_secret_file": "hmac_secret"},
            "identity": {"ack": "manual"}}
    for section, keys in (("upstream", upstream), ("identity", identity)):
        over[section].update(keys or {})
    over.update(extra or {})
    wg = procs.daemon(r, sim, overrides=over, port=port)
    return r, sim, wg


def post(sim, value, pnid=PN1, field="messages"):
    """The simulator posts one Cloud webhook (signed); waguard must take it."""
    st = sim.post_cloud_webhook(value, pnid=pnid, field=field)
    assert st == 200, (st, sim.state()["callbacks"][-1])


def event(sim, kind, **kw):
    """Build with the simulator's 2026 builder of `kind` and post it; returns the value."""
    out = sim.cloud_event(kind, **kw)
    assert out["status"] == 200, out
    return out["value"]


def gate(wg, who, pnid=None, type_="text", **q):
    return gate_decision(wg, who, type_, phone_number_id=pnid, **q)


def closed(wg, who, pnid=None, type_="text"):
    d = gate(wg, who, pnid, type_)
    assert d["allowed"] is False and "identity_unacknowledged" in d["reasons"], d
    return d


def opened(wg, who, pnid=None, type_="text"):
    d = gate(wg, who, pnid, type_)
    assert d["allowed"] is True, d
    return d


def send(wg, pnid=PN1, to=None, recipient=None, type_="text", template=None, node="messages", extra=None):
    body = {"messaging_product": "whatsapp", "type": type_}
    if to is not None:
        body["to"] = to
    if recipient is not None:
        body["recipient"] = recipient
    if type_ == "text":
        body["text"] = {"body": "hello"}
    else:
        body["template"] = template or {"name": "order_update", "language": {"code": "en"}}
    body.update(extra or {})
    return wg.post("/v21.0/%s/%s" % (pnid, node), token=API_TOKEN, data=json.dumps(body),
                   headers={"Content-Type": "application/json"})


def forwarded(sim, pnid=PN1, node="messages"):
    return sim.calls_matching(method="POST", path="/v21.0/%s/%s" % (pnid, node))


def wamid_of(r):
    assert r.status_code == 200, r.text
    return r.json()["messages"][0]["id"]


def ack(wg, who):
    a = wg.ack_now(who)
    assert a.status_code == 202, a.text
    return wait_for(lambda: (lambda d: d if d["allowed"] else None)(gate(wg, who, type_="template")), 5,
                    "%s acknowledged" % who)


def refusal_137000(msg_id, **user):
    """A failed status with 137000 naming the user only by the given fields (none: nobody)."""
    st = {"id": msg_id, "status": "failed", "timestamp": str(int(time.time())),
          "errors": [{"code": 137000, "title": "Identity key mismatch",
                      "error_data": {"details": "The recipient's identity key hash does not match"}}]}
    st.update(user)
    return {"statuses": [st]}


def inbound(who, key_hash=None, ts=None, text="hi"):
    """A Cloud value of a text from `who` (a wa_id, or a user id alone), with its hash."""
    contact = {"profile": {"name": "U"}}
    msg = {"id": new_msg_id("wamid."), "timestamp": str(ts or NOW - 60), "type": "text", "text": {"body": text}}
    if "." in who:
        contact["user_id"] = msg["from_user_id"] = who
    else:
        contact["wa_id"] = msg["from"] = who
    if key_hash:
        contact["identity_key_hash"] = key_hash
    return {"contacts": [contact], "messages": [msg]}


def hidden_user(sim, cc, country=None, username=None, with_parent=True):
    """A user who adopted a username and whose phone Meta hides: (user id, wa_id, parent)."""
    u, w = uid(cc), world_wa_id(country or cc)
    pu = parent(cc) if with_parent else None
    sim.cloud_user(u, wa_id=w, username=username or "user_%s" % u[3:9], parent_user_id=pu,
                   phone_hidden=True, name=None)
    return u, w, pu


# =============================================================================== item 1
# Users named by a user id alone are first-class.

@pytest.mark.parametrize("kind", ["inbound", "status_read", "status_failed", "contacts_beside_status",
                                  "message_without_contacts"])
def test_user_id_fields_are_read_on_every_webhook_kind(procs, kind):
    """A phone-hidden user (no wa_id, from, recipient_id anywhere) is read from each webhook
    kind's user id fields: the message's from_user_id / from_parent_user_id and contacts[]'s
    user_id / parent_user_id / identity_key_hash, a status's recipient_user_id /
    recipient_parent_user_id / recipient_identity_key_hash, and the contacts[] beside a
    sent/delivered/read status."""
    _, sim, wg = cloud_stack(procs)
    u, w, pu = hidden_user(sim, "BR")
    v = event(sim, "inbound", user_id=u, identity_key_hash="BRK1=", pnid=PN1, ts=NOW - 120)
    assert "wa_id" not in v["contacts"][0] and "from" not in v["messages"][0], v     # phone hidden
    if kind == "inbound":
        # from_user_id opened the window on PN1 only, the first hash (contacts[].identity_key_hash)
        # is trusted, the parent is kept on the record
        d = opened(wg, u, PN1)
        assert d["wa_id"] == u and d["identity"]["hash"] == "BRK1=", d
        assert gate(wg, u, PN2)["reasons"] == ["outside_session_window"]
        rec = wg.identity(u)
        assert rec["wa_id"] == u and rec["parent_user_id"] == pu, rec
    elif kind == "status_read":
        v = event(sim, "status", msg_id=new_msg_id("wamid."), status="read", user_id=u,
                  identity_key_hash="BRK2=", pnid=PN1)
        st = v["statuses"][0]
        assert "recipient_id" not in st and st["recipient_user_id"] == u and st["recipient_parent_user_id"] == pu
        d = closed(wg, u, PN1)
        assert d["identity"]["hash"] == "BRK2=", d
        assert [e["hash"] for e in wg.identity(u)["history"]][:2] == ["BRK2=", "BRK1="]
    elif kind == "status_failed":
        v = event(sim, "status", msg_id=new_msg_id("wamid."), status="failed", user_id=u, pnid=PN1,
                  errors=[137000])
        st = v["statuses"][0]
        assert "recipient_id" not in st and st["recipient_user_id"] == u and "contacts" not in v
        d = closed(wg, u, PN1)
        assert d["identity"].get("hash_unknown") is True, d
    elif kind == "contacts_beside_status":
        # the user talked to the number again: Meta shows the phone, in the contacts[] beside
        # a delivered status; the status item itself names only the user id
        sim.cloud_user(u, wa_id=w, username="bia.rocha", parent_user_id=pu, phone_hidden=False)
        v = sim.status_value(new_msg_id("wamid."), "delivered", user_id=u, pnid=PN1)
        v["statuses"][0].pop("recipient_id", None)
        assert v["contacts"][0]["wa_id"] == w and v["contacts"][0]["user_id"] == u, v
        post(sim, v, PN1)
        d = opened(wg, w, PN1)                       # linked: the window and the hash are the user's
        assert d["wa_id"] == w and d["identity"]["hash"] == "BRK1=", d
        rec = wg.identity(w)
        assert rec["user_id"] == u and rec["parent_user_id"] == pu, rec
        assert wg.identity(u)["wa_id"] == w
    else:
        # a message whose sender is named only in the message (no contacts[] beside it)
        u2, _, pu2 = hidden_user(sim, "NG", country="NG")
        v = sim.inbound_value(u2, pnid=PN2)
        del v["contacts"]
        assert v["messages"][0]["from_user_id"] == u2 and v["messages"][0]["from_parent_user_id"] == pu2
        post(sim, v, PN2)
        opened(wg, u2, PN2)
        assert gate(wg, u2, PN1)["reasons"] == ["outside_session_window"]
        assert wg.identity(u2)["parent_user_id"] == pu2


def test_profile_username_is_kept(procs):
    """contacts[].profile.username (a user with a username, 2026) is read: the record shows it."""
    _, sim, wg = cloud_stack(procs)
    u, w = uid("DE"), world_wa_id("DE")
    sim.cloud_user(u, wa_id=w, username="jonas.berg", name="Jonas Berg", phone_hidden=True)
    v = event(sim, "inbound", user_id=u, pnid=PN1)
    assert v["contacts"][0]["profile"] == {"name": "Jonas Berg", "username": "jonas.berg"}, v
    rec = wg.identity(u)
    assert rec is not None and "jonas.berg" in json.dumps(rec), rec


@pytest.mark.parametrize("where", ["contacts", "message_from", "status_recipient"])
def test_a_user_id_and_wa_id_seen_together_are_one_record(procs, where):
    """A user first known by a user id alone, then seen with a wa_id: one record, parents
    kept; a change seen under either name closes the gate for the other."""
    _, sim, wg = cloud_stack(procs)
    u, w, pu = hidden_user(sim, "IN")
    event(sim, "inbound", user_id=u, identity_key_hash="INK1=", pnid=PN1, ts=NOW - 300)
    opened(wg, u, PN1)
    sim.cloud_user(u, wa_id=w, parent_user_id=pu, phone_hidden=False)      # Meta shows the phone again
    if where == "contacts":
        v = sim.inbound_value(u, pnid=PN2)
        del v["messages"][0]["from"]                     # the message names the user id only
        assert v["contacts"][0]["wa_id"] == w and v["contacts"][0]["user_id"] == u
        post(sim, v, PN2)
    elif where == "message_from":
        v = sim.inbound_value(u, pnid=PN2)
        del v["contacts"]
        assert v["messages"][0]["from"] == w and v["messages"][0]["from_user_id"] == u
        post(sim, v, PN2)
    else:
        v = sim.status_value(new_msg_id("wamid."), "sent", user_id=u, pnid=PN2)
        del v["contacts"]
        assert v["statuses"][0]["recipient_id"] == w and v["statuses"][0]["recipient_user_id"] == u
        post(sim, v, PN2)
    # one record: the wa_id's, with the user id and the parent
    rec = wg.identity(w)
    assert rec["wa_id"] == w and rec["user_id"] == u and rec["parent_user_id"] == pu, rec
    assert wg.identity(u)["wa_id"] == w
    d = opened(wg, w, PN1)                                   # the user id's window came along
    assert d["identity"]["hash"] == "INK1=", d
    # a new hash seen under the wa_id alone closes the user id's gate
    post(sim, {"statuses": [{"id": new_msg_id("wamid."), "status": "read", "recipient_id": w,
                             "timestamp": str(NOW - 60), "recipient_identity_key_hash": "INK2="}]}, PN1)
    d = closed(wg, u, PN1)
    assert d["wa_id"] == w and d["identity"]["hash"] == "INK2=", d
    ack(wg, u)
    assert opened(wg, w, PN1)["identity"]["hash"] == "INK2="
    # a refusal seen under the user id alone closes the wa_id's gate
    post(sim, refusal_137000(new_msg_id("wamid."), recipient_user_id=u), PN1)
    d = closed(wg, w, PN1)
    assert d["identity"].get("hash_unknown") is True, d
    closed(wg, "+" + w, PN1)


@pytest.mark.parametrize("known", ["user_id_only", "with_wa_id"])
@pytest.mark.parametrize("how", ["user_id_update", "user_changed_user_id"])
def test_a_user_id_change_moves_the_state_and_retires_the_old_id(procs, how, known):
    """user_id_update (field "user_id_update") and the system message user_changed_user_id:
    the identity, windows and blocks move to the new id, the parent follows; the old id then
    names nothing a send may go to (refused with number_changed and new_user_id); the gate
    is closed until an operator acknowledges again (ack = manual), like a number change."""
    _, sim, wg = cloud_stack(procs)
    cc, country = ("GB", "GB") if known == "user_id_only" else ("MX", "MX")
    old, w, old_parent = hidden_user(sim, cc, country)
    if known == "with_wa_id":
        sim.cloud_user(old, wa_id=w, parent_user_id=old_parent, phone_hidden=False)
    event(sim, "inbound", user_id=old, identity_key_hash="UIDK=", pnid=PN1, ts=NOW - 600)
    opened(wg, old, PN1)
    r = wg.post("/v21.0/%s/block_users" % PN2, token=API_TOKEN,
                json={"messaging_product": "whatsapp", "block_users": [{"user_id": old}]})
    assert r.status_code == 200, r.text
    assert "blocked" in gate(wg, old, PN2, "template")["reasons"]
    new, new_parent = uid(cc), parent(cc)
    if how == "user_id_update":
        v = event(sim, "user_id_update", old_user_id=old, new_user_id=new, new_parent=new_parent, pnid=PN1)
        assert v["user_id_update"][0]["user_id"] == {"previous": old, "current": new}, v
    else:
        v = event(sim, "user_changed_user_id", old=old, new=new, new_parent=new_parent, pnid=PN1)
        assert v["messages"][0]["system"]["previous_user_id"] == old and "contacts" not in v, v
    # the state moved: identity (waiting for an acknowledgement again), window, block
    d = gate(wg, new, PN1)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash"] == "UIDK=", d
    assert "blocked" in gate(wg, new, PN2, "template")["reasons"]
    rec = wg.identity(new)
    assert rec["identity"]["state"] != "acknowledged", rec
    if known == "with_wa_id":
        assert rec["wa_id"] == w
        closed(wg, w, PN1)
    # the old id names nothing a send may go to: refused, saying why and where the user went
    d = gate(wg, old, PN1)
    assert d["allowed"] is False and "number_changed" in d["reasons"] and d["new_user_id"] == new, d
    r = send(wg, PN1, recipient=old)
    assert r.status_code == 423 and r.json()["decision"]["new_user_id"] == new, r.text
    assert "number_changed" in r.json()["error"]["error_data"]["details"], r.text
    r = send(wg, PN1, recipient=new)
    assert r.status_code == 423 and r.json()["error"]["error_subcode"] == 1, r.text    # not yet acknowledged
    assert not forwarded(sim, PN1)
    # an operator acknowledges again: the new id (and the wa_id) open, the old id stays refused
    ack(wg, new)
    r = send(wg, PN1, recipient=new)
    assert r.status_code == 200, r.text
    assert forwarded(sim, PN1)[-1]["body"]["recipient_identity_key_hash"] == "UIDK="
    assert sim.sent_message(wamid_of(r))["user_id"] == new
    if known == "with_wa_id":
        opened(wg, w, PN1)
    d = gate(wg, old, PN1)
    assert d["allowed"] is False and "number_changed" in d["reasons"] and d["new_user_id"] == new, d
    assert send(wg, PN1, recipient=old).status_code == 423
    assert len(forwarded(sim, PN1)) == 1
    # the record names the user by the new id, and keeps the new parent
    rec = wg.identity(new)
    assert (rec["user_id"], rec["parent_user_id"]) == (new, new_parent), rec


# =============================================================================== item 2
# A failed status is tied to its send.

@pytest.mark.parametrize("platform", ["cloud", "onprem"])
def test_a_failed_status_naming_nobody_closes_the_gate_of_the_user_it_was_sent_to(procs, platform):
    """waguard remembers the message id of each send it forwarded ([proxy] sent_ttl_s): a
    failed status with 137000 (Cloud) or 480 (On-Premises) and no user field at all (no
    contacts, no recipient_user_id, no recipient_id) closes that user's gate, and only his."""
    if platform == "cloud":
        _, sim, wg = cloud_stack(procs)
        a, b, c = world_wa_id("GB"), uid("PH"), world_wa_id("NG")         # b known only by user id
        for who, h in ((a, "GBK="), (b, "PHK="), (c, "NGK=")):
            post(sim, inbound(who, h), PN1)
            opened(wg, who, PN1)
        mid_a = wamid_of(send(wg, PN1, to=a))
        mid_b = wamid_of(send(wg, PN1, recipient=b))
        wamid_of(send(wg, PN1, to=c))
        post(sim, refusal_137000(mid_a), PN1)
        d = closed(wg, a, PN1)
        assert d["identity"].get("hash_unknown") is True, d
        opened(wg, b, PN1)
        opened(wg, c, PN1)
        post(sim, refusal_137000(mid_b), PN1)
        assert closed(wg, b, PN1)["identity"].get("hash_unknown") is True
        opened(wg, c, PN1)
        assert send(wg, PN1, to=a).status_code == 423 and send(wg, PN1, recipient=b).status_code == 423
    else:
        r = procs.redis()
        sim = procs.sim()
        wg = procs.daemon(r, sim, overrides={"identity": {"ack": "manual"}})
        a, c = world_wa_id("IN"), world_wa_id("AR")
        for who, h in ((a, "INH="), (c, "ARH=")):
            wg.webhook_ok({"messages": [{"from": who, "id": new_msg_id(), "timestamp": str(NOW - 60), "type": "text",
                                         "text": {"body": "hi"},
                                         "identity": {"hash": h, "created_timestamp": (NOW - 7200) * 1000,
                                                      "acknowledged": True}}]})
            opened(wg, who)
        ra = wg.post("/v1/messages", token=API_TOKEN, json={"to": a, "type": "text", "text": {"body": "x"}})
        assert ra.status_code in (200, 201), ra.text
        mid_a = ra.json()["messages"][0]["id"]
        rc = wg.post("/v1/messages", token=API_TOKEN, json={"to": c, "type": "text", "text": {"body": "x"}})
        assert rc.status_code in (200, 201), rc.text
        before = wg.metric("waguard_identity_refusals_unplaced_total")
        wg.webhook_ok({"statuses": [{"id": mid_a, "status": "failed", "timestamp": str(int(time.time())),
                                     "errors": [{"code": 480, "title": "User identity changed"}]}]})
        assert wg.metric("waguard_identity_refusals_unplaced_total") == before, "the 480 was not tied to its send"
        d = closed(wg, a)
        assert d["identity"].get("hash_unknown") is True, d
        opened(wg, c)


@pytest.mark.parametrize("why", ["unknown_wamid", "memory_expired"])
def test_a_failed_status_waguard_cannot_place_is_counted_and_logged(procs, why):
    """A 137000 naming no user, for a message id waguard never forwarded (or forgot after
    [proxy] sent_ttl_s): answered 200, counted in waguard_identity_refusals_unplaced_total,
    logged and kept as an event; no user's gate is touched."""
    _, sim, wg = cloud_stack(procs, extra={"proxy": {"sent_ttl_s": "1"}})
    w = world_wa_id("ID")
    post(sim, {"contacts": [{"profile": {"name": "U"}, "wa_id": w, "identity_key_hash": "IDK="}],
               "messages": [{"from": w, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                             "text": {"body": "hi"}}]}, PN1)
    opened(wg, w, PN1)
    if why == "unknown_wamid":
        mid = "wamid.HBgLNEVER" + new_msg_id("")
        wamid_of(send(wg, PN1, to=w))                      # a send waguard did forward, to someone else
    else:
        mid = wamid_of(send(wg, PN1, to=w))
        time.sleep(2.5)                                    # sent_ttl_s = 1: forgotten
    before = wg.metric("waguard_identity_refusals_unplaced_total")
    start = wg.log_size()
    post(sim, refusal_137000(mid), PN1)
    assert wg.metric("waguard_identity_refusals_unplaced_total") == before + 1
    wg.wait_log(lambda t: "named no user" in t or "unplaced" in t or mid in t, start=start)
    assert any(e[1]["kind"] == "identity_refusal_unplaced" and e[1].get("id") == mid
               for e in procs.redises[0].client().xrange(wg.key("events")))
    opened(wg, w, PN1)


# =============================================================================== item 3
# Sends by "recipient", by both fields, and authentication templates to a user id.

def test_a_send_by_recipient_is_gated_by_that_user(procs):
    _, sim, wg = cloud_stack(procs)
    u, _, _ = hidden_user(sim, "AR")
    stranger = uid("AR")
    # nobody waguard knows: a text outside any window is refused and not forwarded
    r = send(wg, PN1, recipient=stranger)
    assert r.status_code == 423 and r.json()["decision"]["reasons"] == ["outside_session_window"], r.text
    event(sim, "inbound", user_id=u, identity_key_hash="ARK=", pnid=PN1)
    r = send(wg, PN1, recipient=u)
    mid = wamid_of(r)
    sent = sim.sent_message(mid)
    assert sent["by"] == "user_id" and sent["to"] == u and sent["recipient_identity_key_hash"] == "ARK=", sent
    post(sim, refusal_137000(new_msg_id("wamid."), recipient_user_id=u), PN1)
    r = send(wg, PN1, recipient=u)
    assert r.status_code == 423 and r.json()["error"]["type"] == "WaguardGateRefusal", r.text
    assert r.json()["decision"]["reasons"] == ["identity_unacknowledged"], r.text
    assert len(forwarded(sim, PN1)) == 1


@pytest.mark.parametrize("shut", ["to", "recipient", "neither"])
def test_to_and_recipient_are_both_gated_the_strictest_decides(procs, shut):
    """With both "to" and "recipient" (Meta takes "to"), each user they name is gated: if
    either is closed the send is refused and not forwarded."""
    _, sim, wg = cloud_stack(procs)
    w, u = world_wa_id("DE"), uid("AR")
    for v in ({"contacts": [{"profile": {"name": "D"}, "wa_id": w, "identity_key_hash": "DEK="}],
               "messages": [{"from": w, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                             "text": {"body": "hi"}}]},
              {"contacts": [{"profile": {"name": "A"}, "user_id": u, "identity_key_hash": "ARK="}],
               "messages": [{"from_user_id": u, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30),
                             "type": "text", "text": {"body": "hi"}}]}):
        post(sim, v, PN1)
    if shut == "to":
        post(sim, refusal_137000(new_msg_id("wamid."), recipient_id=w), PN1)
    elif shut == "recipient":
        post(sim, refusal_137000(new_msg_id("wamid."), recipient_user_id=u), PN1)
    r = send(wg, PN1, to=w, recipient=u)
    if shut == "neither":
        assert r.status_code == 200, r.text
        assert len(forwarded(sim, PN1)) == 1
        return
    assert r.status_code == 423, r.text
    d = r.json()["decision"]
    assert d["reasons"] == ["identity_unacknowledged"] and d["wa_id"] == (w if shut == "to" else u), d
    assert not forwarded(sim, PN1)


@pytest.mark.parametrize("template", ["configured_name", "otp_components"])
def test_an_authentication_template_to_a_user_id_alone_is_refused_before_it_leaves(procs, template):
    """[hold] authentication_templates names it (or its components carry a copy-code / one-tap
    button): sent only by user id, Meta refuses it (131062); waguard refuses it first, in
    Graph's envelope, saying to send it to the phone number.  By phone it goes."""
    _, sim, wg = cloud_stack(procs, extra={"hold": {"authentication_s": "0",
                                                    "authentication_templates": "otp_login"}})
    u = uid("NG")
    w = world_wa_id("NG")
    sim.cloud_user(u, wa_id=w)
    event(sim, "inbound", user_id=u, identity_key_hash="NGK=", pnid=PN1)
    opened(wg, u, PN1, "template")
    tpl = {"name": "otp_login", "language": {"code": "en"}} if template == "configured_name" else \
        {"name": "verify_code_7", "language": {"code": "en_GB"},
         "components": [{"type": "button", "sub_type": "copy_code", "index": "0",
                         "parameters": [{"type": "text", "text": "123456"}]}]}
    r = send(wg, PN1, recipient=u, type_="template", template=tpl)
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["code"] == 131062 and "131062" in e["message"], e
    assert "phone" in e["error_data"]["details"].lower(), e               # how to send it instead
    assert not forwarded(sim, PN1)                              # it never left
    # the same template by phone number goes
    r = send(wg, PN1, to=w, type_="template", template=tpl)
    assert r.status_code == 200, r.text
    assert sim.sent_message(wamid_of(r))["by"] == "phone"


# =============================================================================== item 4
# marketing_messages, and other "…messages" paths.

@pytest.mark.parametrize("case", ["allowed", "window", "blocked", "identity", "hold"])
def test_marketing_messages_is_gated_exactly_like_messages(procs, case):
    """POST /{version}/{pnid}/marketing_messages: the same decision as /messages for holds,
    the window, blocks and identity; an allowed one is forwarded to marketing_messages with
    its body as sent (Meta documents no recipient_identity_key_hash there), while /messages
    is pinned."""
    _, sim, wg = cloud_stack(procs, extra={"hold": {"marketing_s": "3600", "marketing_templates": "spring_sale"}})
    w = world_wa_id("BR")
    post(sim, {"contacts": [{"profile": {"name": "B"}, "wa_id": w, "identity_key_hash": "BRM1="}],
               "messages": [{"from": w, "id": new_msg_id("wamid."), "timestamp": str(NOW - (90000 if case == "window"
                                                                                         else 60)),
                             "type": "text", "text": {"body": "hi"}}]}, PN1)
    type_, tpl = "text", None
    if case == "blocked":
        r = wg.post("/v21.0/%s/block_users" % PN1, token=API_TOKEN,
                    json={"messaging_product": "whatsapp", "block_users": [{"user": "+" + w}]})
        assert r.status_code == 200, r.text
    elif case == "identity":
        post(sim, refusal_137000(new_msg_id("wamid."), recipient_id=w), PN1)
    elif case == "hold":
        post(sim, {"statuses": [{"id": new_msg_id("wamid."), "status": "read", "recipient_id": w,
                                 "timestamp": str(NOW - 10), "recipient_identity_key_hash": "BRM2="}]}, PN1)
        ack(wg, w)
        type_, tpl = "template", {"name": "spring_sale", "language": {"code": "pt_BR"}}
    answers = {}
    for node in ("messages", "marketing_messages"):
        r = send(wg, PN1, to=w, type_=type_, template=tpl, node=node)
        answers[node] = r
    m, mm = answers["messages"], answers["marketing_messages"]
    assert m.status_code == mm.status_code, (m.text, mm.text)
    if case == "allowed":
        assert mm.status_code == 200, mm.text
        assert sim.sent_message(wamid_of(mm))["endpoint"] == "marketing_messages"
        call = forwarded(sim, PN1, "marketing_messages")[-1]
        as_sent = {"messaging_product": "whatsapp", "type": "text", "to": w, "text": {"body": "hello"}}
        assert call["body"] == as_sent, call
        assert forwarded(sim, PN1)[-1]["body"]["recipient_identity_key_hash"] == "BRM1="
        # a hash the caller put in a marketing body is left as sent
        r = send(wg, PN1, to=w, node="marketing_messages", extra={"recipient_identity_key_hash": "CALLER="})
        assert r.status_code == 200 and forwarded(sim, PN1, "marketing_messages")[-1]["body"][
            "recipient_identity_key_hash"] == "CALLER=", r.text
        return
    expect = {"window": "outside_session_window", "blocked": "blocked", "identity": "identity_unacknowledged",
              "hold": "identity_recently_changed"}[case]
    assert mm.status_code == 423, mm.text
    assert mm.json()["decision"]["reasons"] == m.json()["decision"]["reasons"] == [expect], (m.text, mm.text)
    assert mm.json()["error"]["error_subcode"] == m.json()["error"]["error_subcode"], (m.text, mm.text)
    assert not forwarded(sim, PN1, "marketing_messages") and not forwarded(sim, PN1)


@pytest.mark.parametrize("path", ["/v21.0/PN1/future_messages", "/v21.0/PN1/messages_v2", "/v22.0/PN2/group_messages",
                                  "/v21.0/PN1/Marketing_Messages", "/v21.0/PN1/messages/batch",
                                  "/v21.0/PN1/scheduled/messages"])
def test_any_other_messages_path_is_refused_never_forwarded(procs, path):
    _, sim, wg = cloud_stack(procs)
    w = world_wa_id("PH")
    post(sim, {"contacts": [{"profile": {"name": "P"}, "wa_id": w, "identity_key_hash": "PHK="}],
               "messages": [{"from": w, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                             "text": {"body": "hi"}}]}, PN1)
    opened(wg, w, PN1)                                  # the gate would allow it: the path is what is refused
    r = wg.post(path, token=API_TOKEN, json={"messaging_product": "whatsapp", "to": w, "type": "text",
                                             "text": {"body": "x"}})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert not [c for c in sim.calls if c["path"] == path], sim.calls
    # an unknown path that sends nothing is still forwarded ([proxy] forward_unknown)
    r = wg.get("/v21.0/PN1/whatsapp_business_profile", token=API_TOKEN)
    assert sim.calls_matching(method="GET", path="/v21.0/PN1/whatsapp_business_profile"), r.text


# =============================================================================== item 5
# Two business numbers behind one webhook.

def test_two_numbers_behind_one_webhook_windows_and_blocks_per_number_identity_per_user(procs):
    _, sim, wg = cloud_stack(procs)
    x, y, z = world_wa_id("GB"), world_wa_id("IN"), uid("US")          # z known only by user id
    # one webhook body carrying both numbers' changes
    env = {"object": "whatsapp_business_account", "entry": [
        {"id": "WABA_ID", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PN1},
            "contacts": [{"profile": {"name": "X"}, "wa_id": x, "identity_key_hash": "XK="}],
            "messages": [{"from": x, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                          "text": {"body": "to one"}}]}}]},
        {"id": "WABA_ID", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550002222", "phone_number_id": PN2},
            "contacts": [{"profile": {"name": "Y"}, "wa_id": y, "identity_key_hash": "YK="},
                         {"profile": {"name": "Z"}, "user_id": z, "identity_key_hash": "ZK="}],
            "messages": [{"from": y, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                          "text": {"body": "to two"}},
                         {"from_user_id": z, "id": new_msg_id("wamid."), "timestamp": str(NOW - 30), "type": "text",
                          "text": {"body": "to two"}}]}}]}]}
    raw = json.dumps(env).encode()
    r = wg.webhook(raw, token=None, hmac_secret=HMAC_SECRET)
    assert r.status_code == 200, r.text
    # windows per number
    opened(wg, x, PN1)
    assert gate(wg, x, PN2)["reasons"] == ["outside_session_window"]
    for who in (y, z):
        opened(wg, who, PN2)
        assert gate(wg, who, PN1)["reasons"] == ["outside_session_window"]
    assert send(wg, PN2, to=x).status_code == 423 and send(wg, PN1, to=x).status_code == 200
    assert send(wg, PN1, recipient=z).status_code == 423 and send(wg, PN2, recipient=z).status_code == 200
    # blocks per number
    r = wg.post("/v21.0/%s/block_users" % PN2, token=API_TOKEN,
                json={"messaging_product": "whatsapp", "block_users": [{"user": "+" + y}, {"user_id": z}]})
    assert r.status_code == 200, r.text
    for who in (y, z):
        assert "blocked" in gate(wg, who, PN2, "template")["reasons"]
        opened(wg, who, PN1, "template")
    assert sim.is_blocked(y, pnid=PN2) and not sim.is_blocked(y, pnid=PN1)
    # identity per user: a refusal reported for number PN2 closes x on both numbers, z too
    post(sim, refusal_137000(new_msg_id("wamid."), recipient_id=x), PN2)
    post(sim, refusal_137000(new_msg_id("wamid."), recipient_user_id=z), PN1)
    for n in (PN1, PN2):
        closed(wg, x, n, "template")
        assert "identity_unacknowledged" in gate(wg, z, n, "template")["reasons"]
    opened(wg, y, PN1, "template")
    before = len(forwarded(sim, PN1)) + len(forwarded(sim, PN2))
    assert send(wg, PN1, to=x).status_code == 423 and send(wg, PN2, recipient=z).status_code == 423
    assert len(forwarded(sim, PN1)) + len(forwarded(sim, PN2)) == before
    # a new hash for x seen on PN1, acknowledged once, opens x on both numbers' windows it has
    post(sim, {"contacts": [{"profile": {"name": "X"}, "wa_id": x, "identity_key_hash": "XK2="}],
               "messages": [{"from": x, "id": new_msg_id("wamid."), "timestamp": str(NOW - 5), "type": "text",
                             "text": {"body": "new phone"}}]}, PN1)
    ack(wg, x)
    opened(wg, x, PN1)
    opened(wg, x, PN2, "template")
    assert gate(wg, x, PN2)["reasons"] == ["outside_session_window"]


# =============================================================================== README

def test_readme_a_cloud_number_change_moves_everything_and_retires_the_old_user_id(procs):
    """README, "Users without phone numbers": user_changed_number moves the identity, windows
    and blocks to the new number; the old one is refused with number_changed until someone
    writes from it; the previous user id (regenerated by Meta) names the user no more."""
    _, sim, wg = cloud_stack(procs)
    old_w, new_w = world_wa_id("MX"), world_wa_id("MX")
    old_u, pu = uid("MX"), parent("MX")
    sim.cloud_user(old_u, wa_id=old_w, parent_user_id=pu)
    event(sim, "inbound", user_id=old_u, identity_key_hash="MXK=", pnid=PN1, ts=NOW - 600)
    opened(wg, old_w, PN1)
    r = wg.post("/v21.0/%s/block_users" % PN2, token=API_TOKEN,
                json={"messaging_product": "whatsapp", "block_users": [{"user": "+" + old_w}]})
    assert r.status_code == 200, r.text
    new_u = uid("MX")
    v = event(sim, "user_changed_number", old_wa_id=old_w, new_wa_id=new_w, new_user_id=new_u, pnid=PN1)
    assert v["messages"][0]["system"]["previous_user_id"] == old_u, v
    d = gate(wg, new_w, PN1)
    assert d["reasons"] == ["identity_unacknowledged"] and d["identity"]["hash"] == "MXK=", d
    assert "blocked" in gate(wg, new_w, PN2, "template")["reasons"]
    assert gate(wg, new_u, PN1)["wa_id"] == new_w
    d = gate(wg, old_w, PN1)
    assert "number_changed" in d["reasons"] and d["new_wa_id"] == new_w, d
    d = gate(wg, old_u, PN1)
    assert d["allowed"] is False and "number_changed" in d["reasons"], d
    # someone writes from the old number: it is theirs now
    post(sim, {"contacts": [{"profile": {"name": "N"}, "wa_id": old_w}],
               "messages": [{"from": old_w, "id": new_msg_id("wamid."), "timestamp": str(int(time.time())),
                             "type": "text", "text": {"body": "new owner"}}]}, PN1)
    assert "number_changed" not in gate(wg, old_w, PN1)["reasons"]
