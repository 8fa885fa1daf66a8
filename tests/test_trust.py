"""Trust and operations (issue "Trust and operations…"), through the real binary, Redis and
the WABA simulator: a configured signature that no token replaces, On-Premises security
notifications read and turned on, every method answered in JSON (PATCH forwarded), hold
categories bounded however they are given, a contact-check budget that fails closed, keys
given twice and misspelt WAGUARD_* variables refused, the dialling rule kept to the seed
with each input its own mapping, and blocklist entries of any shape kept."""
import json
import os
import random
import subprocess
import time

import pytest
import requests

from daemon import ADMIN_TOKEN, API_TOKEN, clean_env, hmac_sig
from helpers import (contact_result, contacts_callback, identity_change, wait_for)

NOW = int(time.time())
SECRET = "app-secret-of-the-meta-app"
MANUAL = {"identity": {"ack": "manual"}}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "waguard")


def cloud_change(w, key_hash, number="PN1"):
    """A Cloud messages webhook whose contact carries identity_key_hash (a changed identity)."""
    return {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": number},
        "contacts": [{"wa_id": w, "profile": {"name": "U"}, "identity_key_hash": key_hash}],
        "messages": [{"from": w, "id": "wamid.%d" % random.randrange(1 << 60), "timestamp": str(NOW - 30),
                      "type": "text", "text": {"body": "hi"}}]}}]}]}


def gate_of(wg, who):
    r = wg.get("/v1/gate/%s?type=template" % requests.utils.quote(who, safe=""), token=API_TOKEN)
    assert r.status_code in (200, 423), r.text
    return r.json()


# ----------------------------------------------------------------------------- 1. signature

@pytest.fixture
def signed(procs):
    """A Cloud daemon with both Meta's app secret and a webhook token configured."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"upstream": {"api": "cloud", "auth": "none"},
                                          "webhook": {"hmac_secret_file": "hmac_secret"}},
                      files={"hmac_secret": SECRET + "\n"})
    return wg


@pytest.mark.parametrize("w", ["5511987654321", "4915123456789", "919876543210", "16315551234"])
def test_a_token_never_stands_in_for_a_configured_signature(signed, w):
    wg = signed
    raw = json.dumps(cloud_change(w, "NEWKEY1=")).encode()
    before = gate_of(wg, w)
    for why, kw in [("token, no signature", {}),
                    ("token, a wrong signature", {"signature": "sha256=" + "0" * 64}),
                    ("token, signed with another secret", {"signature": hmac_sig("guess", raw)}),
                    ("token, a signature that is not hex", {"signature": "sha256=zz"}),
                    ("no token, no signature", {"token": None})]:
        r = wg.webhook(raw, **kw)
        assert r.status_code in (401, 403), (why, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), why
        assert "X-Hub-Signature-256" in r.json()["errors"][0]["details"] or "token" in r.json()["errors"][0]["details"], why
    assert gate_of(wg, w) == before, "a refused body changed what the gate knows"

    # One byte changed after signing is refused too: the HMAC is over the raw bytes.
    sig = hmac_sig(SECRET, raw)
    r = wg.webhook(raw.replace(b"NEWKEY1=", b"NEWKEY2="), signature=sig)
    assert r.status_code in (401, 403), r.text
    # Meta's body, signed, is taken, with or without the token.
    r = wg.webhook(raw, signature=sig, token=None)
    assert r.status_code == 200, r.text
    assert not before.get("identity"), before
    assert gate_of(wg, w)["identity"]["hash"] == "NEWKEY1="       # recorded: the first identity seen
    # A wrong token presented beside a valid signature is still refused.
    r = wg.webhook(raw, signature=sig, token="not-the-token")
    assert r.status_code in (401, 403), r.text


def test_on_premises_shape_cannot_slip_past_a_configured_signature(signed):
    """The body's shape does not choose the credential: an On-Premises-shaped body with the
    token is refused when the app secret is set."""
    r = signed.webhook(identity_change("447700900123", "ONP=", NOW - 30))
    assert r.status_code in (401, 403), r.text
    assert gate_of(signed, "447700900123")["allowed"] is True


# ----------------------------------------------------------------------------- 2. security notifications

def stack_with(procs, knobs, **daemon_options):
    """A redis, a simulator configured with knobs before the daemon starts, and the daemon."""
    r, sim = procs.redis(), procs.sim()
    sim.configure(**knobs)
    return r, sim, procs.daemon(r, sim, **daemon_options)


def metric_state(wg):
    text = wg.metrics_text()
    states = {}
    for line in text.splitlines():
        if line.startswith("waguard_security_notifications{"):
            name = line.split('state="')[1].split('"')[0]
            states[name] = int(float(line.rsplit(" ", 1)[1]))
    return states


def test_security_notifications_ensure_turns_them_on_and_says_so(procs):
    _, sim, wg = stack_with(procs, {"show_security_notifications": False})
    wait_for(lambda: sim.settings["show_security_notifications"] is True, timeout=10)
    patches = sim.calls_matching(method="PATCH", path="/v1/settings/application")
    assert len(patches) == 1 and patches[0]["body"] == {"show_security_notifications": True}
    wg.wait_log("turned it on")
    wait_for(lambda: metric_state(wg) == {"unknown": 0, "on": 1, "off": 0}, timeout=10)
    r = wg.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["security_notifications"] == {"policy": "ensure", "state": "on"}


def test_security_notifications_that_cannot_be_turned_on_make_it_not_ready(procs):
    _, sim, wg = stack_with(procs, {"show_security_notifications": False, "settings_patch_status": 403},
                             wait=False)
    # the setting's reason, not "connecting to Redis", which a slow start shows first
    def refused_for_the_setting():
        r = wg.get("/readyz")
        reason = r.json().get("reason", "") if r.status_code == 503 else ""
        return "show_security_notifications" in reason and "403" in reason
    wait_for(refused_for_the_setting, timeout=10, what="/readyz 503 naming the refused PATCH (403)")
    assert metric_state(wg)["off"] == 1
    assert sim.settings["show_security_notifications"] is False


def test_a_patch_that_failed_is_tried_again_soon(procs):
    """A WABA client that answered 503 to the PATCH is asked again within seconds, not at
    the next settings_check_s (300 s): readiness comes back once it takes it."""
    _, sim, wg = stack_with(procs, {"show_security_notifications": False, "settings_patch_status": 503},
                            wait=False)
    wait_for(lambda: wg.get("/readyz").status_code == 503, timeout=10)
    sim.configure(settings_patch_status=200)
    wait_for(lambda: wg.get("/readyz").status_code == 200, timeout=10, what="ready again without a reload")
    assert sim.settings["show_security_notifications"] is True


def test_security_notifications_check_reports_and_never_changes_them(procs):
    _, sim, wg = stack_with(procs, {"show_security_notifications": False},
                             overrides={"upstream": {"security_notifications": "check"}}, wait=False)
    # not ready for the setting's reason (before it, not ready because Redis is not up yet:
    # a slow start, under the sanitizer, shows that first)
    def not_ready_for_the_setting():
        r = wg.get("/readyz")
        return r.status_code == 503 and "show_security_notifications is off" in r.json()["reason"]
    wait_for(not_ready_for_the_setting, timeout=10, what="/readyz 503 for show_security_notifications")
    assert metric_state(wg) == {"unknown": 0, "on": 0, "off": 1}
    assert not sim.calls_matching(method="PATCH")
    # Turned on at the client: the next reading (a reload reads again) makes it ready.
    sim.configure(show_security_notifications=True)
    wg.reload()
    wait_for(lambda: wg.get("/readyz").status_code == 200, timeout=10)
    assert metric_state(wg)["on"] == 1
    assert not sim.calls_matching(method="PATCH")


def test_security_notifications_off_reads_nothing_and_cloud_has_none(procs):
    r, sim, wg = stack_with(procs, {"show_security_notifications": False},
                             overrides={"upstream": {"security_notifications": "off"}})
    time.sleep(0.5)
    assert not sim.calls_matching(path="/v1/settings/application")
    assert wg.get("/readyz").status_code == 200
    assert "waguard_security_notifications" not in wg.metrics_text()
    # The Cloud API has no such setting: nothing read there either.
    sim2 = procs.sim()
    sim2.configure(show_security_notifications=False)
    wg2 = procs.daemon(r, sim2, overrides={"upstream": {"api": "cloud", "auth": "none"}})
    time.sleep(0.5)
    assert not sim2.calls_matching(path="/v1/settings/application")
    assert wg2.get("/readyz").status_code == 200


# ----------------------------------------------------------------------------- 3. methods

def test_patch_settings_is_forwarded_and_every_other_answer_is_json(procs):
    _, sim, wg = stack_with(procs, {"show_security_notifications": True})
    body = {"webhooks": {"url": "https://waguard.example.com/webhook"}}
    r = wg.request("PATCH", "/v1/settings/application", token=ADMIN_TOKEN, json=body)
    assert r.status_code == 200, r.text
    got = [c for c in sim.calls_matching(method="PATCH", path="/v1/settings/application")
           if c["body"] == body]
    assert len(got) == 1
    # A settings change is an operator's act: an API token cannot make it.
    r = wg.request("PATCH", "/v1/settings/application", token=API_TOKEN, json=body)
    assert r.status_code == 403, r.text
    assert r.headers["Content-Type"].startswith("application/json")

    for method, path, status, allow in [("OPTIONS", "/v1/gate/16315551234", 405, "GET"),
                                        ("DELETE", "/webhook", 405, "GET, POST"),
                                        ("PATCH", "/webhook", 405, "GET, POST"),
                                        ("PUT", "/healthz", 405, "GET"),
                                        ("GET", "/v1/no/such/route", 404, None),
                                        ("GET", "/v1/identities/retry", 405, "POST"),
                                        ("PROPFIND", "/v1/gate/16315551234", 501, None),
                                        ("BREW", "/v1/gate", 501, None),
                                        # a Cloud path: Graph's envelope
                                        ("GET", "/v21.0/PN1/messages", 405, "POST"),
                                        ("BREW", "/v21.0/PN1/messages", 501, None),
                                        ("PUT", "/v21.0/PN1/marketing_messages", 405, "POST")]:
        r = wg.request(method, path, token=API_TOKEN)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), (method, path, r.text)
        assert "<html" not in r.text.lower()
        if path.startswith("/v21.0/"):
            assert r.json()["error"]["error_data"]["details"], (method, path)
        else:
            assert r.json()["errors"][0]["details"], (method, path)
        if allow:
            assert r.headers["Allow"] == allow, (method, path, r.headers.get("Allow"))


def test_graph_settings_changes_are_an_operators_act(procs):
    """POST /VERSION/PNID/settings turns the Cloud's identity key check on or off."""
    r, sim = procs.redis(), procs.sim(auth="none")
    wg = procs.daemon(r, sim, overrides={"upstream": {"api": "cloud", "auth": "none", "phone_number_id": "PN1",
                                                      "identity_check": "on"}})
    wait_for(lambda: '"PN1":"on"' in wg.get("/readyz").text.replace(" ", ""), timeout=10)
    body = {"user_identity_change": {"enable_identity_key_check": False}}
    before = len(sim.calls)
    res = wg.post("/v21.0/PN1/settings", token=API_TOKEN, json=body)
    assert res.status_code == 403, res.text
    assert not [c for c in sim.calls[before:] if c["path"].endswith("/settings")]
    n = len([c for c in sim.calls if c["path"] == "/v21.0/PN1/settings" and c["method"] == "POST"])
    res = wg.post("/v21.0/PN1/settings", token=ADMIN_TOKEN, json=body)
    assert res.status_code < 500, res.text
    # Turned off through waguard: the check is read and turned on again at once (identity_check = on),
    # so /readyz never reports "on" for a check that is off.
    posts = lambda: [c["body"] for c in sim.calls if c["path"] == "/v21.0/PN1/settings" and c["method"] == "POST"]
    wait_for(lambda: len(posts()) >= n + 2, timeout=10, what="the check turned on again")
    assert posts()[n] == body and posts()[-1] == {"user_identity_change": {"enable_identity_key_check": True}}


# ----------------------------------------------------------------------------- 4./6. configuration

def check_config(tmp_path, text, env=None, name="waguard.conf"):
    p = tmp_path / name
    p.write_text(text)
    for f in ("webhook_token", "api_tokens", "admin_tokens"):
        (tmp_path / f).write_text({"webhook_token": "t\n"}.get(f, "svc:abcdefabcdefabcdef0123\n"))
    res = subprocess.run([BIN, "--config", str(p), "--check-config"], capture_output=True, text=True,
                         env=clean_env(dict(env or {}, CREDENTIALS_DIRECTORY=str(tmp_path))), timeout=20)
    assert res.returncode >= 0, "killed by signal %d: %s" % (-res.returncode, res.stderr)
    return res


BASE = """[server]
listen = 127.0.0.1:1
[upstream]
url = http://127.0.0.1:1
auth = none
[webhook]
token_file = webhook_token
[api]
tokens_file = api_tokens
admin_tokens_file = admin_tokens
[gate]
home_country_code = 44
"""


@pytest.mark.parametrize("key", ["_templates = t{i}", "_s = 60"])
def test_hold_categories_are_bounded_however_they_are_given(tmp_path, key):
    cats = "".join("c%d%s\n" % (i, key.format(i=i)) for i in range(16))
    ok = check_config(tmp_path, BASE + "[hold]\n" + cats)
    assert ok.returncode == 0, ok.stderr
    res = check_config(tmp_path, BASE + "[hold]\n" + cats + "c16%s\n" % key.format(i=16))
    assert res.returncode == 78, res.stderr
    assert "at most 16 hold categories" in res.stderr and "c16" in res.stderr, res.stderr


def test_sixteen_categories_with_both_keys_each_are_sixteen(tmp_path):
    cats = "".join("c%d_s = 60\nc%d_templates = t%d\n" % (i, i, i) for i in range(16))
    res = check_config(tmp_path, BASE + "[hold]\n" + cats)
    assert res.returncode == 0, res.stderr


def test_a_reload_with_too_many_categories_is_refused_and_the_daemon_lives(procs):
    r = procs.redis()
    wg = procs.daemon(r, None)
    cats = {"c%d_templates" % i: "t%d" % i for i in range(20)}
    start = wg.log_size()
    wg.write_config(overrides={"hold": cats})
    wg.reload()
    wg.wait_log("at most 16 hold categories", start=start)
    assert wg.alive() and wg.get("/healthz").status_code == 200


def test_many_sections_and_keys_never_crash_the_parser(tmp_path):
    """Random configurations: many sections, known and unknown keys, repeated ones, holds by
    both kinds of key. Each is accepted or refused with exit 78 and a line; none crashes."""
    rng = random.Random(int(os.environ.get("CONFIG_FUZZ_SEED", "0")) or 1234)
    sections = ["server", "redis", "upstream", "webhook", "api", "identity", "gate", "hold", "log",
                "contacts", "proxy", "metrics", "x%d"]
    keys = ["listen", "url", "auth", "path", "level", "ack", "fail", "home_country_code", "check_budget",
            "c%d_s", "c%d_templates", "bogus%d", "token_file"]
    for n in range(60):
        lines = [BASE]
        for _ in range(rng.randrange(1, 40)):
            s = rng.choice(sections)
            lines.append("[%s]" % (s % rng.randrange(99) if "%d" in s else s))
            for _ in range(rng.randrange(0, 12)):
                k = rng.choice(keys)
                k = k % rng.randrange(40) if "%d" in k else k
                lines.append("%s = %s" % (k, rng.choice(["60", "x", "", "t1,t2", "http://a:1", "-1"])))
        res = check_config(tmp_path, "\n".join(lines) + "\n")
        assert res.returncode in (0, 78), (n, res.returncode, res.stderr)
        if res.returncode == 78:
            assert res.stderr.strip(), n


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    res = check_config(tmp_path, BASE + "[log]\nlevel = info\n\n[log]\nlevel = debug\n")
    assert res.returncode == 78, res.stderr
    lines = BASE.count("\n")
    assert "log.level" in res.stderr and "lines %d and %d" % (lines + 2, lines + 5) in res.stderr, res.stderr
    res = check_config(tmp_path, BASE + "[hold]\notp_s = 60\notp_s = 120\n")
    assert res.returncode == 78 and "given twice" in res.stderr and "otp_s" in res.stderr, res.stderr


@pytest.mark.parametrize("var", ["WAGUARD_LOG_LEVLE", "WAGUARD_GATE_HOME_COUNTRY", "WAGUARD_FOO"])
def test_a_waguard_variable_that_names_no_key_is_refused(tmp_path, var):
    res = check_config(tmp_path, BASE, env={var: "debug"})
    assert res.returncode == 78 and var in res.stderr, res.stderr
    ok = check_config(tmp_path, BASE, env={"WAGUARD_LOG_LEVEL": "debug"})
    assert ok.returncode == 0, ok.stderr


def test_the_start_refuses_what_check_config_refuses(procs):
    r = procs.redis()
    wg = procs.daemon(r, None, env={"WAGUARD_LOG_LEVLE": "debug"}, start=False)
    wg.start(wait=False)
    assert wg.wait_exit(timeout=10) == 78
    assert "WAGUARD_LOG_LEVLE" in wg.log()


# ----------------------------------------------------------------------------- 5. budget

def test_a_check_that_can_never_fit_the_budget_is_400(procs):
    _, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "3"}})
    r = wg.post("/v1/contacts", token=API_TOKEN,
                json={"blocking": "wait", "contacts": ["+4477009001%02d" % i for i in range(4)]})
    assert r.status_code == 400, r.text
    d = r.json()["errors"][0]["details"]
    assert "4 numbers" in d and "check_budget (3)" in d and "Retry-After" not in r.headers
    assert not sim.calls_matching(method="POST", path="/v1/contacts")


def test_numbers_that_cannot_be_read_are_counted_too(procs):
    _, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "3"}})
    r = wg.post("/v1/contacts", token=API_TOKEN,
                json={"blocking": "wait", "contacts": ["not a number", {"x": 1}, "+5511987654321"]})
    assert r.status_code == 200, r.text
    r = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+819012345678"]})
    assert r.status_code == 429, r.text
    assert "3 numbers were checked" in r.json()["errors"][0]["details"]
    assert len(sim.calls_matching(method="POST", path="/v1/contacts")) == 1


def test_with_redis_down_the_budget_fails_closed(procs):
    r, sim, wg = procs.stack(overrides={"contacts": {"check_budget": "100"}})
    r.stop()
    wait_for(lambda: wg.get("/readyz").status_code == 503, timeout=10)
    res = wg.post("/v1/contacts", token=API_TOKEN, json={"blocking": "wait", "contacts": ["+2348031234567"]})
    assert res.status_code == 503, res.text
    assert "budget" in res.json()["errors"][0]["details"]
    assert not sim.calls_matching(method="POST", path="/v1/contacts")


# ----------------------------------------------------------------------------- 7. dialling, blocklist

def test_inputs_that_read_as_one_number_only_by_a_guess_keep_their_own_mappings(procs):
    """Home country India. By the seed's rule "+91 98765 43210" and "98765 43210" are one number
    (91 put in front); "098765 43210" is another (91 in front of 098…). The contact-check answer
    for one never replaces the other's mapping, and the gate asked with "098765 43210" refuses
    for everyone the input could name (its trunk-0 reading is +91 98765 43210)."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"gate": {"home_country_code": "91"}, **MANUAL})
    a, b = "919876543210", "9109876543210"
    wg.webhook_ok(contacts_callback(contact_result("+91 98765 43210", "valid", a)))
    wg.webhook_ok(contacts_callback(contact_result("098765 43210", "valid", b)))
    assert gate_of(wg, "+91 98765 43210")["wa_id"] == a
    assert gate_of(wg, "98765 43210")["wa_id"] == a           # the seed's reading: the same number
    assert gate_of(wg, "098765 43210")["wa_id"] == b
    # a's identity changes: every input that could mean a refuses, b's own input included.
    wg.webhook_ok(identity_change(a, "IN1=", NOW - 60))
    for form in ("+91 98765 43210", "98765 43210", "098765 43210", "0091 98765 43210"):
        d = gate_of(wg, form)
        assert d["allowed"] is False and "identity_unacknowledged" in d["reasons"], (form, d)


def test_a_home_number_written_without_plus_is_read_both_ways_only_to_refuse(procs):
    """US home: "1 631 555 1005" is, by the seed, 1+1631… (no such number: 12 digits of +1);
    read as +1 631 555 1005 it names a user whose identity changed: refused, never allowed
    on the seed's reading alone."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides=MANUAL)
    wg.webhook_ok(identity_change("16315551005", "US1=", NOW - 60))
    d = gate_of(wg, "1 631 555 1005")
    assert d["allowed"] is False and "identity_unacknowledged" in d["reasons"], d
    # A number nobody has written to and whose readings are unknown is allowed by identity.
    d = gate_of(wg, "+16315551006")
    assert "identity_unacknowledged" not in d.get("reasons", []), d


@pytest.mark.parametrize("entry,gate_as", [
    ("16315551234@s.whatsapp.net", "16315551234"),     # a WhatsApp address: its wa_id
    ("BR.1234abcd", "BR.1234abcd"),                     # a Cloud user id
    ("CO.ENT.99ab", "CO.ENT.99ab"),                     # a parent user id
    ("wa-id-17", None),                                 # a shape no recipient has: kept as it is
])
def test_blocklist_entries_of_any_shape_are_kept(procs, entry, gate_as):
    r, sim, wg = procs.stack(overrides={"upstream": {"blocklist_sync_s": "1"}})
    with sim.lock:
        sim.blocked[entry] = {"time": time.time(), "reason": None}
    kept = entry if gate_as is None else gate_as
    wait_for(lambda: r.client().hget(wg.user_key(kept), "blocked") in (b"1", "1"), timeout=10,
             what="the blocklist entry %r kept" % entry)
    if gate_as:
        d = gate_of(wg, gate_as)
        assert d["allowed"] is False and "blocked" in d["reasons"], d


@pytest.mark.parametrize("home,raw", [("1", "038338340407661"), ("234", "0803 123 4567 8901"), ("44", "+44(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)7700")])
def test_a_contact_check_answer_no_rule_can_dial_is_taken_and_the_daemon_lives(procs, home, raw):
    """libFuzzer found both: a contact-check input that is no number by the seed's rule made
    the parser write through a NULL reason (a crash on a webhook the WABA client sends), and
    many "(0)" wrote past the digits."""
    r = procs.redis()
    wg = procs.daemon(r, None, overrides={"gate": {"home_country_code": home}})
    body = contacts_callback(contact_result("+49 151 23456789", "valid", "4915123456789"),
                             contact_result(raw, "invalid"))
    res = wg.webhook(body)
    assert res.status_code == 200, res.text
    assert wg.alive() and wg.get("/healthz").status_code == 200
    assert gate_of(wg, "+49 151 23456789")["wa_id"] == "4915123456789"
