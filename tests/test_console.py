"""The operator console (console/, served at /console/) in a real browser: Debian's headless
Chromium driven through Selenium, against the real daemon, Redis and the WABA simulator.

  * the security headers of every console file, and no inline script or style in them;
  * sign-in: a wrong token says so; the token lives in the tab's sessionStorage only (never
    in a URL or a cookie); sign-out forgets it;
  * an operator sees a pending change a webhook just brought, acknowledges it with a reason
    in the in-page dialog (a reason is required), the gate opens and the audit view shows
    the operator's token name and the reason;
  * a hostile profile name is shown as text and nothing of it runs or is created;
  * an api token sees the pending row and cannot act (no act buttons; the API says 403);
  * failed acknowledgements: "retry all" shows the count first and handles a changed count;
  * a user's page: found by a dialled number, record, history, attempts, audit trail, the
    gate's decisions, and releasing a hold; an ambiguous number lists the users it names.

Every page load records Content-Security-Policy violations (a listener installed before the
console's scripts run): each test ends with none, and no JavaScript error in the console.
Screenshots of each step go to build/screenshots/; with CONSOLE_DOCS_SHOT=1 the pending view
with the acknowledgement dialog is copied to docs/console.png (the README shows it), so that a
test run leaves the tree as it was.
"""
import base64
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from daemon import ADMIN_TOKEN, API_TOKEN, WEBHOOK_TOKEN
from helpers import (body, contact_result, contacts_callback, identity_change, inbound_text_msg,
                     new_wa_id, now_s, wait_for, world_dialled, world_wa_id)

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - python3-selenium is a test dependency
    webdriver = None

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots"
DOCS_SHOT = ROOT / "docs" / "console.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--window-size=1400,900", "--lang=en-US"]
WAIT_S = 20

MANUAL = {"identity": {"ack": "manual"}}
HOLD = {"identity": {"ack": "manual"},
        "hold": {"authentication_s": "600", "authentication_templates": "otp_login"}}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

# Installed in every document before its own scripts: what the Content-Security-Policy
# refused, so that a test sees an injection the policy stopped as well as one that ran.
RECORD_CSP = """
window.__wgCsp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__wgCsp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
});
"""

HOSTILE_NAME = ('<img src=x onerror="window.__wgPwned=1"><script>window.__wgPwned=2</script>'
                '<b onmouseover="window.__wgPwned=3">&amp;</b>')


# ----------------------------------------------------------------------------- the browser

class Console:
    """One Chromium window on the console of one daemon."""

    def __init__(self, driver, name):
        self.d = driver
        self.name = name
        self.step = 0
        self.base = None

    # -- navigation
    def open(self, wg, route=""):
        self.base = wg.url
        self.d.get(wg.url + "/console/" + route)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", "the page to load")

    def go(self, route):
        """Follow a hash route in the page (as a click on a link would)."""
        self.d.execute_script("location.hash = arguments[0]", route)

    def click_nav(self, view):
        self.wait_css('a.tab[data-view="%s"]' % view, "the %s tab" % view).click()
        self.wait(lambda d: d.find_element(By.CSS_SELECTOR, 'a.tab[data-view="%s"]' % view)
                  .get_attribute("aria-current") == "page", "the %s tab to be current" % view)

    # -- waiting
    def wait(self, cond, what, timeout=WAIT_S):
        def ok(d):
            try:
                return cond(d)
            except StaleElementReferenceException:
                return False
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(ok)
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError("timed out after %ss waiting for %s; page text:\n%s"
                                 % (timeout, what, self.page_text()[:3000]))

    def wait_css(self, css, what=None, visible=True):
        def found(d):
            els = d.find_elements(By.CSS_SELECTOR, css)
            els = [e for e in els if e.is_displayed()] if visible else els
            return els[0] if els else False
        return self.wait(found, what or css)

    def wait_gone(self, css, what=None):
        return self.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, css), what or "%s to go away" % css)

    def row(self, wa_id, scope=""):
        return self.wait_css('%s tr[data-wa-id="%s"]' % (scope, wa_id), "the row of %s" % wa_id)

    def page_text(self):
        try:
            return self.d.find_element(By.TAG_NAME, "body").text
        except Exception:  # noqa: BLE001
            return ""

    # -- acting
    def sign_in(self, token):
        field = self.wait_css('input[name="token"]', "the sign-in form")
        field.clear()
        field.send_keys(token)
        self.d.find_element(By.CSS_SELECTOR, 'form#signin-form button[type="submit"]').click()

    def signed_in_as(self, caller):
        self.wait(lambda d: d.find_elements(By.ID, "caller") and d.find_element(By.ID, "caller").text == caller,
                  "signed in as %s" % caller)

    def dialog(self):
        return self.wait_css("dialog[open]", "an open dialog")

    def confirm(self):
        self.d.find_element(By.CSS_SELECTOR, 'dialog[open] button[type="submit"]').click()

    def find_user(self, text):
        field = self.d.find_element(By.CSS_SELECTOR, 'input[name="user"]')
        field.clear()
        field.send_keys(text)
        self.d.find_element(By.CSS_SELECTOR, "form.find button[type=submit]").click()

    # -- evidence
    def shot(self, label):
        self.step += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / ("%s-%02d-%s.png" % (self.name, self.step, label))
        self.d.save_screenshot(str(path))
        return path

    def storage(self):
        return self.d.execute_script(
            "const o = {session: {}, local: {}};"
            "for (let i = 0; i < sessionStorage.length; i++) { const k = sessionStorage.key(i); o.session[k] = sessionStorage.getItem(k); }"
            "for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i); o.local[k] = localStorage.getItem(k); }"
            "o.cookie = document.cookie; return o;")

    def assert_token_only_in_session_storage(self, token):
        s = self.storage()
        assert token in s["session"].values(), s
        assert token not in s["local"].values() and s["cookie"] == "", s
        assert self.d.get_cookies() == [], self.d.get_cookies()
        assert token not in self.d.current_url and quote(token) not in self.d.current_url, self.d.current_url

    def csp_violations(self):
        return self.d.execute_script("return window.__wgCsp || null")

    def assert_clean(self):
        """No CSP violation in this document and no JavaScript error in the console."""
        v = self.csp_violations()
        assert v == [], "Content-Security-Policy violations: %r" % v
        errors = [e for e in self.d.get_log("browser")
                  if e["level"] == "SEVERE" and e.get("source") != "network"]
        assert errors == [], "JavaScript errors: %r" % errors


@pytest.fixture
def console(request):
    if webdriver is None or not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip("the console tests need Chromium, chromedriver and python3-selenium")
    profile = tempfile.mkdtemp(prefix="wgt-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in CHROME_ARGS:
        opts.add_argument(a)
    opts.add_argument("--user-data-dir=" + profile)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP})
    c = Console(driver, request.node.name.replace("test_", "", 1))
    try:
        yield c
    finally:
        failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                     for w in ("setup", "call"))
        if failed:
            try:
                c.shot("failed")
            except Exception:  # noqa: BLE001
                pass
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers

def named_user(wg, w, name):
    """An inbound message from w whose contacts[].profile.name is name."""
    wg.webhook_ok(body(contacts=[{"profile": {"name": name}, "wa_id": w}], messages=[inbound_text_msg(w)]))


def pending_change(sim, wg, w, h, name=None):
    """w (with a profile name) changed identity to h: the simulator knows h, the webhook says so."""
    if name is not None:
        named_user(wg, w, name)
    t = now_s() - 600
    sim.set_identity(w, h, t * 1000)
    wg.webhook_ok(identity_change(w, h, t))
    return t


def gate_status(wg, w, type="template", category=None):
    path = "/v1/gate/%s?type=%s" % (quote(w, safe=""), type)
    if category:
        path += "&category=" + category
    return wg.get(path, token=API_TOKEN).status_code


def audit_entries(wg, w=None):
    q = "/v1/audit?limit=100" + ("&wa_id=" + quote(w, safe="") if w else "")
    r = wg.get(q, token=ADMIN_TOKEN)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def wait_state(wg, w, state, timeout=10):
    return wait_for(lambda: (lambda j: j if j and j["identity"] and j["identity"]["state"] == state else None)(
        wg.identity(w)), timeout, "%s in state %s" % (w, state), diag=lambda: repr(wg.identity(w)))


# ----------------------------------------------------------------------------- headers

def test_console_files_carry_the_security_headers(waguard):
    names = sorted(p.name for p in (ROOT / "console").iterdir()
                   if p.suffix in (".html", ".css", ".js", ".png", ".svg"))
    assert "index.html" in names and "app.js" in names, names
    paths = ["/console/", "/console"] + ["/console/" + n for n in names]
    types = {".html": "text/html", ".css": "text/css", ".js": "javascript", ".svg": "image/svg+xml", ".png": "image/png"}
    for path in paths:
        r = requests.get(waguard.url + path, timeout=5)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.headers.get("Content-Security-Policy") == CSP, (path, r.headers)
        assert r.headers.get("X-Content-Type-Options") == "nosniff", (path, r.headers)
        assert r.headers.get("Referrer-Policy") == "no-referrer", (path, r.headers)
        assert "Set-Cookie" not in r.headers, (path, r.headers)
        name = path.rsplit("/", 1)[1] or "index.html"
        if name == "console":
            name = "index.html"
        ext = "." + name.rsplit(".", 1)[1]
        assert types[ext] in r.headers.get("Content-Type", ""), (path, r.headers.get("Content-Type"))
        if ext in (".html", ".css", ".js"):
            # the files served are the files in console/, byte for byte
            assert r.content == (ROOT / "console" / name).read_bytes(), path
    # An unknown file is refused with the same protection.
    r = requests.get(waguard.url + "/console/nope.js", timeout=5)
    assert r.status_code == 404 and r.headers.get("X-Content-Type-Options") == "nosniff", r.headers
    assert "default-src 'none'" in r.headers.get("Content-Security-Policy", ""), r.headers

    # Nothing the policy would refuse, and no HTML built from strings.
    html = (ROOT / "console" / "index.html").read_text()
    assert '<script type="module" src="/console/app.js"></script>' in html
    for bad in ("style=", "onload", "onclick", "onerror", "javascript:", "http://", "https://", "<style"):
        assert bad not in html.lower(), bad
    assert html.lower().count("<script") == 1
    for js in (ROOT / "console").glob("*.js"):
        # the code, without its comments (which may name what it never does)
        text = re.sub(r"/\*.*?\*/", "", js.read_text(), flags=re.S)
        text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
        for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                    "localStorage", "document.cookie", ".style.", "setAttribute(\"style", "window.prompt",
                    "window.confirm", "alert("):
            assert bad not in text, "%s uses %s" % (js.name, bad)


# ----------------------------------------------------------------------------- sign-in

def test_wrong_token_is_refused_visibly_and_sign_out_forgets_the_token(waguard, console):
    console.open(waguard)
    console.sign_in("wrong-token-Zz9")
    err = console.wait_css("#signin-error", "the sign-in error")
    assert "wrong token" in err.text.lower() and "unknown token" in err.text, err.text
    console.shot("wrong-token")
    s = console.storage()
    assert s["session"] == {} and s["local"] == {} and s["cookie"] == "", s
    assert "wrong-token" not in console.d.current_url
    assert console.d.find_elements(By.CSS_SELECTOR, 'input[name="token"]'), "the form must stay"
    assert not console.d.find_elements(By.ID, "signout")

    # The webhook token names no api or admin role: refused too, saying why.
    console.sign_in(WEBHOOK_TOKEN)
    console.wait(lambda d: "may not read" in d.find_element(By.ID, "signin-error").text
                 or "wrong token" in d.find_element(By.ID, "signin-error").text.lower(), "the refusal")
    assert console.storage()["session"] == {}

    console.sign_in(ADMIN_TOKEN)
    console.signed_in_as("ops")
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, '[data-stat="pending"]').text == "0", "the overview")
    console.assert_token_only_in_session_storage(ADMIN_TOKEN)
    console.shot("overview")
    # A reload of the tab keeps the session (sessionStorage) ...
    console.d.refresh()
    console.signed_in_as("ops")
    # ... and signing out forgets the token and shows the form again.
    console.d.find_element(By.ID, "signout").click()
    console.wait_css('input[name="token"]', "the sign-in form after signing out")
    assert console.storage()["session"] == {}, console.storage()
    console.d.refresh()
    console.wait_css('input[name="token"]', "the sign-in form after a reload")
    assert not console.d.find_elements(By.ID, "caller")
    console.assert_clean()


# ----------------------------------------------------------------------------- acknowledging

def test_operator_acknowledges_a_pending_change_and_the_audit_shows_it(procs, console):
    _, sim, wg = procs.stack(overrides=MANUAL)
    others = [(new_wa_id(), "Rahul Mehta", "cmFodWwgbmV3IGtleQ=="), (new_wa_id(), "Chidi Okafor", "Y2hpZGkgbmV3IGtleQ==")]
    for w, name, h in others:
        pending_change(sim, wg, w, h, name)
    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.signed_in_as("ops")
    console.click_nav("pending")
    for w, _, _ in others:
        console.row(w)

    # A change arrives while the operator looks at the list: it shows up by itself (the
    # user's second: the first hash is the "old" one).
    w, h, old = new_wa_id(), "bWFyaWEgbmV3IGtleQ==", "b2xkIGtleSBvZiBtYXJpYQ=="
    named_user(wg, w, "María López")
    wg.webhook_ok(identity_change(w, old, now_s() - 86400))
    pending_change(sim, wg, w, h)
    assert gate_status(wg, w) == 423
    row = console.row(w)
    assert "María López" in row.text and h in row.text, row.text
    assert row.find_element(By.CSS_SELECTOR, ".old-hash").text == old, row.text
    console.shot("pending")

    row.find_element(By.CSS_SELECTOR, 'button[data-action="ack"]').click()
    dlg = console.dialog()
    assert "María López" in dlg.text and h in dlg.text, dlg.text
    reason_box = dlg.find_element(By.CSS_SELECTOR, 'textarea[name="reason"]')
    # A reason is required: confirming without one says so and sends nothing.
    console.confirm()
    err = console.wait_css("dialog[open] .dialog-error", "the missing-reason message")
    assert "reason is required" in err.text, err.text
    assert console.d.find_elements(By.CSS_SELECTOR, "dialog[open]"), "the dialog must stay open"
    assert not [e for e in audit_entries(wg, w) if e["result"] == "requested" and e["hash"] == h]
    assert gate_status(wg, w) == 423
    reason = "Called María on the number on file; she confirmed her new phone (ticket 4711)"
    reason_box.send_keys(reason)
    shot = console.shot("acknowledge-dialog")
    if os.environ.get("CONSOLE_DOCS_SHOT") == "1":     # refresh the README's picture on purpose only
        shutil.copyfile(shot, DOCS_SHOT)
    console.confirm()
    console.wait_gone("dialog[open]", "the dialog to close")
    toast = console.wait_css("#toast", "the confirmation")
    assert "queued" in toast.text and "ops" in toast.text, toast.text

    # The worker PUTs to the WABA client a moment after the 202: the gate opens.
    wait_for(lambda: gate_status(wg, w) == 200, 10, "the gate to open after the operator's acknowledgement")
    assert gate_status(wg, others[0][0]) == 423, "only the user acknowledged"
    assert wg.identity(w)["identity"]["acknowledged_by"] == "ops"
    console.wait_gone('tr[data-wa-id="%s"]' % w, "the row to leave the pending list")
    console.row(others[0][0])
    console.shot("pending-after")

    # The audit view shows who (the token's name) and why.
    console.click_nav("audit")

    def audited(d):
        for tr in d.find_elements(By.CSS_SELECTOR, 'tr[data-wa-id="%s"]' % w):
            if tr.find_element(By.CSS_SELECTOR, ".who").text == "ops" and reason in tr.text and "requested" in tr.text:
                return tr
        return False
    tr = console.wait(audited, "the audit entry with ops and the reason")
    assert h in tr.text
    console.wait(lambda d: any("acknowledged" in t.text and "ops" in t.text
                               for t in d.find_elements(By.CSS_SELECTOR, 'tr[data-wa-id="%s"]' % w)),
                 "the acknowledgement in the audit view")
    # Searching the audit log finds the reason.
    q = console.d.find_element(By.CSS_SELECTOR, '.view-audit input[name="q"]')
    q.send_keys("ticket 4711")
    console.d.find_element(By.CSS_SELECTOR, ".view-audit form.search button[type=submit]").click()
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")) == 1
                 and reason in d.find_element(By.CSS_SELECTOR, "#audit-table tbody tr").text, "one entry found")
    console.shot("audit")
    assert any(e["who"] == "ops" and e["reason"] == reason for e in audit_entries(wg, w))
    console.assert_token_only_in_session_storage(ADMIN_TOKEN)
    assert ADMIN_TOKEN not in console.page_text()
    console.assert_clean()


# ----------------------------------------------------------------------------- hostile data

def test_hostile_profile_name_is_shown_as_text(procs, console):
    _, sim, wg = procs.stack(overrides=MANUAL)
    w = new_wa_id()
    pending_change(sim, wg, w, "aG9zdGlsZQ==", HOSTILE_NAME)
    assert wg.identity(w)["name"] == HOSTILE_NAME, "the daemon keeps the name as it came"
    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.click_nav("pending")
    row = console.row(w)

    def harmless():
        assert console.d.execute_script("return document.querySelectorAll('img, b, svg, iframe, object').length") == 0
        assert console.d.execute_script("return document.scripts.length") == 1
        assert console.d.execute_script("return typeof window.__wgPwned") == "undefined"
        assert console.csp_violations() == [], console.csp_violations()

    name = row.find_element(By.CSS_SELECTOR, ".profile-name")
    assert name.text == HOSTILE_NAME, name.text
    harmless()
    console.shot("pending")
    # The search for it finds the row and echoes it as text.
    search = console.d.find_element(By.CSS_SELECTOR, '.view-pending input[name="q"]')
    search.send_keys(HOSTILE_NAME)
    console.d.find_element(By.CSS_SELECTOR, ".view-pending form.search button[type=submit]").click()
    console.row(w)
    harmless()
    # The dialog names the user by it.
    console.row(w).find_element(By.CSS_SELECTOR, 'button[data-action="ack"]').click()
    dlg = console.dialog()
    assert HOSTILE_NAME in dlg.find_element(By.TAG_NAME, "h2").text
    harmless()
    console.shot("dialog")
    dlg.find_element(By.CSS_SELECTOR, 'textarea[name="reason"]').send_keys('<img src=x onerror="window.__wgPwned=4">')
    console.confirm()
    console.wait_gone("dialog[open]")
    # The user's page: the heading, the record, the audit trail with the hostile reason.
    console.go("#user/" + w)
    head = console.wait_css(".view-user h1 .profile-name", "the user's page")
    assert head.text == HOSTILE_NAME, head.text
    console.wait(lambda d: '<img src=x onerror="window.__wgPwned=4">' in d.find_element(By.CSS_SELECTOR, ".audit-trail").text,
                 "the reason in the audit trail")
    harmless()
    console.shot("user")
    # An input that names nobody is echoed back in the error, as text.
    console.find_user("<img src=x onerror=window.__wgPwned=5>")
    err = console.wait_css(".view-user .problem", "the refusal of a bad wa_id")
    assert "<img src=x onerror=window.__wgPwned=5>" in err.text, err.text
    harmless()
    console.go("#audit")
    console.wait(lambda d: d.find_elements(By.CSS_SELECTOR, '#audit-table tr[data-wa-id="%s"]' % w), "the audit view")
    harmless()
    console.assert_clean()


# ----------------------------------------------------------------------------- api token

def test_api_token_sees_the_pending_row_but_cannot_act(procs, console):
    _, sim, wg = procs.stack(overrides=HOLD)
    w, h = new_wa_id(), "cmVhZC1vbmx5IGtleQ=="
    pending_change(sim, wg, w, h, "Read Only")
    console.open(wg)
    console.sign_in(API_TOKEN)
    console.signed_in_as("svc")
    assert "read-only" in console.d.find_element(By.ID, "role").text
    console.click_nav("pending")
    row = console.row(w)
    assert "Read Only" in row.text and h in row.text, row.text

    def no_act_buttons():
        for b in console.d.find_elements(By.CSS_SELECTOR, "button"):
            label = b.text.strip().lower()
            if any(x in label for x in ("acknowledge", "release", "retry")) or b.get_attribute("data-action") in (
                    "ack", "release", "retry", "retry-all"):
                assert not b.is_enabled() or not b.is_displayed(), "an act button for an api token: %r" % b.text
    no_act_buttons()
    console.shot("pending")
    console.click_nav("failed")
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, ".view-failed").get_attribute("data-loaded") == "1",
                 "the failed list")
    no_act_buttons()
    console.click_nav("held")
    console.row(w)
    no_act_buttons()
    console.go("#user/" + w)
    console.wait_css(".view-user[data-loaded] .decisions", "the user's page")
    no_act_buttons()
    console.shot("user")

    # The API refuses the acts to an api token, from the browser as from anywhere.
    status = console.d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = sessionStorage.getItem(sessionStorage.key(0));
        fetch('/v1/identities/' + encodeURIComponent(arguments[0]) + '/ack', {method: 'POST',
              headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'},
              body: JSON.stringify({reason: 'forced'})}).then(r => done(r.status), e => done(String(e)));
    """, w)
    assert status == 403, status
    for path, payload in (("/v1/identities/%s/ack" % w, {"reason": "x"}),
                          ("/v1/identities/%s/release" % w, {"reason": "x"}),
                          ("/v1/identities/retry", {"expected": 0})):
        r = wg.post(path, token=API_TOKEN, json=payload)
        assert r.status_code == 403, (path, r.status_code, r.text)
    assert gate_status(wg, w) == 423
    assert not [e for e in audit_entries(wg, w) if e["who"] == "svc"]
    console.assert_clean()


# ----------------------------------------------------------------------------- Cloud API

def cloud(value):
    value = dict(value, messaging_product="whatsapp",
                 metadata={"display_phone_number": "15550000000", "phone_number_id": "PNID"})
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}


def test_cloud_acknowledgement_before_the_new_hash_shows_the_refusal(procs, console):
    """On the Cloud API a refused send (137000) says the identity changed without the new
    hash: acknowledging is refused with 409 and the dialog shows why; the user's next
    message brings the hash, the row shows it, and acknowledging works."""
    _, sim, wg = procs.stack(overrides={"identity": {"ack": "manual"}, "upstream": {"api": "cloud"}})
    w, old, new = world_wa_id("GB"), "S0VZIG9uZQ==", "S0VZIHR3bw=="
    wg.webhook_ok(cloud({"contacts": [{"wa_id": w, "profile": {"name": "Ann Cloud"}, "identity_key_hash": old}],
                         "messages": [inbound_text_msg(w)]}))
    wg.webhook_ok(cloud({"statuses": [{"id": "wamid.HBgLNDQ3NzAwOTAwMDAx", "status": "failed", "recipient_id": w,
                                       "timestamp": str(now_s()),
                                       "errors": [{"code": 137000, "title": "Identity key mismatch"}]}]}))
    assert gate_status(wg, w) == 423
    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.signed_in_as("ops")
    console.wait(lambda d: "Cloud API" in d.find_element(By.CSS_SELECTOR, ".service").text, "the overview")
    console.click_nav("pending")
    row = console.row(w)
    assert row.find_element(By.CSS_SELECTOR, ".old-hash").text == old, row.text
    assert "not known yet" in row.find_element(By.CSS_SELECTOR, ".new-hash").text, row.text
    row.find_element(By.CSS_SELECTOR, 'button[data-action="ack"]').click()
    console.dialog().find_element(By.CSS_SELECTOR, 'textarea[name="reason"]').send_keys("called Ann")
    console.confirm()
    err = console.wait_css("dialog[open] .dialog-error", "the 409 refusal")
    assert "Cloud API has no call" in err.text, err.text
    console.shot("refused")
    console.d.find_element(By.CSS_SELECTOR, 'dialog[open] button[data-action="cancel"]').click()
    console.wait_gone("dialog[open]")
    assert gate_status(wg, w) == 423

    # The next message carries the new hash: the row shows it, and now it can be acknowledged.
    wg.webhook_ok(cloud({"contacts": [{"wa_id": w, "profile": {"name": "Ann Cloud"}, "identity_key_hash": new}],
                         "messages": [inbound_text_msg(w)]}))
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-wa-id="%s"] .new-hash' % w).text == new,
                 "the new hash in the row")
    console.row(w).find_element(By.CSS_SELECTOR, 'button[data-action="ack"]').click()
    console.dialog().find_element(By.CSS_SELECTOR, 'textarea[name="reason"]').send_keys("called Ann again")
    console.confirm()
    console.wait_gone("dialog[open]")
    wait_for(lambda: gate_status(wg, w) == 200, 10, "the gate to open")
    console.wait_gone('tr[data-wa-id="%s"]' % w)
    console.assert_clean()


# ----------------------------------------------------------------------------- failed

def test_failed_acknowledgements_retry_all_shows_the_count_first(procs, console):
    _, sim, wg = procs.stack(overrides=MANUAL)
    t = now_s() - 600
    w1, w2 = new_wa_id(), new_wa_id()
    named_user(wg, w1, "First Failed")
    named_user(wg, w2, "Second Failed")
    # The WABA client does not know w1's identity: the acknowledgement is given up.
    wg.webhook_ok(identity_change(w1, "ZmFpbGVkIG9uZQ==", t))
    assert wg.post("/v1/identities/%s/ack" % w1, token=ADMIN_TOKEN, json={"reason": "r"}).status_code == 202
    j = wait_state(wg, w1, "failed")
    assert "404" in j["identity"]["last_error"], j

    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.click_nav("failed")
    row = console.row(w1)
    assert "First Failed" in row.text and "404" in row.text, row.text
    console.shot("failed")
    console.d.find_element(By.CSS_SELECTOR, 'button[data-action="retry-all"]').click()
    dlg = console.dialog()
    assert dlg.find_element(By.CSS_SELECTOR, ".retry-count").text == "1", dlg.text
    console.shot("retry-all-dialog")

    # Another one fails while the operator reads the dialog: the count changed, nothing is
    # retried, and the dialog shows the new count.
    wg.webhook_ok(identity_change(w2, "ZmFpbGVkIHR3bw==", t))
    assert wg.post("/v1/identities/%s/ack" % w2, token=ADMIN_TOKEN, json={"reason": "r"}).status_code == 202
    wait_state(wg, w2, "failed")
    sim.set_identity(w1, "ZmFpbGVkIG9uZQ==", t * 1000)
    sim.set_identity(w2, "ZmFpbGVkIHR3bw==", t * 1000)
    console.confirm()
    err = console.wait_css("dialog[open] .dialog-error", "the changed-count message")
    assert "Nothing was retried" in err.text and "2 are failed now, not 1" in err.text, err.text
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open] .retry-count").text == "2", "the new count")
    assert wg.identity(w1)["identity"]["state"] == "failed", "nothing was retried on a changed count"
    console.shot("count-changed")
    console.confirm()
    console.wait_gone("dialog[open]")
    toast = console.wait_css("#toast")
    assert "Asked again for 2" in toast.text, toast.text
    for w in (w1, w2):
        wait_for(lambda: gate_status(wg, w) == 200, 10, "%s acknowledged after the retry" % w)
    console.wait_gone('tr[data-wa-id="%s"]' % w1)
    console.wait_gone('tr[data-wa-id="%s"]' % w2)
    console.wait_css(".view-failed .empty", "the empty failed list")
    console.shot("failed-after")
    assert any(e["who"] == "ops" and e["result"] == "requested" and "every failed" in (e["reason"] or "")
               for e in audit_entries(wg, w2)), audit_entries(wg, w2)
    console.assert_clean()


# ----------------------------------------------------------------------------- a user's page

def test_user_page_shows_record_history_gate_and_releases_a_hold(procs, console):
    _, sim, wg = procs.stack(overrides=HOLD)
    w, h = new_wa_id(), "am8gYmxvZ2dzIG5ldw=="
    pending_change(sim, wg, w, h, "Jo Bloggs")
    assert wg.post("/v1/identities/%s/ack" % w, token=ADMIN_TOKEN,
                   json={"reason": "verified by video call"}).status_code == 202
    wait_for(lambda: gate_status(wg, w) == 200, 10, "acknowledged")
    assert gate_status(wg, w, category="authentication") == 423, "held after the change"

    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.signed_in_as("ops")
    dialled = "+1 (%s) %s-%s" % (w[1:4], w[4:7], w[7:])
    console.find_user(dialled)
    head = console.wait_css(".view-user[data-loaded] h1", "the user's page")
    assert head.text == "Jo Bloggs", head.text
    page = console.d.find_element(By.CSS_SELECTOR, ".view-user")
    assert w in page.text
    assert h in page.find_element(By.CSS_SELECTOR, "table.history").text
    acks = page.find_element(By.CSS_SELECTOR, "table.acks").text
    assert "ops" in acks and "acknowledged" in acks and "verified by video call" in acks, acks
    assert "verified by video call" in page.find_element(By.CSS_SELECTOR, ".audit-trail").text
    gate = {tr.get_attribute("data-gate-type"): tr for tr in page.find_elements(By.CSS_SELECTOR, "table.gate tbody tr")}
    assert set(gate) == {"template", "text"}, list(gate)
    assert gate["template"].get_attribute("data-allowed") == "true" and "allowed" in gate["template"].text
    assert not page.find_elements(By.XPATH, ".//button[normalize-space()='Acknowledge']"), "already acknowledged"
    console.shot("user")

    page.find_element(By.CSS_SELECTOR, 'button[data-action="release"]').click()
    dlg = console.dialog()
    console.confirm()
    console.wait_css("dialog[open] .dialog-error", "the missing-reason message")
    assert gate_status(wg, w, category="authentication") == 423
    dlg.find_element(By.CSS_SELECTOR, 'textarea[name="reason"]').send_keys("customer came to the branch with ID")
    dlg.find_element(By.CSS_SELECTOR, 'input[name="category"]').send_keys("authentication")
    console.shot("release-dialog")
    console.confirm()
    console.wait_gone("dialog[open]")
    toast = console.wait_css("#toast")
    assert "released" in toast.text and "authentication" in toast.text, toast.text
    assert gate_status(wg, w, category="authentication") == 200
    console.wait(lambda d: "customer came to the branch with ID" in d.find_element(By.CSS_SELECTOR, ".audit-trail").text
                 and "hold_released:authentication" in d.find_element(By.CSS_SELECTOR, ".audit-trail").text,
                 "the release in the user's audit trail")
    console.shot("released")

    # A number no user has, and one that names two users.
    console.find_user("+44 7700 900999")
    err = console.wait_css(".view-user .problem")
    assert "No such user" in err.text, err.text
    mx = world_wa_id("MX")
    mx_dialled = world_dialled("MX", mx)
    literal = "".join(c for c in mx_dialled if c.isdigit())
    wg.webhook_ok(contacts_callback(contact_result(mx_dialled, "valid", mx)))
    named_user(wg, mx, "Mexico Mobile")
    named_user(wg, literal, "Mexico Literal")
    console.find_user(mx_dialled)
    err = console.wait_css(".view-user .problem .considered", "the users considered")
    links = err.find_elements(By.CSS_SELECTOR, "a")
    assert sorted(a.text for a in links) == sorted([mx, literal]), err.text
    next(a for a in links if a.text == literal).click()
    head = console.wait_css('.view-user[data-input="%s"][data-loaded] h1' % literal, "the page of the user chosen")
    assert head.text == "Mexico Literal", head.text
    console.assert_clean()


def test_pending_list_pages_and_searches(procs, console):
    _, sim, wg = procs.stack(overrides=MANUAL)
    users = []
    for i in range(55):
        w = new_wa_id()
        pending_change(sim, wg, w, base64.b64encode(b"paged key %d" % i).decode(), "Paged User %02d" % i)
        users.append(w)
    assert len(wg.identities("pending")) == 55
    console.open(wg)
    console.sign_in(ADMIN_TOKEN)
    console.click_nav("pending")
    rows = lambda d: d.find_elements(By.CSS_SELECTOR, "#pending-table tbody tr")  # noqa: E731
    console.wait(lambda d: len(rows(d)) == 50, "the first page of 50")
    first = {r.get_attribute("data-wa-id") for r in rows(console.d)}
    console.d.find_element(By.XPATH, "//nav[@class='pager']/button[contains(., 'Next')]").click()
    console.wait(lambda d: len(rows(d)) == 5, "the second page of 5")
    second = {r.get_attribute("data-wa-id") for r in rows(console.d)}
    assert first | second == set(users) and not first & second
    console.d.find_element(By.XPATH, "//nav[@class='pager']/button[contains(., 'Previous')]").click()
    console.wait(lambda d: len(rows(d)) == 50, "the first page again")
    q = console.d.find_element(By.CSS_SELECTOR, '.view-pending input[name="q"]')
    q.send_keys("paged user 42" + Keys.ENTER)
    console.wait(lambda d: [r.get_attribute("data-wa-id") for r in rows(d)] == [users[42]], "one match")
    console.shot("search")
    console.assert_clean()
