"""Redis memory grows with users, not with webhooks (issue 12): what the duplicate check keeps
and what it recognises.  The byte figures are in `make bench` (bench/memory.py); these tests
check the shape: no key per message, duplicates still recognised within the horizon, and an
item past the horizon applied again without harm."""
from helpers import (body, identity_change, inbound_text, inbound_text_msg, new_msg_id, new_wa_id,
                     now_s, number_changed, status_item, statuses, world_wa_id)

T0 = 1602535238


def answer(wg, payload):
    r = wg.webhook(payload)
    assert r.status_code == 200, r.text
    return r.json()


def test_known_users_webhooks_add_no_keys(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    users = [new_wa_id() for _ in range(5)]
    for w in users:
        answer(wg, inbound_text(w))
        answer(wg, statuses(status_item(new_msg_id(), w, "sent")))
    keys = c.dbsize()
    events = c.xlen("waguard:events")
    for i in range(40):
        w = users[i % len(users)]
        mid = new_msg_id()
        for st in ("sent", "delivered", "read"):
            assert answer(wg, statuses(status_item(mid, w, st)))["items"] == 1
        assert answer(wg, inbound_text(w))["items"] == 1
    # 160 webhooks about known users: not one key more; every item is in the events stream.
    assert c.dbsize() == keys, sorted(k for k in c.keys("*"))[:20]
    assert c.xlen("waguard:events") == events + 160
    assert not c.keys("waguard:seen:msg:*") and not c.keys("waguard:seen:st:*")
    for w in users:
        ttl = c.ttl("waguard:seen:{%s}" % w)
        assert 7 * 86400 < ttl <= 8 * 86400, ttl


def test_the_rings_expiry_is_written_once_a_day(waguard_factory, private_redis):
    """The statuses' duplicate ring lives at least a week after a user's last item, and the
    expiry is written by the day's first item only (field d holds that day): the items after
    it cost no EXPIRE of their own.  Inbound messages write none: their ring is the record's."""
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    users = [world_wa_id(cc) for cc in ("BR", "IN", "GB", "US")]

    def expires():
        return c.info("commandstats").get("cmdstat_expire", {}).get("calls", 0)

    for w in users:
        answer(wg, inbound_text(w))
    assert expires() == 0 and not c.keys("waguard:seen:*")
    for w in users:
        answer(wg, statuses(status_item(new_msg_id(), w, "sent")))
    first = expires()
    assert first == len(users)
    for i in range(3):
        for w in users:
            answer(wg, inbound_text(w))
            answer(wg, statuses(status_item(new_msg_id(), w, "delivered")))
    assert expires() == first               # the same day: not written again
    today = c.hget("waguard:seen:{%s}" % users[0], "d")
    assert today and int(today) == int(c.time()[0]) // 86400
    for w in users:
        assert 7 * 86400 < c.ttl("waguard:seen:{%s}" % w) <= 8 * 86400
    # a ring last written on an earlier day: the next item writes the expiry again
    k = "waguard:seen:{%s}" % users[1]
    c.hset(k, "d", int(today) - 1)
    c.expire(k, 3600)
    before = expires()
    assert answer(wg, statuses(status_item(new_msg_id(), users[1], "read")))["items"] == 1
    assert expires() == before + 1
    assert c.hget(k, "d") == today
    assert 7 * 86400 < c.ttl(k) <= 8 * 86400


def test_the_inbound_ring_is_a_text_field_of_the_record(waguard_factory, private_redis):
    """An inbound message's fingerprint is kept in the sender's record (seen_in), which the
    window's write updates anyway: no key of its own, text any client can read (8 characters
    a message, 8 messages), and the record stays a listpack."""
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    for cc in ("NG", "PH", "DE", "MX"):
        w = world_wa_id(cc)
        k = "waguard:user:{%s}" % w
        mids = [new_msg_id() for _ in range(10)]
        for i, mid in enumerate(mids):
            assert answer(wg, inbound_text(w, msg_id=mid))["items"] == 1
            ring = c.hget(k, "seen_in")                 # decodes: printable ASCII
            assert len(ring) == 8 * min(i + 1, 8), ring
            assert all(ch.isalnum() or ch in "+/" for ch in ring), ring
        assert c.object("encoding", k) == "listpack"
        assert not c.exists("waguard:seen:{%s}" % w)
        assert c.hgetall(k)                             # the whole record reads as text
        n = c.xlen("waguard:events")
        for mid in mids[2:]:                            # the 8 newest: repeats
            j = answer(wg, inbound_text(w, msg_id=mid))
            assert j["duplicates"] == 1 and j["items"] == 0, j
        assert c.xlen("waguard:events") == n
        j = answer(wg, inbound_text(w, msg_id=mids[0]))  # past the horizon: applied again
        assert j["duplicates"] == 0 and j["items"] == 1, j


def test_the_inbound_ring_goes_with_a_user_id_into_its_wa_id_record(waguard_factory, private_redis):
    """Cloud, 2026: a user first known by a user id alone, then seen with its wa_id: the
    id's record is merged into the wa_id's, and a message the id's record had seen is still
    a repeat when it comes again with the wa_id."""
    from helpers import cloud_inbound
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    for cc in ("BR", "IN"):
        w, uid = world_wa_id(cc), cc + ".1" + new_wa_id()[-12:]
        mid = new_msg_id("wamid.")
        assert answer(wg, cloud_inbound(uid=uid, mid=mid))["items"] == 1
        assert c.hget("waguard:user:{%s}" % uid, "seen_in")
        answer(wg, cloud_inbound(w=w, uid=uid))            # linked: the records merge
        assert not c.exists("waguard:user:{%s}" % uid)
        assert len(c.hget("waguard:user:{%s}" % w, "seen_in")) == 16
        j = answer(wg, cloud_inbound(w=w, uid=uid, mid=mid))
        assert j["duplicates"] == 1, j


def test_duplicates_within_the_horizon(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    w = new_wa_id()
    first = inbound_text(w, msg_id=new_msg_id())
    answer(wg, first)
    sent = statuses(status_item(new_msg_id(), w, "sent"))
    answer(wg, sent)
    # 7 more of each kind: the first ones are still among the user's 8 newest.
    for _ in range(7):
        answer(wg, inbound_text(w))
        answer(wg, statuses(status_item(new_msg_id(), w, "read")))
    n = c.xlen("waguard:events")
    assert answer(wg, first)["duplicates"] == 1
    assert answer(wg, sent)["duplicates"] == 1
    assert c.xlen("waguard:events") == n
    # A whole body sent again, and a repeat inside one body.
    m = inbound_text_msg(w)
    assert answer(wg, body(messages=[m, dict(m)]))["duplicates"] == 1
    assert answer(wg, body(messages=[m]))["duplicates"] == 1


def test_past_the_horizon_applied_again_without_harm(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    w = new_wa_id()
    t = now_s() - 60
    old = inbound_text(w, msg_id=new_msg_id(), ts=t)
    answer(wg, old)
    for i in range(8):
        answer(wg, inbound_text(w, ts=t + 1 + i))
    last_in = c.hget("waguard:user:{%s}" % w, "last_in")
    # Out of the user's 8 newest: counted as new, written again; the inbound time stays.
    j = answer(wg, old)
    assert j["duplicates"] == 0 and j["items"] == 1, j
    assert c.hget("waguard:user:{%s}" % w, "last_in") == last_in


def test_identity_repeats_recognised_by_history(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    w = new_wa_id()
    a = identity_change(w, "MEMA=", T0)
    answer(wg, a)
    answer(wg, identity_change(w, "MEMB=", T0 + 10))
    # The older notification again, after a newer one: a duplicate, not "late".
    j = answer(wg, a)
    assert j["duplicates"] == 1 and j["late"] == 0, j
    hist = wg.admin_get("/v1/identities/" + w).json()["history"]
    assert [h["hash"] for h in hist] == ["MEMB=", "MEMA="]
    assert all(h.get("message_id") for h in hist), hist


def test_number_change_repeat_does_not_return(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    old, new = new_wa_id(), new_wa_id()
    t = now_s() - 100
    change = number_changed(old, new, ts=t)
    answer(wg, change)
    assert c.hget("waguard:user:{%s}" % old, "moved_to") == new
    answer(wg, inbound_text(old, ts=t + 50))        # the number is in use again
    assert c.hget("waguard:user:{%s}" % old, "moved_to") is None
    j = answer(wg, change)                          # the WABA client's retry, late
    assert j["duplicates"] == 1, j
    assert c.hget("waguard:user:{%s}" % old, "moved_to") is None


def test_old_message_past_the_horizon_does_not_bring_back_its_hash(waguard_factory, private_redis):
    """An identity carried by a message, with a time ahead of the clock (a skewed WABA host):
    the arrival time stands in for it.  A late copy of that message, delivered again after the
    user's ring has moved on, must not make its (superseded) hash the newest again."""
    from helpers import identity_obj
    wg = waguard_factory(redis=private_redis, overrides={"identity": {"ack": "manual"}})
    w = new_wa_id()
    now = now_s()
    old = inbound_text(w, msg_id=new_msg_id(), ts=now - 600,
                       identity=identity_obj("SKEW1=", (now + 86400) * 1000, acknowledged=True))
    answer(wg, old)
    answer(wg, identity_change(w, "SKEW2=", now - 300))
    for i in range(9):
        answer(wg, inbound_text(w, ts=now - 200 + i))
    j = answer(wg, old)
    assert j["duplicates"] == 0, j                  # past the horizon: not recognised as a copy
    d = wg.gate(w, type="template").json()
    assert d["identity"]["hash"] == "SKEW2=" and d["allowed"] is False, d


def test_a_message_twice_in_one_body_applies_its_identity_once(waguard_factory, private_redis):
    """first_seen = hold: the message's 'acknowledged' does not open a first hash; its copy in
    the same body is a duplicate, and so is the identity it carries."""
    from helpers import identity_obj
    wg = waguard_factory(redis=private_redis,
                         overrides={"identity": {"ack": "manual", "first_seen": "hold"}})
    w = new_wa_id()
    m = inbound_text_msg(w, ts=now_s() - 60,
                         identity=identity_obj("HOLD1=", (now_s() - 7200) * 1000, acknowledged=True))
    assert answer(wg, body(messages=[m, dict(m)]))["duplicates"] == 1
    d = wg.gate(w, type="template").json()
    assert d["identity"]["hash"] == "HOLD1=" and d["identity"]["acknowledged"] is False, d
