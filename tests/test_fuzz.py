"""Mutation fuzzing of the webhook (and the gate routes) against the real daemon: it never
crashes and, while Redis is up, never answers 5xx (only 200 / 400 / 413 on the webhook)."""
import copy
import json
import os
import random
from urllib.parse import quote

import pytest
import requests

from daemon import API_TOKEN, WEBHOOK_TOKEN
from helpers import (body, check_gate_response, contact_result, contacts_callback, errors_body,
                     identity_change, identity_change_msg, identity_obj, inbound_text,
                     inbound_text_msg, new_wa_id, number_changed_msg, parse_metrics, status_item,
                     statuses)

# FUZZ_SEED / FUZZ_ITERATIONS in the environment run a longer or different campaign.
SEED = int(os.environ.get("FUZZ_SEED", "0x5EED2024"), 0)
N_WEBHOOK = int(os.environ.get("FUZZ_ITERATIONS", "800"))
N_GATE = max(150, N_WEBHOOK // 4)
T0 = 1602535238


def valid_bodies():
    a, b, c = "16315550101", "16315550102", "16315550103"
    return [
        identity_change(a, "Rc/eg9RQ0JA=", T0),
        inbound_text(b, identity=identity_obj("UKD6Y/5SqDU=", 1600132094000)),
        contacts_callback(contact_result("+1 (631) 555-0103", "valid", c),
                          contact_result("6315550104", "invalid")),
        statuses(status_item("gBEGkYiEB1VXAglK1ZEqA1YKPrU", a, "failed",
                             errors=[{"code": 480, "title": "Identity not acknowledged"}]),
                 status_item("gBEGkYiEB1VXAglK1ZEqA1YKPrV", b, "read")),
        errors_body(1014, "Internal error", "Upstream went away"),
        body(messages=[number_changed_msg(a, c), identity_change_msg(b, "AAAA", T0 + 1),
                       inbound_text_msg(c)],
             contacts=[{"profile": {"name": "Kerry"}, "wa_id": c}],
             statuses=[status_item("gSt1", c, "sent")],
             errors=[{"code": 501, "title": "Unknown message type"}]),
        # a Cloud API shaped body: accepted or refused, never a crash
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "123"},
                "contacts": [{"profile": {"name": "K"}, "wa_id": a, "identity_key_hash": "XYZ="}],
                "messages": [inbound_text_msg(a)]}}]}]},
    ]


UNICODE = ["", "\u00e9", "\U0001F600" * 50, "\u202e\u0631\u0633\u0627\u0644\u0629", "\x00",
           "\ud800", "\uffff", "a\u0000b", "\\", "\"", "%00", "{{}}", "${jndi:x}", "' OR 1=1 --",
           "\u0661\u0662\u0663", "\uff11\uff16\uff13\uff11"]
NUMBERS = [0, -1, 1, 2 ** 31, -2 ** 31 - 1, 2 ** 63, -2 ** 63, 2 ** 64 + 1, 10 ** 30, -10 ** 30,
           1e308, -1e308, 1.5, -0.0, 1e-308, 9007199254740993]


class Mutator:
    def __init__(self, rng):
        self.rng = rng

    def random_scalar(self):
        r = self.rng
        k = r.randrange(8)
        if k == 0:
            return None
        if k == 1:
            return r.choice([True, False])
        if k == 2:
            return r.choice(NUMBERS)
        if k == 3:
            return r.choice(UNICODE)
        if k == 4:
            return "x" * r.choice([0, 1, 255, 256, 4096, 70000])
        if k == 5:
            return str(r.choice(NUMBERS))
        if k == 6:
            return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(1, 40)))
        return r.choice(["user_identity_changed", "user_changed_number", "system", "text",
                         "valid", "invalid", "processing", "failed", "delivered", "sent"])

    def random_value(self, depth=0):
        r = self.rng
        k = r.randrange(6 if depth < 3 else 1)
        if k == 0 or depth >= 3:
            return self.random_scalar()
        if k == 1:
            return []
        if k == 2:
            return {}
        if k == 3:
            return [self.random_value(depth + 1) for _ in range(r.randrange(1, 5))]
        if k == 4:
            return {self.random_key(): self.random_value(depth + 1) for _ in range(r.randrange(1, 5))}
        return "__DEEP__"

    def random_key(self):
        return self.rng.choice(["messages", "contacts", "statuses", "errors", "system", "identity",
                                "hash", "customer", "user", "from", "id", "timestamp", "type",
                                "wa_id", "new_wa_id", "input", "status", "created_timestamp",
                                "acknowledged", "recipient_id", "\u00e9", "", "\x00k"])

    def slots(self, obj, out=None):
        """All (container, key) places in obj."""
        if out is None:
            out = []
        if isinstance(obj, dict):
            for k in list(obj):
                out.append((obj, k))
                self.slots(obj[k], out)
        elif isinstance(obj, list):
            for i in range(len(obj)):
                out.append((obj, i))
                self.slots(obj[i], out)
        return out

    def mutate_obj(self, obj):
        r = self.rng
        slots = self.slots(obj)
        if not slots:
            obj[self.random_key()] = self.random_value()
            return obj
        cont, key = r.choice(slots)
        op = r.randrange(9)
        if op == 0:                                   # delete
            del cont[key]
        elif op == 1:                                 # any value
            cont[key] = self.random_value()
        elif op == 2:                                 # swap the type
            v = cont[key]
            cont[key] = r.choice([[v], {"v": v}, json.dumps(v), 0, None, True, "", {}, []])
        elif op == 3:                                 # numbers
            cont[key] = r.choice(NUMBERS)
        elif op == 4:                                 # unicode
            cont[key] = r.choice(UNICODE)
        elif op == 5:                                 # deep nesting
            cont[key] = "__DEEP__"
        elif op == 6 and isinstance(cont, list):      # many copies
            cont.extend(copy.deepcopy(cont[key]) for _ in range(r.choice([2, 50, 500])))
        elif op == 7 and isinstance(cont, dict):      # an extra key
            cont[self.random_key()] = self.random_value()
        else:                                         # numeric strings that are not numbers
            cont[key] = r.choice(["1e400", "-5", "0x10", " 12", "12 ", "1602535238.5", "NaN",
                                  "99999999999999999999999"])
        return obj

    def serialise(self, obj):
        r = self.rng
        text = json.dumps(obj, ensure_ascii=r.random() < 0.5, allow_nan=True)
        while '"__DEEP__"' in text:
            n = r.choice([10, 100, 1000, 5000, 50000])
            kind = r.randrange(3)
            if kind == 0:
                deep = "[" * n + "1" + "]" * n
            elif kind == 1:
                deep = '{"a":' * n + "1" + "}" * n
            else:
                deep = "[" * n          # unterminated
            text = text.replace('"__DEEP__"', deep, 1)
        return text.encode("utf-8", "surrogatepass")

    def mutate_bytes(self, raw):
        r = self.rng
        op = r.randrange(7)
        if not raw:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))
        if op == 0:                                   # truncation
            return raw[:r.randrange(len(raw))]
        if op == 1:                                   # flip bytes
            b = bytearray(raw)
            for _ in range(r.randrange(1, 8)):
                b[r.randrange(len(b))] = r.randrange(256)
            return bytes(b)
        if op == 2:                                   # insert random bytes
            i = r.randrange(len(raw))
            return raw[:i] + bytes(r.randrange(256) for _ in range(r.randrange(1, 32))) + raw[i:]
        if op == 3:                                   # a duplicated top-level key
            return raw.replace(b"{", b'{"messages":[],', 1) if raw.startswith(b"{") else raw
        if op == 4:                                   # a BOM, NUL bytes, trailing data
            return r.choice([b"\xef\xbb\xbf" + raw, raw + b"\x00", raw + b" {}", b"\x00" + raw,
                             raw + b"\n\n", raw.replace(b":", b": \t\r\n", 3)])
        if op == 5:                                   # invalid UTF-8 in strings
            return raw.replace(b'"', b'"\xc3\x28', 1)
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 2048)))


def alive_check(wg):
    assert wg.alive(), "waguard died:\n%s" % wg.log()[-6000:]
    r = requests.get(wg.url + "/healthz", timeout=5)
    assert r.status_code == 200


def post_raw(wg, raw, token=WEBHOOK_TOKEN):
    try:
        return wg.session.post(wg.url + "/webhook", data=raw, timeout=15,
                               headers={"Authorization": "Bearer " + token,
                                        "Content-Type": "application/json"})
    except requests.RequestException as e:
        pytest.fail("webhook request failed (%r); waguard alive=%s\n%s"
                    % (e, wg.alive(), wg.log()[-6000:]))


@pytest.fixture
def fuzz_wg(waguard_factory, redis_client):
    return waguard_factory({"log": {"level": "notice"}})


def test_webhook_mutation_fuzz(fuzz_wg, redis_client):
    wg = fuzz_wg
    rng = random.Random(SEED)
    m = Mutator(rng)
    seeds = valid_bodies()
    for b in seeds:                                   # the seeds themselves are fine
        r = post_raw(wg, json.dumps(b).encode())
        assert r.status_code == 200, (r.status_code, r.text, b)
    answers = {}
    for i in range(N_WEBHOOK):
        obj = copy.deepcopy(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            obj = m.mutate_obj(obj) if isinstance(obj, (dict, list)) else obj
        raw = m.serialise(obj)
        if rng.random() < 0.3:
            raw = m.mutate_bytes(raw)
        if len(raw) > 800000:          # stay under max_body_bytes: 413 is tested elsewhere
            raw = raw[:800000]
        r = post_raw(wg, raw)
        answers[r.status_code] = answers.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 413), (
            "iteration %d: %d %s\nbody[:500]=%r" % (i, r.status_code, r.text[:300], raw[:500]))
        if r.status_code == 200:
            j = r.json()
            assert j.get("ok") is True, j
        if i % 50 == 0:
            alive_check(wg)
    alive_check(wg)
    print("fuzz answers:", answers)
    assert answers.get(200, 0) > 50 and answers.get(400, 0) > 10, answers
    # still working normally afterwards
    w = new_wa_id()
    assert post_raw(wg, json.dumps(identity_change(w, "AFTER=", T0)).encode()).status_code == 200
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["identity"]["hash"] == "AFTER=", d
    parse_metrics(wg.metrics_text())


def test_gate_route_fuzz(fuzz_wg):
    wg = fuzz_wg
    rng = random.Random(SEED + 1)
    alphabet = "0123456789+-() .#*,;abcXYZ\u00e9\u0661/%?&="
    for i in range(N_GATE):
        n = rng.choice([0, 1, 5, 11, 15, 16, 20, 64, 300, 3000])
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if rng.random() < 0.2:
            s = rng.choice(["US." + "9" * rng.randrange(1, 60), "CC.", ".", "..", "+", "+0",
                            "00" + "1" * 12, "9" * 40, "-1", "%00", "%ZZ"])
        p = "/v1/gate/" + (quote(s, safe="") if rng.random() < 0.8 else s)
        p += rng.choice(["", "?type=text", "?type=template", "?type=", "?type=%00",
                         "?type=" + "t" * 500, "?type=text&type=template"])
        try:
            r = wg.session.get(wg.url + p, timeout=10,
                               headers={"Authorization": "Bearer " + API_TOKEN})
        except requests.RequestException as e:
            pytest.fail("gate request %r failed: %r; alive=%s" % (p, e, wg.alive()))
        assert r.status_code < 500, (p, r.status_code, r.text[:300])
        if r.status_code in (200, 423):
            check_gate_response(r)
        # batch with the same string
        r = wg.session.post(wg.url + "/v1/gate", timeout=10,
                            headers={"Authorization": "Bearer " + API_TOKEN},
                            json={"type": rng.choice(["text", "template", "", None, 5]),
                                  "wa_ids": [s, rng.choice(NUMBERS), None, {"a": 1}][:rng.randrange(1, 5)]})
        assert r.status_code < 500, (s, r.status_code, r.text[:300])
        if i % 50 == 0:
            alive_check(wg)
    alive_check(wg)


def test_slow_and_broken_connections(fuzz_wg):
    """Half-sent requests and abrupt closes do not take the daemon down."""
    import socket
    wg = fuzz_wg
    for payload in (b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mess",
                    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
                    b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                    b"GET /v1/gate/1?type=text HTTP/1.1\r\n"):
        s = socket.create_connection(("127.0.0.1", wg.port), timeout=5)
        try:
            s.sendall(payload)
        except OSError:
            pass
        s.close()
    alive_check(wg)
    assert post_raw(wg, json.dumps(errors_body()).encode()).status_code == 200
