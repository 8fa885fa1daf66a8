"""The acknowledgement worker, end to end: build/waguard, a real redis-server and the WABA
simulator (tests/waba_sim.py).  Timings are small (retry_base_ms=50, retry_max_s=1, lease_s=2,
upstream timeout_ms=500; see daemon.ACK_OVERRIDES)."""
import base64
import signal
import time

import pytest

from daemon import ADMIN_TOKEN, API_TOKEN, KEY_PREFIX, WABA_PASSWORD, WABA_USER
from helpers import (body, identity_change, identity_change_msg, metric_value, new_msg_id, new_wa_id,
                     now_s, wait_for, world_wa_id)
from waba_sim import make_test_ca, make_wrong_cert, make_wrong_host_cert

QUEUE = KEY_PREFIX + ":ack:queue"


def put_path(w):
    return "/v1/contacts/%s/identity" % w


def puts(sim, w=None):
    if w is None:
        return [c for c in sim.calls_matching(method="PUT", path_prefix="/v1/contacts/")
                if c["path"].endswith("/identity")]
    return sim.calls_matching(method="PUT", path=put_path(w))


def logins(sim):
    return sim.calls_matching(method="POST", path="/v1/users/login")


def acked(wg, w, h):
    """The identity record when waguard shows hash h acknowledged for w, else None."""
    j = wg.identity(w)
    if j and j["identity"]["hash"] == h and j["identity"]["acknowledged"] \
            and j["identity"]["state"] == "acknowledged":
        return j
    return None


def wait_acked(wg, w, h, timeout=10.0, sim=None):
    return wait_for(lambda: acked(wg, w, h), timeout, "%s acknowledged with %s" % (w, h),
                    diag=lambda: "identity: %r\nsim PUTs: %r" % (
                        wg.identity(w), [(c["body"], c["status"]) for c in puts(sim, w)] if sim else "-"))


def gate_json(wg, w, type="template"):
    r = wg.gate(w, type)
    assert r.status_code in (200, 423), (r.status_code, r.text)
    j = r.json()
    assert (r.status_code == 200) == j["allowed"], (r.status_code, j)
    return r.status_code, j


def t_old():
    return now_s() - 600


def new_user(sim, h, **identity):
    """A fresh wa_id whose identity h, created ten minutes ago, the simulator knows: (w, h, t)."""
    w, t = new_wa_id(), t_old()
    sim.set_identity(w, h, t * 1000, **identity)
    return w, h, t


# --------------------------------------------------------------------------- the happy paths

def test_auto_ack_put_once_with_login_token(procs):
    r, sim, wg = procs.stack()
    w, h, t = new_user(sim, "Rc/eg9RQ0JA=")
    sim.delay(400, count=1, path_prefix=put_path(w), method="PUT")   # keeps the gate shut for a moment

    res = wg.webhook_ok(identity_change(w, h, t))
    assert res["items"] == 1 and res["duplicates"] == 0 and res["late"] == 0, res
    code, d = gate_json(wg, w)
    assert code == 423, d
    assert d["reasons"] == ["identity_unacknowledged"], d
    assert d["identity"]["hash"] == h and d["identity"]["acknowledged"] is False, d
    assert d["identity"]["created_timestamp"] == t, d

    wait_for(lambda: gate_json(wg, w)[0] == 200, 10, "the gate to open")
    code, d = gate_json(wg, w)
    assert d["identity"] == {"hash": h, "created_timestamp": t, "acknowledged": True}, d

    p = puts(sim, w)
    assert len(p) == 1, p
    assert p[0]["body"] == {"hash": h}, p[0]
    assert p[0]["status"] == 200, p[0]
    authz = p[0]["headers"].get("Authorization", "")
    assert authz.startswith("Bearer "), p[0]["headers"]
    with sim.lock:
        issued = set(sim.tokens)
    assert authz[7:] in issued, "the PUT's token was not issued by /v1/users/login"
    lg = logins(sim)
    assert len(lg) == 1, lg
    basic = base64.b64encode(("%s:%s" % (WABA_USER, WABA_PASSWORD)).encode()).decode()
    assert lg[0]["headers"].get("Authorization") == "Basic " + basic, lg[0]["headers"]
    assert lg[0]["seq"] < p[0]["seq"]
    assert sim.get_identity(w)["acknowledged"] is True

    j = wg.identity(w)
    assert j["identity"]["state"] == "acknowledged" and j["identity"]["acknowledged"] is True, j
    assert j["identity"].get("acknowledged_by"), j
    assert any(a["hash"] == h and a["result"] == "acknowledged" for a in j["acks"]), j["acks"]
    assert r.client().zscore(QUEUE, w) is None
    m = wg.metrics()
    assert metric_value(m, "waguard_ack_attempts_total", outcome="ok") >= 1
    assert metric_value(m, "waguard_identities_pending") == 0


def test_manual_ack_waits_for_operator_and_audits_token_name(procs):
    r, sim, wg = procs.stack(overrides={"identity": {"ack": "manual"}})
    w, h, t = new_user(sim, "MaNuAl0001=")
    wg.webhook_ok(identity_change(w, h, t))
    assert gate_json(wg, w)[0] == 423
    assert r.client().zscore(QUEUE, w) is None, "manual policy queued an automatic PUT"
    pend = [i["wa_id"] for i in wg.identities("pending")]
    assert w in pend, pend
    # absence of a PUT can only be watched for a while: longer than the worker's 500 ms poll
    time.sleep(0.8)
    assert puts(sim, w) == [], puts(sim, w)
    assert gate_json(wg, w)[0] == 423

    assert wg.ack_now(w, token=None).status_code == 401
    assert wg.ack_now(w, token=API_TOKEN).status_code == 403
    assert wg.ack_now(new_wa_id()).status_code == 404
    rr = wg.ack_now(w)
    assert rr.status_code == 202, rr.text

    sim.wait_for_calls(1, method="PUT", path=put_path(w), timeout=5)
    wait_for(lambda: gate_json(wg, w)[0] == 200, 5, "the gate to open after the operator's ack")
    p = puts(sim, w)
    assert len(p) == 1 and p[0]["body"] == {"hash": h}, p
    j = wg.identity(w)
    assert j["identity"]["acknowledged_by"] == "ops", j
    assert any(a["who"] == "ops" and a["result"] == "acknowledged" and a["hash"] == h
               for a in j["acks"]), j["acks"]
    audit = r.client().xrange(KEY_PREFIX + ":audit")
    assert any(f.get("who") == "ops" and f.get("wa_id") == w and f.get("hash") == h
               for _, f in audit), audit
    assert ADMIN_TOKEN not in repr(audit) and ADMIN_TOKEN not in repr(j), "the token itself leaked"


# --------------------------------------------------------------------------- ordering

def test_newest_hash_only_with_late_and_repeated_notifications(procs):
    r, sim, wg = procs.stack()
    w, ha, hb = new_wa_id(), "AAAAAAAAAAA=", "BBBBBBBBBBB="
    ta = t_old()
    tb = ta + 60
    mid_a, mid_b = new_msg_id(), new_msg_id()
    sim.set_identity(w, ha, ta * 1000)
    sim.delay(450, count=1, path_prefix=put_path(w), method="PUT")   # A's PUT is held in flight (timeout_ms is 500)

    wg.webhook_ok(identity_change(w, ha, ta, msg_id=mid_a))
    sim.wait_for_calls(1, method="PUT", path=put_path(w), answered=False, timeout=5)
    # The user changes again while A's PUT is in flight: the WABA client knows B, so does waguard.
    sim.set_identity(w, hb, tb * 1000)
    sim.delay(300, count=1, path_prefix=put_path(w), method="PUT")     # B's first PUT, briefly
    res = wg.webhook_ok(identity_change(w, hb, tb, msg_id=mid_b))
    t_b_recorded = time.time()
    assert res["items"] == 1 and res["late"] == 0, res
    code, d = gate_json(wg, w)
    assert code == 423 and d["identity"]["hash"] == hb, d

    j = wait_acked(wg, w, hb, sim=sim)
    code, d = gate_json(wg, w)
    assert code == 200 and d["identity"]["hash"] == hb, d
    # The gate never opened for A: no acknowledgement of A is on record.
    assert not any(a["hash"] == ha and a["result"] == "acknowledged" for a in j["acks"]), j["acks"]
    p = puts(sim, w)
    late_a = [c for c in p if c["body"] == {"hash": ha} and c["time"] > t_b_recorded + 0.05]
    assert late_a == [], "PUT of the old hash A after B was recorded: %r" % late_a
    seen_b = False
    for c in p:
        seen_b = seen_b or c["body"] == {"hash": hb}
        assert not (seen_b and c["body"] == {"hash": ha}), "A PUT again after B: %r" % p
    assert sim.get_identity(w)["hash"] == hb and sim.get_identity(w)["acknowledged"] is True
    n_puts = len(p)

    # A late A (a redelivery with a new id, and the original one) changes nothing.
    res = wg.webhook_ok(identity_change(w, ha, ta))
    assert res["late"] == 1, res
    res = wg.webhook_ok(identity_change(w, ha, ta, msg_id=mid_a))
    assert res["duplicates"] == 1, res
    # B repeated: the same id is a duplicate; a new id with the same hash changes nothing.
    res = wg.webhook_ok(identity_change(w, hb, tb, msg_id=mid_b))
    assert res["duplicates"] == 1, res
    wg.webhook_ok(identity_change(w, hb, tb))
    code, d = gate_json(wg, w)
    assert code == 200 and d["identity"]["hash"] == hb and d["identity"]["acknowledged"] is True, d
    j = wg.identity(w)
    assert j["identity"]["state"] == "acknowledged", j
    assert r.client().zscore(QUEUE, w) is None, "late/repeated notifications queued work"
    assert len(puts(sim, w)) == n_puts

    # A's PUT, held all along, is answered now (400: not the newest at the WABA client); its
    # outcome must not move anything.
    sim.wait_for_calls(1, method="GET", path=put_path(w), timeout=5)
    wait_for(lambda: wg.metric("waguard_ack_attempts_total", outcome="reconciled") >= 1, 5,
             "the reconcile after A's refused PUT")
    wait_for(lambda: not any(c["status"] is None for c in sim.calls), 5, "no call in flight")
    code, d = gate_json(wg, w)
    assert code == 200 and d["identity"] == {"hash": hb, "created_timestamp": tb, "acknowledged": True}, d
    j = wg.identity(w)
    assert j["identity"]["state"] == "acknowledged", j
    assert not any(a["hash"] == ha and a["result"] == "acknowledged" for a in j["acks"]), j["acks"]
    assert [c["body"]["hash"] for c in puts(sim, w)] == [ha, hb], puts(sim, w)


def test_duplicate_webhook_acknowledged_once(procs):
    r, sim, wg = procs.stack()
    w, h, t = new_user(sim, "DuPe000001=")
    sim.delay(300, count=1, path_prefix=put_path(w), method="PUT")
    payload = identity_change(w, h, t)
    answers = [wg.webhook_ok(payload) for _ in range(3)]
    assert [a["duplicates"] for a in answers] == [0, 1, 1], answers
    wait_acked(wg, w, h, sim=sim)
    assert wg.webhook_ok(payload)["duplicates"] == 1
    assert r.client().zscore(QUEUE, w) is None
    p = puts(sim, w)
    assert len(p) == 1, p
    assert sim.get_identity(w)["put_count"] == 1


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("outage", ["503", "sim_down"])
def test_waba_outage_then_recovery(procs, outage):
    r, sim, wg = procs.stack()
    w, h, t = new_user(sim, "OuTaGe0001=")
    if outage == "503":
        sim.fail(count=4, status=503, path_prefix=put_path(w), method="PUT")
    else:
        sim.stop()
    wg.webhook_ok(identity_change(w, h, t))

    def retrying():
        items = {i["wa_id"]: i for i in wg.identities("pending")}
        it = items.get(w)
        return it if it and it["attempts"] >= 2 and it["last_error"] else None
    it = wait_for(retrying, 10, "two failed attempts listed as pending")
    assert it["state"] == "pending" and it["acknowledged"] is False, it
    if outage == "503":
        assert "503" in it["last_error"], it
    assert gate_json(wg, w)[0] == 423
    if outage == "sim_down":
        sim.start()                  # the same port again

    j = wait_acked(wg, w, h, timeout=15, sim=sim)
    assert j["identity"]["attempts"] > 1, j
    assert gate_json(wg, w)[0] == 200
    ok = [c for c in puts(sim, w) if c["status"] == 200]
    assert len(ok) == 1 and ok[0]["body"] == {"hash": h}, puts(sim, w)
    if outage == "503":
        assert len(puts(sim, w)) == 5, [c["status"] for c in puts(sim, w)]
    assert wg.metric("waguard_ack_attempts_total", outcome="retry") > 0
    assert wg.metric("waguard_ack_attempts_total", outcome="ok") >= 1
    retries = [a for a in j["acks"] if a["result"] == "retry"]
    assert retries, j["acks"]
    # Growing delays: with base 50 ms the gaps between failed PUTs never shrink below half
    # the base, and the retry after four failures waited at least 200 ms (400 ms * [1/2, 1]).
    if outage == "503":
        times = [c["time"] for c in puts(sim, w)]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps[-1] >= 0.18, gaps


def test_reconcile_records_newer_hash_and_acknowledges_it(procs):
    r, sim, wg = procs.stack()
    w, ha, hb = new_wa_id(), "OlDhAsH001=", "NeWhAsH001="
    ta = t_old()
    tb = ta + 100
    sim.set_identity(w, ha, ta * 1000)
    sim.set_identity(w, hb, tb * 1000)        # the WABA client already knows a newer one
    wg.webhook_ok(identity_change(w, ha, ta))
    j = wait_acked(wg, w, hb, sim=sim)
    assert j["identity"]["created_timestamp"] == tb, j
    p = puts(sim, w)
    assert [c["body"]["hash"] for c in p] == [ha, hb], [(c["body"], c["status"]) for c in p]
    assert p[0]["status"] == 400 and p[1]["status"] == 200, p
    gets = sim.calls_matching(method="GET", path=put_path(w))
    assert len(gets) >= 1
    assert any(x.get("hash") == hb for x in j["history"]), j["history"]
    assert wg.metric("waguard_ack_attempts_total", outcome="reconciled") >= 1
    code, d = gate_json(wg, w)
    assert code == 200 and d["identity"]["hash"] == hb, d


def test_reconcile_already_acknowledged_upstream(procs):
    r, sim, wg = procs.stack()
    w, h, t = new_user(sim, "AlReAdY001=", acknowledged=True)
    sim.fail(count=1, status=400, path_prefix=put_path(w), method="PUT")
    wg.webhook_ok(identity_change(w, h, t))
    wait_acked(wg, w, h, sim=sim)
    assert len(puts(sim, w)) == 1
    assert wg.metric("waguard_ack_attempts_total", outcome="reconciled") >= 1
    assert gate_json(wg, w)[0] == 200


def test_unknown_to_waba_client_is_parked_failed(procs):
    r, sim, wg = procs.stack()
    w, h, t = new_wa_id(), "NoSuChUsEr=", t_old()
    wg.webhook_ok(identity_change(w, h, t))      # the simulator has no identity: 404

    def failed():
        j = wg.identity(w)
        return j if j["identity"]["state"] == "failed" else None
    j = wait_for(failed, 10, "state failed")
    assert j["identity"]["acknowledged"] is False and j["identity"].get("last_error"), j
    assert "404" in j["identity"]["last_error"], j
    assert any(a["result"] == "failed" for a in j["acks"]), j["acks"]
    lst = {i["wa_id"]: i for i in wg.identities("failed")}
    assert w in lst and lst[w]["state"] == "failed" and lst[w]["last_error"], lst
    assert w not in {i["wa_id"] for i in wg.identities("pending")}
    m = wg.metrics()
    assert metric_value(m, "waguard_identities_failed") >= 1
    assert metric_value(m, "waguard_ack_attempts_total", outcome="failed") >= 1
    assert gate_json(wg, w)[0] == 423
    assert r.client().zscore(QUEUE, w) is None
    assert len(puts(sim, w)) == 1

    # The operator fixes the WABA side and asks again: acknowledged.
    sim.set_identity(w, h, t * 1000)
    assert wg.ack_now(w).status_code == 202
    wait_acked(wg, w, h, sim=sim)
    assert w not in {i["wa_id"] for i in wg.identities("failed")}
    assert wg.metric("waguard_identities_failed") == 0


def test_a_new_hash_takes_a_failed_identity_out_of_the_failed_list(procs):
    """An identity whose acknowledgement was given up waits again when a new hash arrives:
    it leaves the failed index for the pending one (the library skips the index commands
    a state does not need, so this pins that failed -> pending still moves it)."""
    r, sim, wg = procs.stack()
    w, t = world_wa_id("PH"), t_old()
    wg.webhook_ok(identity_change(w, "NoSuChUsEr=", t))      # the simulator has no identity: 404
    wait_for(lambda: wg.identity(w)["identity"]["state"] == "failed", 10, "state failed")
    assert w in {i["wa_id"] for i in wg.identities("failed")}
    # the next PUT for this user is held for two seconds: the new hash stays pending meanwhile
    sim.delay(2000, count=5, path_prefix="/v1/contacts/%s" % w)
    wg.webhook_ok(identity_change(w, "Bm5ld0hhc2g=", t + 60))
    j = wg.identity(w)
    assert j["identity"]["state"] == "pending" and j["identity"]["hash"] == "Bm5ld0hhc2g=", j
    assert w not in {i["wa_id"] for i in wg.identities("failed")}
    assert w in {i["wa_id"] for i in wg.identities("pending")}
    assert wg.metric("waguard_identities_failed") == 0
    assert gate_json(wg, w)[0] == 423


# --------------------------------------------------------------------------- crashes

def test_kill9_during_put_then_restart_finishes_after_lease(procs):
    r, sim, wg = procs.stack()
    w, h, t = new_user(sim, "KiLlNiNe01=")
    sim.delay(3000, count=1, path_prefix=put_path(w), method="PUT")
    sent_at = time.time()             # the claim, and so its lease, starts after this
    wg.webhook_ok(identity_change(w, h, t))
    first = sim.wait_for_calls(1, method="PUT", path=put_path(w), answered=False, timeout=5)[0]
    wg.kill(signal.SIGKILL)
    assert r.client().zscore(QUEUE, w) is not None, "the claimed work is not in the queue"

    wg2 = procs.daemon(r, sim)
    j = wait_acked(wg2, w, h, timeout=10, sim=sim)
    ok = [c for c in puts(sim, w) if c["status"] == 200 and c["seq"] != first["seq"]]
    assert ok, puts(sim, w)
    waited = ok[0]["time"] - sent_at
    assert waited >= 1.95, "retaken %.2fs after the webhook, before the 2 s lease ran out" % waited
    assert j["identity"]["attempts"] >= 2, j
    assert gate_json(wg2, w)[0] == 200


def test_two_instances_one_killed_all_acknowledged(procs):
    r = procs.redis()
    sim = procs.sim()
    over = {"upstream": {"max_in_flight": "8"}}
    wg1 = procs.daemon(r, sim, overrides=over)
    wg2 = procs.daemon(r, sim, overrides=over)
    sim.delay(150, count=-1, path_prefix="/v1/contacts/", method="PUT")
    n = 50
    users = [new_wa_id() for _ in range(n)]
    t = t_old()
    newest = {}
    second_at = {}             # wa_id -> time the second change was sent
    for i, w in enumerate(users):
        h = "H1-%02d-AAAAAAA=" % i
        sim.set_identity(w, h, t * 1000)
        newest[w] = h
        (wg1 if i % 2 == 0 else wg2).webhook_ok(identity_change(w, h, t))
    # A second change for every fifth user while the first acknowledgements are under way.
    for i, w in enumerate(users[::5]):
        h = "H2-%02d-BBBBBBB=" % i
        sim.set_identity(w, h, (t + 30) * 1000)
        second_at[w] = time.time()
        newest[w] = h
        (wg2 if i % 2 == 0 else wg1).webhook_ok(identity_change(w, h, t + 30))
    wait_for(lambda: len([c for c in puts(sim) if c["status"] is not None]) >= 10, 10,
             "10 answered PUTs")
    wg1.kill(signal.SIGKILL)
    killed_at = time.time()

    def all_done():
        return not wg2.identities("pending")
    wait_for(all_done, 25, "no identity pending",
             diag=lambda: wg2.identities("pending")[:5])
    c = r.client()
    for w in users:
        hh = c.hgetall(wg2.user_key(w))
        assert hh.get("id_hash") == newest[w] and hh.get("id_ack") == "1", (w, hh)
        s = sim.get_identity(w)
        assert s["hash"] == newest[w] and s["acknowledged"] is True, (w, s)
    assert c.zcard(QUEUE) == 0
    assert wg2.identities("failed") == []

    by_user = {}
    for call in puts(sim):
        by_user.setdefault(call["path"].split("/")[3], []).append(call)
    problems = []
    overlaps = []
    for w, calls in by_user.items():
        hashes = [x["body"]["hash"] for x in calls]
        for x in calls:
            hsh = x["body"]["hash"]
            if hsh.startswith("H1-") and w in second_at and x["time"] > second_at[w] + 0.5:
                problems.append("%s: PUT of the old %s %.2fs after the newer hash was recorded"
                                % (w, hsh, x["time"] - second_at[w]))
        if w in second_at and newest[w] in hashes:
            first_new = hashes.index(newest[w])
            if any(hh != newest[w] for hh in hashes[first_new:]):
                problems.append("%s: an older hash PUT after the newest: %r" % (w, hashes))
        for a in calls:
            for b in calls:
                if a["seq"] < b["seq"] and a["body"] != b["body"] and a["duration_ms"] is not None \
                        and b["time"] < a["time"] + a["duration_ms"] / 1000.0:
                    overlaps.append((w, a["body"]["hash"], b["body"]["hash"]))
    assert not problems, problems
    # The kill interrupted work (PUTs still waiting for their answer), and that work was taken
    # over once its lease ran out.
    cut = [x for x in puts(sim) if x["time"] < killed_at
           and x["time"] + (x["duration_ms"] or 0) / 1000.0 > killed_at]
    assert cut, "nothing was in flight when the instance was killed: the test proved nothing"
    retaken = [x for x in cut if any(y["path"] == x["path"] and y["time"] > killed_at
                                     for y in puts(sim))]
    assert retaken, "the killed instance's work was never PUT again"
    print("concurrent PUTs of different hashes for one user: %d %r" % (len(overlaps), overlaps[:5]))


# --------------------------------------------------------------------------- login tokens

def test_expired_token_one_login_for_many_acks_in_flight(procs):
    r, sim, wg = procs.stack()
    t = t_old()
    w0 = new_wa_id()
    sim.set_identity(w0, "FiRsT00001=", t * 1000)
    wg.webhook_ok(identity_change(w0, "FiRsT00001=", t))
    wait_acked(wg, w0, "FiRsT00001=", sim=sim)
    assert sim.state()["login_count"] == 1

    sim.expire_tokens()
    users = [new_wa_id() for _ in range(5)]
    for i, w in enumerate(users):
        sim.set_identity(w, "ExP%07d=" % i, t * 1000)
    # all five PUTs are in flight together with the stale token, then refused
    sim.delay(200, count=5, path_prefix="/v1/contacts/", method="PUT")
    wg.webhook_ok(body(messages=[identity_change_msg(w, "ExP%07d=" % i, t) for i, w in enumerate(users)]))
    for i, w in enumerate(users):
        wait_acked(wg, w, "ExP%07d=" % i, sim=sim)
    st = sim.state()
    assert st["login_count"] == 2, "expected exactly one new login, got %d" % (st["login_count"] - 1)
    refused = [c for c in puts(sim) if c["status"] == 401]
    assert 1 <= len(refused) <= 5, [c["status"] for c in puts(sim)]
    new_login = logins(sim)[-1]
    for w in users:
        ok = [c for c in puts(sim, w) if c["status"] == 200]
        assert len(ok) == 1 and ok[0]["seq"] > new_login["seq"], puts(sim, w)


def test_token_renewed_from_expiry_without_401(procs):
    r, sim, wg = procs.stack(sim_options=dict(token_ttl_s=2))
    t = t_old()
    w0, w1 = new_wa_id(), new_wa_id()
    sim.set_identity(w0, "TtL0000000=", t * 1000)
    sim.set_identity(w1, "TtL0000001=", t * 1000)
    wg.webhook_ok(identity_change(w0, "TtL0000000=", t))
    wait_acked(wg, w0, "TtL0000000=", sim=sim)
    with sim.lock:
        expiry = max(sim.tokens.values())
    # Let the clock pass the token's expiry (announced in expires_after).
    wait_for(lambda: time.time() > expiry + 0.3, 5, "the token's expiry to pass")
    wg.webhook_ok(identity_change(w1, "TtL0000001=", t))
    wait_acked(wg, w1, "TtL0000001=", sim=sim)
    assert sim.state()["login_count"] == 2
    assert [c for c in puts(sim) if c["status"] == 401] == [], \
        "waguard used a token past its expires_after: %r" % [(c["path"], c["status"]) for c in puts(sim)]


# --------------------------------------------------------------------------- TLS

def test_https_with_ca_file(procs, tmp_path):
    ca, crt, key = make_test_ca(str(tmp_path / "pki"))
    r, sim, wg = procs.stack(sim_options=dict(tls_cert=crt, tls_key=key),
                             overrides={"upstream": {"ca_file": ca}})
    assert sim.url.startswith("https://127.0.0.1:")
    w, h, t = new_user(sim, "TlS0000001=")
    wg.webhook_ok(identity_change(w, h, t))
    wait_acked(wg, w, h, sim=sim)
    assert len(puts(sim, w)) == 1


@pytest.mark.parametrize("kind", ["untrusted", "wrong_host"])
def test_https_wrong_certificate_refused(procs, tmp_path, kind):
    pki = str(tmp_path / "pki")
    ca, _, _ = make_test_ca(pki)
    crt, key = make_wrong_cert(pki) if kind == "untrusted" else make_wrong_host_cert(pki)
    r, sim, wg = procs.stack(sim_options=dict(tls_cert=crt, tls_key=key),
                             overrides={"upstream": {"ca_file": ca}})
    w, h, t = new_user(sim, "BaDcErT001=")
    wg.webhook_ok(identity_change(w, h, t))

    def errored():
        j = wg.identity(w)
        return j if j["identity"].get("last_error") and j["identity"]["attempts"] >= 2 else None
    j = wait_for(errored, 10, "a failed attempt with last_error")
    err = j["identity"]["last_error"].lower()
    assert any(s in err for s in ("certificate", "tls", "ssl", "verify", "x509")), err
    assert j["identity"]["state"] == "pending" and j["identity"]["acknowledged"] is False, j
    assert sim.calls == [], "requests got through a refused certificate: %r" % sim.calls
    assert sim.state()["tls_failures"] >= 1
    assert gate_json(wg, w)[0] == 423


# --------------------------------------------------------------------------- Redis restart

def test_redis_restart_with_appendonly_keeps_queued_work(procs):
    r, sim, wg = procs.stack(appendonly=True)
    w, h, t = new_user(sim, "AoF0000001=")
    sim.fail(count=-1, status=503, path_prefix=put_path(w), method="PUT")
    wg.webhook_ok(identity_change(w, h, t))
    sim.wait_for_calls(1, method="PUT", path=put_path(w), timeout=5)
    assert r.client().zscore(QUEUE, w) is not None

    r.stop()                                   # SIGTERM: the AOF is complete
    wait_for(lambda: wg.get("/readyz").status_code == 503, 10, "/readyz 503 while Redis is down")
    r.start()                                  # same port, same dir: the AOF is replayed
    assert r.client().hget(wg.user_key(w), "id_hash") == h
    wait_for(lambda: wg.get("/readyz").status_code == 200, 15, "/readyz 200 again")
    assert gate_json(wg, w)[0] == 423
    sim.clear_rules()
    wait_acked(wg, w, h, timeout=10, sim=sim)
    assert gate_json(wg, w)[0] == 200
    assert wg.alive()
