"""Command line and configuration: --version/--help/--check-config, error messages naming
file:line: key, environment overrides, secrets from $CREDENTIALS_DIRECTORY, the refusal to
expose an unauthenticated webhook, and SIGHUP reloads."""
import re
import signal
import subprocess
import time

import pytest
import requests

from daemon import (API_TOKEN, DEFAULT_FILES, NO_REDIS_URL, WEBHOOK_TOKEN, WAGUARD_BIN, clean_env,
                    default_config, merge_config, render_config)
from helpers import (assert_error_body, check_gate_response, errors_body, free_port, identity_change,
                     new_wa_id, wait_for)

EX_CONFIG = 78
T0 = 1602535238


def run(args, env=None, timeout=20, cwd=None):
    return subprocess.run([str(WAGUARD_BIN)] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=clean_env(env), cwd=cwd)


def write_config(tmp_path, overrides=None, extra="", files=None, port=None):
    """Writes waguard.conf and the token files into tmp_path; returns (path, text)."""
    cfg = merge_config(default_config(port or free_port(), NO_REDIS_URL), overrides)
    text = render_config(cfg) + extra
    for name, content in dict(DEFAULT_FILES, **(files or {})).items():
        (tmp_path / name).write_text(content)
    p = tmp_path / "waguard.conf"
    p.write_text(text)
    return p, text


def line_of(text, section, key):
    """1-based line of `key = …` inside [section]."""
    cur = None
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            cur = s[1:-1]
        elif cur == section and re.match(r"^%s\s*=" % re.escape(key), s):
            return i
    raise KeyError((section, key))


def where_re(path, line, section, key):
    """`file:line: key:` (the key may be written section.key; the file may be its base name)."""
    return r"(?:%s|%s):%d: (?:%s\.)?%s:" % (re.escape(str(path)), re.escape(path.name), line,
                                            re.escape(section), re.escape(key))


@pytest.fixture(autouse=True)
def _need_binary(waguard_bin):
    return waguard_bin


# ----------------------------------------------------------------------------- CLI

def test_version():
    r = run(["--version"])
    assert r.returncode == 0, r
    out = r.stdout + r.stderr
    assert re.search(r"\d+\.\d+", out), out
    assert "waguard" in out.lower(), out


def test_version_matches_build_info(waguard_factory):
    out = run(["--version"]).stdout + run(["--version"]).stderr
    wg = waguard_factory()
    versions = [l["version"] for n, l, v in wg.metrics() if n == "waguard_build_info"]
    assert versions and versions[0] in out, (versions, out)


def test_help():
    r = run(["--help"])
    assert r.returncode == 0, r
    out = r.stdout + r.stderr
    for opt in ("--config", "--check-config", "--version"):
        assert opt in out, out


def test_unknown_option_is_usage_error():
    r = run(["--no-such-option"])
    assert r.returncode == 2, r


def test_missing_config_file(tmp_path):
    p = tmp_path / "nope.conf"
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode != 0, r
    assert str(p) in r.stderr or p.name in r.stderr, r.stderr


def test_check_config_good(tmp_path):
    p, _ = write_config(tmp_path)
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == 0, r.stderr
    r = run(["--check-config", "--config", str(p)])
    assert r.returncode == 0, r.stderr


def test_check_config_minimal_defaults(tmp_path):
    """An almost empty file is valid: every key has a default (login needs a password)."""
    p = tmp_path / "waguard.conf"
    for name, content in DEFAULT_FILES.items():     # in case the defaults name them
        (tmp_path / name).write_text(content)
    (tmp_path / "waba_password").write_text("secret\n")
    p.write_text("[upstream]\nauth = none\n")
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == 0, r.stderr


BAD_VALUES = [
    ("server", "max_body_bytes", "abc"),
    ("server", "max_body_bytes", "-5"),
    ("server", "listen", "127.0.0.1:notaport"),
    ("server", "timeout_s", "1.5"),
    ("redis", "url", "http://127.0.0.1:6379"),
    ("upstream", "api", "graph"),
    ("upstream", "auth", "magic"),
    ("upstream", "url", "ftp://x"),
    ("identity", "ack", "sometimes"),
    ("identity", "first_seen", "maybe"),
    ("gate", "fail", "ajar"),
    ("gate", "require_valid_contact", "perhaps"),
    ("gate", "session_window", "yes"),
    ("gate", "home_country_code", "abc"),
    ("log", "level", "loud"),
    ("webhook", "token_file", "no_such_secret_file"),
    ("api", "tokens_file", "no_such_tokens_file"),
]


@pytest.mark.parametrize("section,key,value", BAD_VALUES,
                         ids=["%s.%s=%s" % b for b in BAD_VALUES])
def test_bad_value_names_file_line_key(tmp_path, section, key, value):
    p, text = write_config(tmp_path, {section: {key: value}})
    ln = line_of(text, section, key)
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert re.search(where_re(p, ln, section, key), r.stderr), r.stderr


def test_unknown_key(tmp_path):
    p, text = write_config(tmp_path, {"server": {"colour": "blue"}})
    ln = line_of(text, "server", "colour")
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert re.search(where_re(p, ln, "server", "colour"), r.stderr), r.stderr


def test_unknown_section(tmp_path):
    p, text = write_config(tmp_path, extra="[bogus]\nfoo = 1\n")
    lines = text.splitlines()
    sec_ln = lines.index("[bogus]") + 1
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert re.search(r"(?:%s|%s):(?:%d|%d): " % (re.escape(str(p)), re.escape(p.name), sec_ln, sec_ln + 1),
                     r.stderr), r.stderr
    assert "bogus" in r.stderr, r.stderr


def test_not_ini(tmp_path):
    p, text = write_config(tmp_path, extra="this line is not ini\n")
    r = run(["--config", str(p), "--check-config"])
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert re.search(r"%s:%d:" % (re.escape(str(p)), len(text.splitlines())), r.stderr), r.stderr


def test_bad_value_stops_the_daemon_start(tmp_path):
    p, text = write_config(tmp_path, {"gate": {"fail": "ajar"}})
    r = run(["--config", str(p)], timeout=20)
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert re.search(where_re(p, line_of(text, "gate", "fail"), "gate", "fail"), r.stderr), r.stderr


# ----------------------------------------------------------------------------- environment

def test_env_override_max_body_bytes(waguard_factory):
    wg = waguard_factory(env={"WAGUARD_SERVER_MAX_BODY_BYTES": "2048"})
    small = errors_body(details="x" * 1000)
    big = errors_body(details="x" * 3000)
    assert wg.webhook(small).status_code == 200
    r = wg.webhook(big)
    assert r.status_code == 413, r.text
    j = assert_error_body(r, 413)
    assert "max_body_bytes (2048)" in j["errors"][0]["details"], j


def test_env_override_wins_over_file(waguard_factory):
    wg = waguard_factory({"gate": {"session_window": "enforce"}},
                         env={"WAGUARD_GATE_SESSION_WINDOW": "off"})
    assert wg.gate(new_wa_id(), type="text").status_code == 200


def test_env_override_bad_value_named(tmp_path):
    p, _ = write_config(tmp_path)
    r = run(["--config", str(p), "--check-config"], env={"WAGUARD_GATE_FAIL": "ajar"})
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert "WAGUARD_GATE_FAIL" in r.stderr and "fail" in r.stderr, r.stderr


# ----------------------------------------------------------------------------- exposure

def test_non_loopback_webhook_without_auth_refuses(tmp_path):
    port = free_port()
    p, text = write_config(tmp_path, {"server": {"listen": "0.0.0.0:%d" % port},
                                      "webhook": {"token_file": "", "hmac_secret_file": ""}})
    try:
        r = run(["--config", str(p)], timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("waguard started on 0.0.0.0 with an unauthenticated webhook")
    assert r.returncode != 0, r
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    err = r.stderr.lower()
    assert "webhook" in err and ("token" in err or "hmac" in err), r.stderr
    assert "loopback" in err or "0.0.0.0" in err, r.stderr


@pytest.mark.parametrize("empty", [("tokens_file",), ("admin_tokens_file",),
                                   ("tokens_file", "admin_tokens_file")],
                         ids=["api", "admin", "both"])
def test_non_loopback_api_without_tokens_refuses(tmp_path, empty):
    port = free_port()
    p, _ = write_config(tmp_path, {"server": {"listen": "0.0.0.0:%d" % port},
                                   "api": {k: "" for k in empty}})
    try:
        r = run(["--config", str(p)], timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("waguard started on 0.0.0.0 with a role that needs no token")
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert "token" in r.stderr.lower(), r.stderr


def test_non_loopback_with_token_starts(waguard_factory):
    port = free_port()
    wg = waguard_factory(listen="0.0.0.0:%d" % port, port=port)
    assert wg.webhook(errors_body()).status_code == 200
    assert wg.webhook(errors_body(), token=None).status_code == 401


def test_loopback_roles_without_tokens(waguard_factory):
    wg = waguard_factory({"webhook": {"token_file": ""},
                          "api": {"tokens_file": "", "admin_tokens_file": ""}})
    w = new_wa_id()
    assert wg.webhook(identity_change(w, "OPEN=", T0), token=None).status_code == 200
    d = check_gate_response(wg.gate(w, type="template", token=None), w)
    assert d["identity"]["hash"] == "OPEN="
    assert wg.get("/v1/identities/" + w).status_code == 200


# ----------------------------------------------------------------------------- secrets

def test_secret_from_credentials_directory(waguard_factory, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "wh_cred").write_text("from-credentials-dir-1\n")
    wg = waguard_factory({"webhook": {"token_file": "wh_cred"}},
                         env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert wg.webhook(errors_body(), token="from-credentials-dir-1").status_code == 200
    assert wg.webhook(errors_body(), token=WEBHOOK_TOKEN).status_code == 401


def test_credentials_directory_first(waguard_factory, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_tokens").write_text("svc:token-from-credentials\n")
    # the default api_tokens file (API_TOKEN) also sits next to the config: creds wins
    wg = waguard_factory(env={"CREDENTIALS_DIRECTORY": str(creds)})
    w = new_wa_id()
    check_gate_response(wg.gate(w, token="token-from-credentials"), w)
    assert wg.gate(w, token=API_TOKEN).status_code == 401


def test_secret_next_to_config_without_credentials_directory(waguard_factory):
    wg = waguard_factory({"webhook": {"token_file": "other_wh"}},
                         files={"other_wh": "next-to-config-token\n"})
    assert wg.webhook(errors_body(), token="next-to-config-token").status_code == 200


def test_absolute_secret_path(waguard_factory, tmp_path):
    sec = tmp_path / "abs_secret"
    sec.write_text("absolute-path-token\n")
    wg = waguard_factory({"webhook": {"token_file": str(sec)}})
    assert wg.webhook(errors_body(), token="absolute-path-token").status_code == 200


# ----------------------------------------------------------------------------- other keys

def test_webhook_path_configurable(waguard_factory):
    wg = waguard_factory({"webhook": {"path": "/hooks/waba"}})
    assert wg.webhook(errors_body(), path="/hooks/waba").status_code == 200
    assert wg.webhook(errors_body(), path="/webhook").status_code == 404


# ----------------------------------------------------------------------------- reload

def test_sighup_reloads_tokens(waguard_factory):
    wg = waguard_factory()
    w = new_wa_id()
    assert wg.gate(w, token="brand-new-token-123").status_code == 401
    (wg.workdir / "api_tokens").write_text("svc2:brand-new-token-123\n")
    wg.send_signal(signal.SIGHUP)
    wait_for(lambda: wg.gate(w, token="brand-new-token-123").status_code in (200, 423), 10,
             what="the new token after SIGHUP")
    assert wg.gate(w, token=API_TOKEN).status_code == 401
    assert wg.alive()


def test_sighup_broken_file_keeps_running_config(waguard_factory):
    wg = waguard_factory()
    w = new_wa_id()
    good = wg.config_path.read_text()
    wg.config_path.write_text(good + "[bogus]\nfoo = 1\n")
    size = wg.log_size()
    wg.send_signal(signal.SIGHUP)
    wait_for(lambda: "bogus" in wg.log(size), 10, what="the reload error in the log")
    assert wg.alive()
    check_gate_response(wg.gate(w, token=API_TOKEN), w)
    assert requests.get(wg.url + "/readyz", timeout=5).status_code == 200


def test_sigterm_exits_zero(waguard_factory):
    wg = waguard_factory()
    t = time.monotonic()
    assert wg.stop() == 0
    assert time.monotonic() - t < 10
