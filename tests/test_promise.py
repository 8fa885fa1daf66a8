"""The promise, tested at random: no send is allowed to a user whose newest identity is not
acknowledged, who is blocked, or (for anything but a template) who has not written in the
last 24 hours.

About 60 users from ten countries (several per country; Cloud users whose user id is linked
to their wa_id; users first known by their user id alone and linked later; Philippine wa_ids
that are also dialable US numbers; users whose WABA host dates identities in the future) go
through rounds of random events sent to one of two waguard instances on one Redis, several at
once: identity changes delivered in random order and more than once, acknowledgements of the
newest hash and of older ones (by the WABA client in a message, or by a forwarded PUT),
inbound messages, Cloud webhooks, contact checks, blocks.  After every round the gate is asked
about random forms of random users (wa_id, "+", "00", dialled, mapped, national digits, user
id) from either instance, one at a time, in batches and as sends, and every answer is checked
against a model of what waguard has been told:

  * a violation: the answer allows while a user it could name (the rule of "Who a recipient
    is": bare digits are a wa_id and a number dialled from home_country_code, a dialled number
    also names the wa_id a contact check mapped it to, a linked user id names its wa_id) has an
    unacknowledged newest identity, a block, or no inbound message in 24 h for a non-template;
  * a mismatch: the reasons, the users considered, the identity reported or the user named
    differ from the model's (checked where the model is exact).

Runs for PROMISE_SECONDS (default 30 s, enough to reach every event kind) of events; PROMISE_SEED replays one sequence of
events; PROMISE_FIRST_SEEN = trust (default), hold or random sets [identity] first_seen.  Prints
`promise: N decisions checked, V violations, …` (also junit suite properties).  A violation or
mismatch fails the test with the answer, the model's view and each user's event history.

Two bugs it found have deterministic tests of their own at the end."""
import json
import os
import random
import re
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from daemon import ADMIN_TOKEN, API_TOKEN, WEBHOOK_TOKEN
from helpers import (WORLD, assert_decision, contact_result, contacts_callback, identity_change_msg,
                     identity_obj, inbound_text_msg, wait_for, world_dialled)

HOME_CC = "1"
DAY = 86400
RX = 10 ** 14          # model time of an identity time waguard cannot believe: after all real ones
TEMPLATE = {"namespace": "ns", "name": "hello", "language": {"policy": "deterministic", "code": "en"}}
# [hold] authentication: the held template as callers may write it
HELD_FORMS = ("otp_login", "OTP_LOGIN", " otp_login ", "Otp_Login")
UID = re.compile(r"^[A-Z]{2}\.[A-Za-z0-9]{1,128}$")
ALNUM = string.ascii_letters + string.digits


# ----------------------------------------------------------------------------- the rule

def is_uid(x):
    return bool(UID.match(x))


def _digits(x):
    """(plus, digits with a "(0)" kept as 0, bracketed-0 position or None), None when not
    a phone number's characters."""
    s = x
    plus = s.startswith("+")
    if plus:
        s = s[1:]
    if re.search(r"[^0-9 ()./-]", s) or "/" in s:
        return None
    z = s.find("(0)") if plus else -1
    before = len(re.sub(r"\D", "", s[:z])) if z > 0 else None
    d = re.sub(r"\D", "", s)
    return plus, d, before


def _e164(d):
    return d if d and 7 <= len(d) <= 15 and d[0] != "0" else None


def dial(x):
    """The seed's dialling rule (README, "Who a recipient is"): a leading '+' carries the
    country code, otherwise home_country_code goes in front.  The contact-check mapping's
    key.  None: not a number."""
    p = _digits(x)
    if not p or not p[1]:
        return None
    plus, d, _ = p
    return _e164(d if plus else HOME_CC + d)


def readings(x):
    """Every number x can be read as: the seed's, then the ones ITU-T E.164 describes
    (trunk 0, international prefix 00, "(0)" after the country code, the home country code
    written without '+'), each only a further user to refuse for."""
    p = _digits(x)
    if not p or not p[1]:
        return []
    plus, d, before = p
    out = [dial(x)]
    if plus and before is not None:
        out.append(_e164(d[:before] + d[before + 1:]))
    elif not plus and d.startswith("00"):
        out.append(_e164(d[2:]))
    elif not plus and d.startswith("0"):
        out.append(_e164(HOME_CC + d[1:]))
    elif not plus and d.startswith(HOME_CC):
        out.append(_e164(d))
    res = []
    for r in out:
        if r and r not in res:
            res.append(r)
    return res


def forms_of(x):
    """What an input can be: [("i", a user id)], or numbers [("d", digits)]: bare digits as
    they are first, then every reading."""
    if is_uid(x):
        return [("i", x)]
    if x != x.strip():
        return []
    out = []
    if x.isdigit() and 7 <= len(x) <= 15 and x[0] != "0":
        out.append(("d", x))
    for r in readings(x):
        if ("d", r) not in out:
            out.append(("d", r))
    return out


# ----------------------------------------------------------------------------- the model

class Rec:
    """What waguard was told about one record (a wa_id, or a user id not linked yet), in the
    terms of src/lua/identity.lua's state machine."""

    def __init__(self):
        self.obs = {}           # hash -> the time it is ordered by (ms; RX+n: not believed)
        self.seen = set()       # every hash observed, recorded or late (I1)
        self.acked = set()
        self.unknown = False    # hash_unknown: WhatsApp refused a send for identity
        self.nohash = False     # pending without any hash (a user id change)
        self.changed = False    # an identity change on record: [hold] holds
        self.blocked = False
        self.last_in = 0        # s
        self.moved = None       # (new number, when (s)): the user left this number
        self.reack = None       # a hash to acknowledge again: an old message's flag does not
        self.inexact = False    # merged from two records that both held one hash

    def newest(self):
        if not self.obs:
            return None
        return max(self.obs.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def pending(self):
        """Not acknowledged: the gate is closed for identity (I4)."""
        h = self.newest()
        return self.unknown or self.nohash or (h is not None and h not in self.acked)

    def reasons(self, type_, now, held=False):
        r = set()
        if self.pending():
            r.add("identity_unacknowledged")
        if self.blocked:
            r.add("blocked")
        if type_ not in ("template", "hsm") and (not self.last_in or now - self.last_in > DAY):
            r.add("outside_session_window")
        if self.moved:
            r.add("number_changed")
        if held and self.changed:
            r.add("identity_recently_changed")
        return r

    def take(self, other):
        """other's identity and record merged in (users.merge, identity.moved)."""
        if set(other.obs) & set(self.obs) or other.inexact:
            self.inexact = True
        a, b = other.newest(), self.newest()
        if a and b and a != b and other.obs[a] == self.obs[b]:
            self.inexact = True                         # two newest as old as each other
        for h, t in other.obs.items():
            self.obs.setdefault(h, t)
        self.seen |= other.seen
        self.acked |= other.acked
        self.unknown = self.unknown or other.unknown
        self.nohash = (self.nohash or other.nohash) and not self.obs
        self.changed = self.changed or other.changed
        self.reack = self.reack or other.reack
        self.blocked = self.blocked or other.blocked
        self.last_in = max(self.last_in, other.last_in)

    def reacknowledge(self):
        """A number or user id change: an acknowledged identity waits again."""
        h = self.newest()
        if self.pending():
            return
        self.changed = True
        if h is None:
            self.nohash = True
        else:
            self.acked.discard(h)
            self.reack = h

    def describe(self):
        h = self.newest()
        return ("newest=%s acked=%s unknown=%s nohash=%s changed=%s blocked=%s moved=%s last_in=%s hashes=%s%s"
                % (h, h in self.acked if h else None, self.unknown, self.nohash, self.changed, self.blocked,
                   self.moved, ("%ds ago" % (time.time() - self.last_in)) if self.last_in else "never",
                   sorted(self.obs, key=lambda k: self.obs[k]), " (inexact)" if self.inexact else ""))


class Model:
    def __init__(self, first_seen="trust"):
        self.first_seen = first_seen
        self.recs = {}          # canonical name -> Rec (a record exists in Redis)
        self.alias = {}         # user id -> the name it points to (a record, or another id)
        self.retired = {}       # user id -> the id that replaced it
        self.contacts = {}      # normalised dialled number -> wa_id (a valid contact check)
        self.mids = set()
        self.outcomes = {}      # what became of identity observations
        self.merged = 0

    def canon(self, x):
        for _ in range(8):
            if not (x and is_uid(x)) or x not in self.alias or self.alias[x] == x:
                return x
            x = self.alias[x]
        return x

    def rec(self, name):
        return self.recs.setdefault(name, Rec())

    def who(self, w, u=None):
        """The record an item names: a wa_id and a user id seen together are linked first."""
        if u and w and u != w:
            self.link(u, w)
        return self.canon(w or u)

    def link(self, u, w):
        cur = self.alias.get(u)
        if cur == w or (cur is not None and u in self.retired):
            return
        self.alias[u] = w
        rw = self.rec(w)
        if cur is None and u in self.recs:
            rw.take(self.recs.pop(u))
            self.merged += 1

    def observe(self, name, h, t, ack, src):
        """An identity observation (identity.observe); returns what became of it."""
        r = self.rec(name)
        if not r.obs:
            if h in r.seen:
                return "old"
            r.obs[h] = t
            r.seen.add(h)
            if r.unknown or r.nohash:                  # closed with no hash yet: filled in
                r.unknown = r.nohash = False
                r.changed = True
                if ack:
                    r.acked.add(h)
                return "newer"
            if self.first_seen == "trust" and (ack or src == "cloud"):
                r.acked.add(h)
            if src == "system":
                r.changed = True
            return "first"
        cur = r.newest()
        if h == cur:
            if r.unknown:
                return "known"                          # a copy of the old hash (I2)
            if ack and h not in r.acked and h != r.reack:
                r.acked.add(h)
                return "acknowledged"
            return "known"
        if h in r.seen:
            return "old"                                # I1
        r.seen.add(h)
        if (t, h) > (r.obs[cur], cur):
            r.obs[h] = t
            r.unknown = False
            r.reack = None
            r.changed = True
            if ack:
                r.acked.add(h)
            return "newer"
        if t == r.obs[cur]:                             # as old as the newest: asked again
            r.reacknowledge()
            return "tied"
        return "late"

    def candidates(self, x):
        """The records an input names, most likely first."""
        out = []
        for kind, key in forms_of(x):
            if kind == "d" and key in self.contacts:
                out.append(self.canon(self.contacts[key]))
            out.append(self.canon(key))
        seen, res = set(), []
        for c in out:
            if c not in seen:
                seen.add(c)
                res.append(c)
        return res

    def retired_in(self, x):
        """The new id when x is a retired user id."""
        return self.retired.get(x)

    def user_id_change(self, prev, new):
        """handlers.uid: the record prev names takes the new id; prev is retired."""
        target = self.canon(prev)
        if target == prev:
            r = self.recs.pop(prev, None)
            if r is not None:
                self.rec(new).take(r)
            target = new
        elif new != target:
            self.alias[new] = target
        self.retired[prev] = new
        if prev != target:
            self.alias[prev] = target
        self.retired.pop(new, None)
        self.rec(target).reacknowledge()

    def apply(self, op):
        """One operation of a delivered body (built beside the body by the generators)."""
        kind = op[0]
        if kind == "prof":
            self.rec(self.who(op[1], op[2]))
        elif kind == "msg":
            _, mid, subs = op
            if mid in self.mids:
                return
            self.mids.add(mid)
            for s in subs:
                if s[0] == "ref":
                    r = self.rec(self.who(s[1], s[2]))
                    if not r.unknown:
                        r.unknown = True
                        r.changed = True
                    continue
                if s[0] == "uid":
                    self.user_id_change(s[1], s[2])
                    continue
                name = self.who(s[1], s[2])
                if s[0] == "who":
                    continue
                if s[0] == "in":
                    r = self.rec(name)
                    r.last_in = max(r.last_in, s[3])
                    if r.moved and s[3] >= r.moved[1]:
                        r.moved = None
                else:
                    o = self.observe(name, s[3], s[4], s[5], s[6])
                    self.outcomes[o] = self.outcomes.get(o, 0) + 1
        elif kind == "num":
            _, old, new, t = op
            old = self.canon(old)
            existed = new in self.recs
            ro, rn = self.rec(old), self.rec(new)
            had = bool(ro.obs or ro.unknown or ro.nohash)
            rn.take(ro)
            if had:
                rn.reacknowledge()
            if not existed and not (had or rn.last_in or rn.blocked):
                del self.recs[new]             # nothing came along: no record of it
            last = ro.last_in
            # the old number keeps no identity (its hashes stay seen there)
            ro.obs, ro.acked, ro.unknown, ro.nohash, ro.changed = {}, set(), False, False, False
            if t >= last:
                ro.moved = (new, t)
            for u, w in list(self.alias.items()):
                if w == old and u not in self.retired:
                    self.alias[u] = new
        elif kind == "cc":
            self.contacts[op[1]] = op[2]
            self.rec(op[2])
        elif kind == "blk":
            _, x, b = op
            for i, c in enumerate(self.candidates(x)):
                if i == 0 or (b and c in self.recs):
                    self.rec(c).blocked = b
        elif kind in ("put", "adminack"):
            # a forwarded PUT (ok) acknowledges the newest hash unless its hash is not
            # known (I3); an operator's request has the worker fetch it first
            r = self.recs.get(self.canon(op[1]))
            if r is not None and r.newest() == op[2] and (kind == "adminack" or not r.unknown):
                r.acked.add(op[2])
                r.unknown = False
                r.reack = None
        else:
            raise AssertionError("unknown model operation %r" % (op,))


# ----------------------------------------------------------------------------- users

class User:
    def __init__(self, rng, label, country, wa, uid=None, kind="plain", group=None, now=0, changes=8):
        self.label, self.country, self.wa, self.uid, self.kind = label, country, wa, uid, kind
        self.group = group or label
        self.revealed = kind != "hidden"    # waguard may know the wa_id (hidden: user id only)
        self.linked = False
        times = sorted(rng.sample(range(now - 30 * DAY, now - 26 * 3600), changes))
        self.hashes = [("".join(rng.choice(ALNUM + "+/") for _ in range(rng.randint(8, 30))) + "=", c)
                       for c in times]
        self.sys_mid = ["wamid.%s.sys%d.%s" % (label, i, rng.randrange(10 ** 9)) for i in range(changes)]
        self.next = 0                       # the next hash in true order not delivered yet
        self.bodies = []                    # delivered webhook bodies, for duplicates
        self.history = []
        self.old_numbers = []               # numbers the user left (refused: number_changed)
        self.old_uids = []                  # user ids that were replaced (refused: number_changed)

    def hash_at(self, t):
        h = None
        for hh, c in self.hashes:
            if c <= t:
                h = hh
        return h

    def names(self):
        return [n for n in [self.wa, self.uid] + self.old_numbers + self.old_uids if n]

    def note(self, text):
        self.history.append(text)


def make_users(rng, now, changes):
    users = []
    used = set()

    def fresh_n():
        while True:
            n = rng.randrange(1, 10000)
            if n not in used:
                used.add(n)
                return n

    for country in sorted(WORLD):
        for i in range(5):
            w = WORLD[country][1] % fresh_n()
            users.append(User(rng, "%s%d" % (country, i), country, w, now=now, changes=changes))
    plain = [u for u in users]
    rng.shuffle(plain)
    for u in plain[:12]:                                    # Cloud users: wa_id and user id
        u.kind = "cloud"
        n = rng.choice([12, 20, 48, 49, 100, 128])       # user ids run to 128 characters
        u.uid = "%s.%s" % (u.country, "".join(rng.choice(ALNUM) for _ in range(n)))
    for u in plain[12:15]:                                  # a WABA host ahead of time
        u.kind = "skewed"
    for i in range(3):                                      # 63155512xx: PH wa_id, US dialled
        ph = "631555%04d" % fresh_n()
        g = "pair%d" % i
        users.append(User(rng, "PHs%d" % i, "PH", ph, group=g, now=now, changes=changes))
        users.append(User(rng, "USp%d" % i, "US", "1" + ph, group=g, now=now, changes=changes))
    for i in range(4):                                      # known by user id first
        country = rng.choice(sorted(WORLD))
        w = WORLD[country][1] % fresh_n()
        n = rng.choice([20, 64, 128])
        uid = "%s.%s" % (country, "".join(rng.choice(string.digits) for _ in range(n)))
        users.append(User(rng, "%sh%d" % (country, i), country, w, uid=uid, kind="hidden", now=now,
                          changes=changes))
    return users


# ----------------------------------------------------------------------------- bodies

def cloud_envelope(contacts=None, messages=None):
    # No metadata.phone_number_id: the windows and blocks are those of the one number the
    # On-Premises bodies are for too.
    value = {"messaging_product": "whatsapp"}
    if contacts:
        value["contacts"] = contacts
    if messages:
        value["messages"] = messages
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}


def onprem_envelope(contacts=None, messages=None):
    b = {}
    if contacts:
        b["contacts"] = contacts
    if messages:
        b["messages"] = messages
    return b


class Gen:
    """Random events for one user at a time: each is (requests, model operations, text)."""

    def __init__(self, rng, model, sim, now):
        self.rng, self.model, self.sim, self.now = rng, model, sim, now
        self.round = 0
        self.n = 0

    def mid(self, u, what):
        self.n += 1
        return "wamid.%s.%s%d" % (u.label, what, self.n)

    # how the user is named in a message: (cloud?, wa_id or None, user id or None)
    def naming(self, u):
        r = self.rng
        if u.uid and not u.revealed:
            return True, None, u.uid
        if u.uid and (not u.linked or r.random() < 0.5):
            if not u.linked:
                u.linked = True
                return True, u.wa, u.uid
            return True, (u.wa if r.random() < 0.6 else None), u.uid
        return False, u.wa, None

    def user_fields(self, cloud, w, uid):
        f = {}
        if w:
            f["from"] = w
        if cloud and uid:
            f["from_user_id"] = uid
        return f

    def identity_time(self, u, c):
        """(the time sent, the time the model orders it by)."""
        if u.kind == "skewed":
            ahead = (self.now + self.rng.randint(DAY, 300 * DAY)) * 1000 + self.rng.randrange(1000)
            return ahead, RX + self.round
        return c * 1000, c * 1000

    def system_msg(self, u, i, cloud, w, uid):
        h, c = u.hashes[i]
        sent_ms, t = self.identity_time(u, c)
        mid = u.sys_mid[i]
        if cloud:
            m = dict(self.user_fields(cloud, w, uid), id=mid, timestamp=str(sent_ms // 1000), type="system",
                     system={"type": "user_identity_changed", "identity": h, "body": "changed"})
        else:
            m = identity_change_msg(w, h, sent_ms // 1000, msg_id=mid,
                                    user_field=self.rng.choice(["customer", "user", None]))
        if self.rng.random() < 0.3:
            m["timestamp"] = int(m["timestamp"])
        op = ("msg", mid, [("id", w, uid if cloud else None, h, t, False, "system")])
        return m, op, "identity %d %s" % (i, h)

    def text_msg(self, u, cloud, w, uid, t_s, ident=None, key_hash=None):
        """An inbound text; ident: (hash, created time, model time, acknowledged)."""
        mid = self.mid(u, "in")
        m = dict(self.user_fields(cloud, w, uid), id=mid, timestamp=str(t_s), type="text",
                 text={"body": "hi"})
        u_ = uid if cloud else None
        subs = [("in", w, u_, t_s)]
        desc = "inbound %s" % ("%.1fh ago" % ((self.now - t_s) / 3600.0))
        if key_hash:
            subs.append(("id", w, u_, key_hash, t_s * 1000, False, "cloud"))
            desc += " key_hash %s" % key_hash
        if ident:
            h, sent_ms, t, ack = ident
            m["identity"] = identity_obj(h, sent_ms, ack)
            # the forms the WABA client may use: ms or s, number or string; "true" as a string
            f = self.rng.randrange(4)
            if f == 1:
                m["identity"]["created_timestamp"] = str(sent_ms)
            elif f == 2 and sent_ms % 1000 == 0:
                m["identity"]["created_timestamp"] = sent_ms // 1000
            if ack and self.rng.random() < 0.3:
                m["identity"]["acknowledged"] = "true"
            subs.append(("id", w, u_, h, t, ack, "message"))
            desc += " identity %s acknowledged=%s" % (h, ack)
        return m, ("msg", mid, subs), desc

    def recent(self):
        return self.now - self.rng.randint(120, 20 * 3600)

    def old(self):
        return self.now - self.rng.randint(26 * 3600, 25 * DAY)

    def webhook(self, u, cloud, contacts, messages, ops, desc):
        b = (cloud_envelope if cloud else onprem_envelope)(contacts, messages)
        u.bodies.append((b, ops, desc))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], ops, desc

    def ev_identity(self, u):
        r = self.rng
        cloud, w, uid = self.naming(u)
        msgs, ops, descs = [], [], []
        count = 1 if u.kind == "skewed" else r.choice([1, 1, 1, 2, 3])
        for _ in range(count):
            x = r.random()
            if x < 0.6 and u.next < len(u.hashes):
                i = u.next
                u.next += 1
            elif x < 0.8:
                i = r.randrange(len(u.hashes))
            else:
                i = r.randrange(max(u.next, 1))
            if u.kind != "skewed" and r.random() < 0.15:   # an acknowledgement in the same body
                h, c = u.hashes[i]
                m, op, d = self.text_msg(u, cloud, w, uid, c + r.randint(1, 3000),
                                         ident=(h, c * 1000, c * 1000, True))
            else:
                m, op, d = self.system_msg(u, i, cloud, w, uid)
            msgs.append(m)
            ops.append(op)
            descs.append(d)
            if r.random() < 0.1:                       # the same message twice in one body
                msgs.append(m)
                ops.append(op)
                descs.append("(again)")
        contacts = None
        if cloud and (w or uid):
            contacts = [dict({"profile": {"name": u.label}}, **({"wa_id": w} if w else {}), user_id=uid)]
            ops.insert(0, ("prof", w, uid))
        return self.webhook(u, cloud, contacts, msgs, ops, "; ".join(descs))

    def ev_ack_message(self, u):
        r = self.rng
        rec = self.model.recs.get(self.model.canon(u.wa if u.revealed else u.uid))
        known = rec.newest() if rec else None
        if u.kind == "skewed":
            if known is None:
                return self.ev_identity(u)
            h = known                                  # the newest only: no time to order by
        else:
            x = r.random()
            pool = [hh for hh, _ in u.hashes]
            if x < 0.7 and known:
                h = known
            elif x < 0.85 and rec and len(rec.obs) > 1:
                h = r.choice([hh for hh in rec.obs if hh != known])      # an older one
            else:
                h = r.choice(pool)
        c = dict(u.hashes)[h]
        sent_ms, t = self.identity_time(u, c)
        if u.kind == "skewed":
            t = rec.obs[h]
        cloud, w, uid = self.naming(u)
        ts = self.recent() if r.random() < 0.3 else c + r.randint(1, 3000)
        m, op, d = self.text_msg(u, cloud, w, uid, ts, ident=(h, sent_ms, t, True))
        return self.webhook(u, cloud, None, [m], [op], "ack by message: " + d)

    def ev_ack_put(self, u):
        r = self.rng
        if not u.revealed:
            return self.ev_ack_message(u)
        rec = self.model.recs.get(self.model.canon(u.wa))
        if not rec or not rec.obs:
            return self.ev_identity(u)
        known = rec.newest()
        h = known if r.random() < 0.75 or len(rec.obs) < 2 else r.choice([x for x in rec.obs if x != known])
        self.sim.set_identity(u.wa, h, created_timestamp=dict(u.hashes)[h] * 1000, acknowledged=False)
        # ack = manual: a forwarded PUT is an operator's (an admin token)
        return ([("PUT", "/v1/contacts/%s/identity" % u.wa, ADMIN_TOKEN, {"hash": h})],
                [("put", u.wa, h)], "forwarded PUT of %s" % h)

    def ev_ack_admin(self, u):
        """An operator asks for the acknowledgement now: a worker of either instance PUTs the
        newest hash (which the simulator knows as the newest) and records the answer."""
        name = self.model.canon(u.wa if u.revealed else u.uid)
        rec = self.model.recs.get(name)
        if not rec or not rec.obs:
            return self.ev_identity(u)
        h = rec.newest()
        self.sim.set_identity(name, h, acknowledged=False)
        return [("ADMINACK", name, ADMIN_TOKEN, h)], [("adminack", name, h)], "operator asks to acknowledge %s" % h

    def ev_inbound(self, u):
        r = self.rng
        cloud, w, uid = self.naming(u)
        ts = self.recent() if r.random() < 0.7 else self.old()
        ident = key_hash = None
        h = u.hash_at(ts)
        if h and u.kind != "skewed":
            if cloud and r.random() < 0.5:
                key_hash = h
            elif not cloud and r.random() < 0.3:
                c = dict(u.hashes)[h]
                ident = (h, c * 1000, c * 1000, False)
        m, op, d = self.text_msg(u, cloud, w, uid, ts, ident=ident, key_hash=key_hash)
        contacts, ops = None, [op]
        if cloud or r.random() < 0.5:
            ct = {"profile": {"name": u.label}}
            if w:
                ct["wa_id"] = w
            if cloud and uid:
                ct["user_id"] = uid
            if key_hash:
                ct["identity_key_hash"] = key_hash
            contacts = [ct]
            ops.insert(0, ("prof", w, uid if cloud else None))
        return self.webhook(u, cloud, contacts, [m], ops, d)

    def ev_status(self, u):
        """A Cloud status of a message sent to u, with the key hash it was sent under."""
        if not u.uid:
            return self.ev_inbound(u)
        cloud, w, uid = self.naming(u)
        ts = self.recent() if self.rng.random() < 0.5 else self.old()
        h = u.hash_at(ts)
        sid = self.mid(u, "st")
        st = {"id": sid, "recipient_user_id": uid, "status": self.rng.choice(["sent", "delivered", "read"]),
              "timestamp": str(ts)}
        if w:
            st["recipient_id"] = w
        subs = [("who", w, uid)]
        if h:
            st["recipient_identity_key_hash"] = h
            subs.append(("id", w, uid, h, ts * 1000, False, "cloud"))
        op = ("msg", "st:%s:%s" % (sid, st["status"]), subs)
        b = cloud_envelope()
        b["entry"][0]["changes"][0]["value"]["statuses"] = [st]
        u.bodies.append((b, [op], "status %s key_hash %s" % (st["status"], h)))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], [op], "status %s %.1fh ago key_hash %s" % (
            st["status"], (self.now - ts) / 3600.0, h)

    def ev_reveal(self, u):
        """The user id seen with its wa_id: in the contacts alone, or with a message."""
        u.revealed = True
        u.linked = True
        contacts = [{"profile": {"name": u.label}, "wa_id": u.wa, "user_id": u.uid}]
        if self.rng.random() < 0.5:
            return self.webhook(u, True, contacts, None, [("prof", u.wa, u.uid)],
                                "seen with wa_id and user id")
        ts = self.recent() if self.rng.random() < 0.5 else self.old()
        m, op, d = self.text_msg(u, True, u.wa, u.uid, ts)
        return self.webhook(u, True, contacts, [m], [("prof", u.wa, u.uid), op],
                            "seen with wa_id and user id: " + d)

    def dialled(self, u):
        return world_dialled(u.country, u.wa)

    def ev_contact_check(self, u):
        if not u.revealed:
            return self.ev_reveal(u)
        raw = self.dialled(u) if self.rng.random() < 0.8 else "+" + u.wa
        d = dial(raw)
        if self.rng.random() < 0.5:
            b = contacts_callback(contact_result(raw, "valid", u.wa))
            u.bodies.append((b, [("cc", d, u.wa)], "contact check callback %r" % raw))
            return ([("POST", "/webhook", WEBHOOK_TOKEN, b)], [("cc", d, u.wa)],
                    "contact check callback %r" % raw)
        return ([("POST", "/v1/contacts", API_TOKEN, {"blocking": "wait", "contacts": [raw]})],
                [("cc", d, u.wa)], "contact check through the proxy %r" % raw)

    def ev_block(self, u):
        if not u.revealed:
            return self.ev_inbound(u)
        x = u.wa if self.rng.random() < 0.6 else "+" + u.wa
        verb = "block" if self.rng.random() < 0.3 else "unblock"
        return ([("POST", "/v1/contacts/%s/%s" % (quote(x, safe=""), verb), API_TOKEN, {})],
                [("blk", x, verb == "block")], "%s %s" % (verb, x))

    def ev_duplicate(self, u):
        if not u.bodies:
            return self.ev_identity(u)
        b, ops, desc = self.rng.choice(u.bodies)
        reqs = [("POST", "/webhook", WEBHOOK_TOKEN, b)]
        if self.rng.random() < 0.4:
            reqs = reqs * 2                            # to both instances at once
        return reqs, ops, "again: " + desc

    def ev_refusal(self, u):
        """WhatsApp refused a send to u because the identity changed: a failed status with
        480 (On-Premises; the code a number or a string, or an error beside the status) or
        137000 (Cloud).  The gate closes until a hash never seen arrives (I2)."""
        r = self.rng
        cloud, w, uid = self.naming(u)
        sid = self.mid(u, "ref")
        ts = self.recent()
        if cloud:
            st = {"id": sid, "status": "failed", "timestamp": str(ts), "errors": [{"code": 137000, "title": "x"}]}
            if w:
                st["recipient_id"] = w
            if uid:
                st["recipient_user_id"] = uid
            b = cloud_envelope()
            b["entry"][0]["changes"][0]["value"]["statuses"] = [st]
            desc = "refused 137000"
        else:
            shape = r.randrange(3)
            st = {"id": sid, "recipient_id": w, "status": "failed", "timestamp": str(ts)}
            b = {"statuses": [st]}
            if shape == 2:
                b["errors"] = [{"code": 480, "title": "User identity changed"}]
            else:
                st["errors"] = [{"code": 480 if shape == 0 else "480", "title": "x"}]
            desc = "refused 480 (%s)" % ("number", "string", "top-level")[shape]
        op = ("msg", "st:%s:failed" % sid, [("ref", w, uid if cloud else None)])
        u.bodies.append((b, [op], desc))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], [op], desc

    def ev_unusable(self, u):
        """A user_identity_changed naming u whose hash or time cannot be used: a dead letter,
        and the gate closes all the same."""
        if not u.revealed:
            return self.ev_refusal(u)
        mid = self.mid(u, "unk")
        m = identity_change_msg(u.wa, "not a hash!", self.recent(), msg_id=mid)
        if self.rng.random() < 0.5:
            m["system"]["identity"] = u.hashes[0][0]
            m["timestamp"] = "soon"
        op = ("msg", mid, [("ref", u.wa, None)])
        b = onprem_envelope(messages=[m])
        u.bodies.append((b, [op], "an unusable identity change"))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], [op], "an unusable identity change"

    def ev_number_change(self, u):
        """u moves to a new number (On-Premises users, once): the identity goes with them and
        waits for an acknowledgement again; the old number is refused (number_changed)."""
        if u.kind != "plain" or u.uid or u.old_numbers or not u.revealed or u.group != u.label:
            return self.ev_inbound(u)
        old = u.wa
        new = WORLD[u.country][1] % self.rng.randrange(10000)
        if self.model.canon(new) in self.model.recs or new == old:
            return self.ev_inbound(u)
        ts = self.now - self.rng.randint(1, 60)
        m = {"from": old, "id": self.mid(u, "num"), "timestamp": str(ts), "type": "system",
             "system": {"body": "changed", "new_wa_id": new, "type": "user_changed_number"}}
        u.old_numbers.append(old)
        u.wa = new
        if u.country == "MX":                  # the WABA client's contact check knows the new number
            self.mx[dial(world_dialled("MX", new))] = new
            self.sim.configure(wa_id_map=self.mx)
        b = onprem_envelope(messages=[m])
        op = ("num", old, new, ts)
        u.bodies.append((b, [op], "number %s -> %s" % (old, new)))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], [op], "number %s -> %s" % (old, new)

    def ev_uid_change(self, u):
        """u's business-scoped id changes (Cloud): the old id is retired (number_changed,
        new_user_id), and the identity waits for an acknowledgement again."""
        if not u.uid or len(u.old_uids) >= 2:
            return self.ev_status(u)
        old = u.uid
        new = "%s.%s" % (u.country, "".join(self.rng.choice(string.digits) for _ in range(self.rng.choice([12, 40]))))
        mid = self.mid(u, "uid")
        sysm = {"type": "user_changed_user_id", "body": "changed", "user_id": new, "previous_user_id": old}
        if u.revealed and u.linked and self.rng.random() < 0.5:
            sysm["wa_id"] = u.wa
        m = {"from_user_id": old, "id": mid, "timestamp": str(self.now - 5), "type": "system", "system": sysm}
        u.old_uids.append(old)
        u.uid = new
        b = cloud_envelope(messages=[m])
        op = ("msg", mid, [("uid", old, new)])
        u.bodies.append((b, [op], "user id %s -> %s" % (old, new)))
        return [("POST", "/webhook", WEBHOOK_TOKEN, b)], [op], "user id %s -> %s" % (old, new)

    KINDS = (("ev_identity", 30), ("ev_ack_message", 13), ("ev_ack_put", 6), ("ev_ack_admin", 5),
             ("ev_inbound", 15),
             ("ev_status", 4), ("ev_reveal", 3), ("ev_contact_check", 5), ("ev_block", 3),
             ("ev_duplicate", 12), ("ev_refusal", 3), ("ev_unusable", 1), ("ev_number_change", 1),
             ("ev_uid_change", 1))

    def concurrent_event(self, u, put):
        """An event whose order against the others of its kind for one user changes nothing
        waguard decides by (the newest hash, whether it is acknowledged, the window): sent
        at the same time as them.  put: a forwarded PUT may be one of them (one at a time:
        the simulator knows one newest hash)."""
        kinds = ["ev_identity", "ev_identity", "ev_ack_message", "ev_inbound"]
        rec = self.model.recs.get(u.wa)
        if put and rec is not None and rec.obs:
            kinds.append("ev_ack_put")      # on a record without identity its order would matter
        kind = self.rng.choice(kinds)
        return kind, getattr(self, kind)(u)

    def event(self, u):
        kind = self.rng.choices([k for k, _ in self.KINDS], [w for _, w in self.KINDS])[0]
        if not u.revealed and u.uid in self.model.recs and self.rng.random() < 0.15:
            kind = "ev_reveal"              # its user id's record then merges into the wa_id's
        if kind == "ev_reveal" and u.revealed:
            kind = "ev_inbound"
        if kind == "ev_contact_check" and u.country != "MX" and self.rng.random() < 0.7:
            kind = "ev_inbound"
        return getattr(self, kind)(u)


# ----------------------------------------------------------------------------- the run

class Http:
    """Requests from several threads, a session each (closed by close())."""

    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.sessions = []

    def __call__(self, method, url, token, payload):
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
            with self.lock:
                self.sessions.append(s)
        data = None if payload is None else json.dumps(payload)
        r = s.request(method, url, data=data, timeout=10,
                      headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        return r.status_code, r.text

    def close(self):
        with self.lock:
            for s in self.sessions:
                s.close()


def admin_ack(http, base, name, h):
    """POST /v1/identities/{name}/ack, then wait until the worker's answer is recorded."""
    st, text = http("POST", base + "/v1/identities/%s/ack" % quote(name, safe=""), ADMIN_TOKEN, None)
    if st not in (200, 202):
        return st, text

    def done():
        st, text = http("GET", base + "/v1/identities/%s" % quote(name, safe=""), ADMIN_TOKEN, None)
        ident = json.loads(text)["identity"] if st == 200 else {}
        return ident.get("hash") == h and ident.get("acknowledged") is True and (st, text)
    return wait_for(done, 10, "the acknowledgement of %s for %s" % (h, name))


def user_forms(u, model):
    """The forms a caller may use for u now, each naming u by the rule."""
    forms = []
    if u.revealed:
        w = u.wa
        forms += [w, "+" + w, "00" + w]
        if u.country == "MX":
            d = dial(world_dialled("MX", w))
            if model.contacts.get(d) == w:
                forms += [world_dialled("MX", w), "+" + d]
        else:
            forms.append(world_dialled(u.country, w))
        if u.country == "US":
            forms += [w[1:], "0" + w[1:]]
    if u.uid:
        forms.append(u.uid)
    # the numbers and user ids it left: refused (number_changed)
    forms += list(u.old_numbers) + list(u.old_uids)
    return forms


class Checker:
    def __init__(self, model, users):
        self.model = model
        self.users = users
        self.by_name = {}
        for u in users:
            for n in u.names():
                self.by_name[n] = u
        self.decisions = 0
        self.problems = []       # (violation?, text)
        self.violations = 0
        self.mismatches = 0
        self.forwarded = 0
        self.allowed = 0
        self.ambiguous = 0       # answers that considered more than one user
        self.held = 0            # asks of a held category
        self.reasons = {}

    def expect(self, x, type_, held=False):
        m = self.model
        cands = m.candidates(x)
        considered = [c for c in cands if c in m.recs]
        now = time.time()
        if considered:
            reasons = set().union(*(m.recs[c].reasons(type_, now, held) for c in considered))
        else:
            reasons = Rec().reasons(type_, now, held)
        if m.retired_in(x):
            reasons.add("number_changed")
        exact = not any(m.recs[c].inexact for c in considered)
        return cands, considered, reasons, exact

    def check(self, x, type_, d, where, intended=None, held=False):
        """d: a decision (or, for a send, {"allowed": forwarded?}); returns nothing, records
        problems.  held: the ask is of a [hold] category (authentication)."""
        self.decisions += 1
        self.held += held
        cands, considered, reasons, exact = self.expect(x, type_, held)
        self.allowed += bool(d["allowed"])
        self.ambiguous += len(considered) > 1
        for r in reasons:
            self.reasons[r] = self.reasons.get(r, 0) + 1
        if intended is not None:
            own = self.model.canon(x if x in (intended.uid, *intended.old_uids) else
                                   x if x in intended.old_numbers else intended.wa)
            assert own not in self.model.recs or own in cands, \
                "test error: %r does not name %s (%s)" % (x, intended.label, cands)
        bad = []
        if d["allowed"] and reasons:
            bad.append("ALLOWED although the model says %s" % sorted(reasons))
        elif exact and "reasons" in d:
            if set(d["reasons"]) != reasons:
                bad.append("reasons %s, the model says %s" % (d["reasons"], sorted(reasons)))
            if len(considered) > 1:
                if sorted(d.get("considered") or []) != sorted(considered):
                    bad.append("considered %s, the model %s" % (d.get("considered"), considered))
            elif "considered" in d:
                bad.append("considered %s, the model knows only %s" % (d["considered"], considered))
            named = d["wa_id"]
            if considered and named not in considered or not considered and named != cands[0]:
                bad.append("answer names %s, not one of %s" % (named, considered or cands[:1]))
            rec = self.model.recs.get(named)
            h = rec.newest() if rec else None
            has = rec is not None and (h is not None or rec.unknown or rec.nohash)
            ident = d.get("identity")
            if not has and ident is not None:
                bad.append("identity %s, the model knows none for %s" % (ident, named))
            elif has and (ident is None or ident["hash"] != (h or "")
                          or ident["acknowledged"] != (not rec.pending())
                          or bool(ident.get("hash_unknown")) != rec.unknown):
                bad.append("identity %s, the model: %s acknowledged=%s hash_unknown=%s"
                           % (ident, h, not rec.pending(), rec.unknown))
        elif exact and not d["allowed"] and not reasons:
            bad.append("refused although the model allows")
        if bad:
            violation = bad[0].startswith("ALLOWED")
            if violation:
                self.violations += 1
            else:
                self.mismatches += 1
            self.problems.append((violation, self.explain(x, type_, d, where, cands, considered, bad)))

    def explain(self, x, type_, d, where, cands, considered, bad):
        lines = ["%s: %r type=%s at %s" % ("VIOLATION" if bad[0].startswith("ALLOWED") else "mismatch",
                                            x, type_, where),
                 "  " + "; ".join(bad),
                 "  answer: %s" % json.dumps(d),
                 "  names %s, known %s" % (cands, considered)]
        for c in cands:
            rec = self.model.recs.get(c)
            lines.append("  model %s: %s" % (c, rec.describe() if rec else "no record"))
        mapped = {d: w for d, w in self.model.contacts.items() if self.model.canon(w) in cands}
        if mapped:
            lines.append("  contact mappings to them: %s" % mapped)
        shown = set()
        for c in cands:
            named = [c] + [k for k, v in self.model.alias.items() if v == c]
            u = next((u for u in self.users if set(u.names()) & set(named)), None)
            if u is None or u.label in shown:
                continue
            shown.add(u.label)
            lines.append("  history of %s (%s, wa_id %s, user id %s, kind %s):"
                         % (u.label, u.country, u.wa, u.uid, u.kind))
            lines += ["    " + h for h in u.history[-40:]]
            lines.append("    true order of hashes: %s" % [h for h, _ in u.hashes])
        return "\n".join(lines)


def test_promise_holds_for_random_users_events_and_forms(procs, record_testsuite_property, capsys):
    seed = int(os.environ.get("PROMISE_SEED") or random.SystemRandom().randrange(10 ** 9))
    seconds = float(os.environ.get("PROMISE_SECONDS") or 30)
    rng = random.Random(seed)
    now = int(time.time())
    # Is a user's first hash acknowledged?  PROMISE_FIRST_SEEN = trust, hold, or random (the
    # default: each run draws one, printed with the seed).
    first_seen = os.environ.get("PROMISE_FIRST_SEEN") or "random"
    if first_seen == "random":
        first_seen = rng.choice(["trust", "hold"])
    assert first_seen in ("trust", "hold"), first_seen

    redis = procs.redis()
    sim = procs.sim()
    # No blocklist mirror: blocks are what waguard was told through its proxy (the mirror
    # reads the WABA client's list on its own schedule).
    overrides = {"identity": {"ack": "manual", "first_seen": first_seen},
                 "gate": {"home_country_code": HOME_CC}, "upstream": {"blocklist_sync_s": 0},
                 "hold": {"authentication_s": "86400", "authentication_templates": "otp_login"}}
    wgs = [procs.daemon(redis, sim, overrides=overrides), procs.daemon(redis, sim, overrides=overrides)]

    model = Model(first_seen)
    users = make_users(rng, now, changes=max(8, int(seconds // 2)))   # identities enough for the run
    mx = {dial(world_dialled("MX", u.wa)): u.wa for u in users if u.country == "MX"}
    sim.configure(block_unacked_sends=False, wa_id_map=mx)
    gen = Gen(rng, model, sim, now)
    gen.mx = mx
    chk = Checker(model, users)
    groups = {}
    for u in users:
        groups.setdefault(u.group, []).append(u)
    group_names = sorted(groups)

    def fail_text():
        return ("promise broken (seed %d; replay with PROMISE_SEED=%d):\n\n%s"
                % (seed, seed, "\n\n".join(t for _, t in chk.problems[:5])))

    http = Http()
    pool = ThreadPoolExecutor(max_workers=8)
    events = rounds = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and len(chk.problems) < 5:
            rounds += 1
            gen.round = rounds
            # Events for users of distinct groups at once: their order does not matter.
            picked = rng.sample(group_names, rng.randint(1, 6))
            batch = []
            for g in picked:
                u = rng.choice(groups[g])
                reqs, ops, desc = gen.event(u)
                batch.append((u, reqs, ops, desc))
            # Sometimes several events for one user at once, to either instance: identity
            # changes, acknowledgements (in messages, a forwarded PUT) and inbound messages,
            # whose order does not change the newest hash nor whether it is acknowledged.
            # (Only once the user has an identity: which hash is seen first matters with
            # first_seen = hold.)
            ready = [x for x in users if x.kind == "plain" and x.group not in picked
                     and model.recs.get(x.wa) is not None and model.recs[x.wa].obs]
            if ready and rng.random() < 0.25:
                u = rng.choice(ready)
                put = True
                for _ in range(rng.randint(2, 3)):
                    kind, (reqs, ops, desc) = gen.concurrent_event(u, put)
                    put = put and kind != "ev_ack_put"
                    batch.append((u, reqs, ops, "(at once) " + desc))
            jobs = []
            for u, reqs, ops, desc in batch:
                for method, path, token, payload in reqs:
                    inst = rng.randrange(2)
                    if method == "ADMINACK":
                        fut = pool.submit(admin_ack, http, wgs[inst].url, path, payload)
                    else:
                        fut = pool.submit(http, method, wgs[inst].url + path, token, payload)
                    jobs.append((u, inst, method, path, payload, fut))
            answers = {}
            for u, inst, method, path, payload, fut in jobs:
                status, text = fut.result()
                assert status == 200, ("%s %s to instance %d for %s: %d %s (seed %d)\n%s"
                                       % (method, path, inst, u.label, status, text[:500], seed,
                                          json.dumps(payload)[:1000]))
                if path == "/webhook":
                    j = json.loads(text)
                    expected = 1 if ("not a hash!" in json.dumps(payload) or "\"soon\"" in json.dumps(payload)) else 0
                    assert j.get("dead_letters") == expected, (u.label, j, payload, seed)
                answers.setdefault(u.label, []).append("#%d %d" % (inst, status))
            for u, reqs, ops, desc in batch:
                for op in ops:
                    model.apply(op)
                events += 1
                u.note("round %d: %s -> %s" % (rounds, desc, ", ".join(answers.get(u.label, []))))

            # Ask: single gates, a batch, sends, from either instance.
            asks = []
            for _ in range(14):
                u = rng.choice(users)
                forms = user_forms(u, model)
                if forms:
                    asks.append((u, rng.choice(forms), rng.choice(["template", "text", "text", "hsm",
                                                                     "interactive"])))
            futs = []
            for u, x, t in asks[:11]:
                inst = rng.randrange(2)
                held = rng.random() < 0.2
                path = "/v1/gate/%s?type=%s%s" % (quote(x, safe=""), t, "&category=authentication" if held else "")
                futs.append(("gate", u, x, t, inst, held,
                             pool.submit(http, "GET", wgs[inst].url + path, API_TOKEN, None)))
            for u, x, t in asks[11:]:
                inst = rng.randrange(2)
                t = "template" if t == "hsm" and rng.random() < 0.5 else t
                t = "text" if t == "interactive" else t
                held = t in ("template", "hsm") and rng.random() < 0.4
                msg = {"to": x, "type": t}
                if t == "template":
                    name = rng.choice(HELD_FORMS) if held else "hello"
                    msg["template"] = dict(TEMPLATE, name=name)
                elif t == "hsm":
                    name = rng.choice(HELD_FORMS) if held else "hello"
                    msg["hsm"] = {"namespace": "ns", "element_name": name,
                                  "language": {"policy": "deterministic", "code": "en"}}
                else:
                    msg["text"] = {"body": "hi"}
                futs.append(("send", u, x, t, inst, held,
                             pool.submit(http, "POST", wgs[inst].url + "/v1/messages", API_TOKEN, msg)))
            bt = rng.choice(["template", "text"])
            binst = rng.randrange(2)
            bl = []
            for _ in range(rng.randint(10, 40)):
                u = rng.choice(users)
                forms = user_forms(u, model)
                if forms:
                    bl.append((u, rng.choice(forms)))
            bfut = pool.submit(http, "POST", wgs[binst].url + "/v1/gate", API_TOKEN,
                               {"type": bt, "wa_ids": [x for _, x in bl]})
            for kind, u, x, t, inst, held, fut in futs:
                status, text = fut.result()
                where = "round %d, instance #%d, %s" % (rounds, inst, kind)
                if kind == "gate":
                    assert status in (200, 423), (x, status, text, seed)
                    d = assert_decision(json.loads(text))
                    assert (status == 200) == d["allowed"], (status, d)
                    chk.check(x, t, d, where, u, held)
                else:
                    assert status not in (400, 401, 403, 404) and status < 500, (x, t, status, text, seed)
                    forwarded = status != 423
                    chk.forwarded += forwarded
                    chk.check(x, t, {"allowed": forwarded}, where + " (%d %s)" % (status, text[:200]), u, held)
            status, text = bfut.result()
            assert status == 200, (status, text, seed)
            results = json.loads(text)["results"]
            assert len(results) == len(bl), (len(results), len(bl))
            for (u, x), d in zip(bl, results):
                chk.check(x, bt, assert_decision(d), "round %d, instance #%d, batch" % (rounds, binst), u)

        # Every form of every user, from both instances, once more.
        if not chk.problems:
            for inst, wg in enumerate(wgs):
                for t in ("template", "text"):
                    bl = [(u, x) for u in users for x in user_forms(u, model)]
                    st, text = http("POST", wg.url + "/v1/gate", API_TOKEN,
                                    {"type": t, "wa_ids": [x for _, x in bl]})
                    assert st == 200, (st, text)
                    for (u, x), d in zip(bl, json.loads(text)["results"]):
                        chk.check(x, t, assert_decision(d), "the end, instance #%d, batch" % inst, u)
    finally:
        pool.shutdown(wait=True)
        http.close()
    sent = len(sim.calls_matching(method="POST", path="/v1/messages"))

    countries = len({u.country for u in users})
    line = ("promise: %d decisions checked, %d violations, %d mismatches, %d users from %d countries "
            "(%d events in %d rounds, %d sends forwarded, first_seen = %s; seed %d)"
            % (chk.decisions, chk.violations, chk.mismatches, len(users), countries, events, rounds,
               chk.forwarded, first_seen, seed))
    record_testsuite_property("promise_decisions", chk.decisions)
    record_testsuite_property("promise_violations", chk.violations)
    record_testsuite_property("promise_seed", seed)
    with capsys.disabled():
        print("\n" + line)
    if chk.problems:
        pytest.fail(fail_text(), pytrace=False)
    assert sent == chk.forwarded, "the simulator got %d sends, waguard forwarded %d" % (sent, chk.forwarded)
    # What the run went through (a generator that stopped producing a case fails here).
    seen = dict(chk.reasons, allowed=chk.allowed, denied=chk.decisions - chk.allowed,
                ambiguous=chk.ambiguous, late=model.outcomes.get("late", 0),
                acknowledged=model.outcomes.get("acknowledged", 0), merged=model.merged,
                mapped=len(model.contacts), linked=len(model.alias), held=chk.held,
                old=model.outcomes.get("old", 0), refused=sum(r.unknown for r in model.recs.values()) +
                sum("ref" in d for u in users for _, _, d in u.bodies),
                number_changes=sum(len(u.old_numbers) for u in users),
                user_id_changes=sum(len(u.old_uids) for u in users))
    record_testsuite_property("promise_coverage", json.dumps(seen, sort_keys=True))
    assert chk.decisions >= 100 and events >= 20, line
    if events >= 1500:
        for what, n in sorted(seen.items()):
            assert n > 0, "no %s in %d decisions: %s" % (what, chk.decisions, seen)


def test_a_superseded_hash_seen_again_with_a_time_ahead_does_not_reopen_the_gate(procs):
    """H1 acknowledged, then a real change H2: the gate is closed.  A late copy of a message
    about H1, acknowledged, whose identity time is a day ahead (a WABA host with a skewed clock),
    is the same notification again: it must change nothing ("An older notification never
    replaces a newer one; the same one twice changes nothing", CONTRACT.md)."""
    redis = procs.redis()
    wg = procs.daemon(redis, None, overrides={"identity": {"ack": "manual"}})
    w = WORLD["DE"][1] % 4242
    now = int(time.time())
    wg.webhook_ok(onprem_envelope(messages=[inbound_text_msg(
        w, ts=now - 7000, identity=identity_obj("H1=", (now - 7200) * 1000, True))]))
    wg.webhook_ok(onprem_envelope(messages=[identity_change_msg(w, "H2=", now - 3600)]))

    def ask():
        r = wg.gate(w, type="template")
        return r.status_code, r.json()
    code, d = ask()
    assert code == 423 and d["identity"]["hash"] == "H2=", d
    wg.webhook_ok(onprem_envelope(messages=[inbound_text_msg(
        w, ts=now - 7000, identity=identity_obj("H1=", (now + DAY) * 1000, True))]))
    code, d = ask()
    assert code == 423 and d["identity"]["hash"] == "H2=" and d["reasons"] == ["identity_unacknowledged"], d


def test_a_message_repeated_in_one_body_does_not_acknowledge_a_held_first_hash(procs):
    """first_seen = hold: a first hash that a message says is acknowledged is recorded as not
    acknowledged.  The same message twice in one body (or in two bodies applied together) is
    a duplicate: its identity, part of the message, must be skipped with it, not applied a
    second time (which acknowledges the held hash)."""
    redis = procs.redis()
    wg = procs.daemon(redis, None, overrides={"identity": {"ack": "manual", "first_seen": "hold"}})
    now = int(time.time())
    for w, copies in ((WORLD["DE"][1] % 1, 1), (WORLD["DE"][1] % 2, 2)):
        m = inbound_text_msg(w, ts=now - 60, msg_id="wamid.held%d" % copies,
                             identity=identity_obj("HELD=", (now - 7200) * 1000, True))
        assert wg.webhook_ok(onprem_envelope(messages=[m] * copies))["duplicates"] == copies - 1
        d = wg.gate(w, type="template").json()
        assert d["allowed"] is False and d["reasons"] == ["identity_unacknowledged"], (copies, d)
