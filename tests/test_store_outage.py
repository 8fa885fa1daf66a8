"""Redis outages: 503 on the webhook, store_unavailable / fail-open decisions, /readyz, and
recovery without restarting waguard when Redis comes back on the same address."""
import pytest
import requests

from daemon import RedisServer
from helpers import (assert_decision, assert_error_body, check_gate_response, identity_change,
                     inbound_text, metric_value, new_wa_id, wait_for)

T0 = 1602535238


def readyz(wg):
    return requests.get(wg.url + "/readyz", timeout=5)


def wait_not_ready(wg, timeout=10):
    return wait_for(lambda: readyz(wg).status_code == 503, timeout, what="/readyz 503")


def wait_ready(wg, timeout=20):
    return wait_for(lambda: readyz(wg).status_code == 200, timeout, what="/readyz back to 200")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_webhook_503_and_recovery(waguard_factory, private_redis, kill):
    wg = waguard_factory(redis=private_redis)
    pid = wg.proc.pid
    w = new_wa_id()
    assert wg.webhook(inbound_text(w)).status_code == 200

    private_redis.stop(kill=kill)
    # at once, before waguard may have noticed: the write cannot be confirmed
    r = wg.webhook(identity_change(w, "DOWN=", T0))
    assert_error_body(r, 503)
    wait_not_ready(wg)
    r = readyz(wg)
    j = r.json()
    assert j.get("ready") is False and isinstance(j.get("reason"), str) and j["reason"], j
    r = wg.webhook(identity_change(w, "DOWN=", T0))
    assert_error_body(r, 503)
    assert requests.get(wg.url + "/healthz", timeout=5).status_code == 200
    s = wg.metrics()
    assert metric_value(s, "waguard_redis_up") == 0
    errors_down = metric_value(s, "waguard_redis_errors_total")

    private_redis.start()
    wait_ready(wg)
    assert wg.alive() and wg.proc.pid == pid
    r = wg.webhook(identity_change(w, "BACK=", T0))
    assert r.status_code == 200, r.text
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["identity"]["hash"] == "BACK=" and d["reasons"] == ["identity_unacknowledged"], d
    s = wg.metrics()
    assert metric_value(s, "waguard_redis_up") == 1
    assert metric_value(s, "waguard_redis_reconnects_total") >= 1
    assert metric_value(s, "waguard_redis_errors_total") >= errors_down


def test_gate_store_unavailable_fail_closed(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    w = new_wa_id()
    assert wg.webhook(inbound_text(w)).status_code == 200
    assert wg.gate(w, type="text").status_code == 200
    private_redis.stop()
    wait_not_ready(wg)
    for t in ("text", "template"):
        r = wg.gate(w, type=t)
        assert r.status_code == 423, r.text
        d = check_gate_response(r, w)
        assert d["allowed"] is False and "store_unavailable" in d["reasons"], d
    r = wg.gate_batch([w, new_wa_id()], type="template")
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 2
    for d in res:
        assert_decision(d)
        assert d["allowed"] is False and "store_unavailable" in d["reasons"], d
    private_redis.start()
    wait_ready(wg)
    # the state was lost with the restarted Redis (no persistence in tests): a fresh decision
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["allowed"] is True and "store_unavailable" not in d["reasons"], d


def test_gate_store_unavailable_immediately(waguard_factory, private_redis):
    """No waiting for waguard to notice: the first request after Redis died is answered."""
    wg = waguard_factory(redis=private_redis)
    w = new_wa_id()
    private_redis.stop(kill=True)
    r = wg.gate(w, type="template")
    assert r.status_code == 423, r.text
    assert "store_unavailable" in check_gate_response(r, w)["reasons"]


def test_gate_fail_open(waguard_factory, private_redis):
    wg = waguard_factory({"gate": {"fail": "open"}}, redis=private_redis)
    w = new_wa_id()
    private_redis.stop()
    wait_not_ready(wg)
    before = wg.metric("waguard_fail_open_total")
    r = wg.gate(w, type="text")
    assert r.status_code == 200, r.text
    d = check_gate_response(r, w)
    assert d["allowed"] is True and "store_unavailable" not in d["reasons"], d
    assert wg.metric("waguard_fail_open_total") >= before + 1
    r = wg.gate_batch([w, new_wa_id()])
    assert r.status_code == 200
    assert all(d["allowed"] is True for d in r.json()["results"]), r.text
    assert wg.metric("waguard_fail_open_total") >= before + 2
    # fail = open is about decisions only: the webhook still cannot be recorded
    assert_error_body(wg.webhook(identity_change(w, "OPEN=", T0)), 503)
    assert readyz(wg).status_code == 503
    private_redis.start()
    wait_ready(wg)


def test_start_without_redis_then_ready(waguard_factory, private_redis):
    """waguard starts (listeners bound, /healthz) while Redis is down and becomes ready when
    Redis appears, without a restart."""
    private_redis.stop()
    wg = waguard_factory(redis=private_redis, wait=False)
    wait_for(lambda: requests.get(wg.url + "/healthz", timeout=2).status_code == 200, 15,
             what="/healthz while Redis is down")
    assert readyz(wg).status_code == 503
    assert_error_body(wg.webhook(inbound_text(new_wa_id())), 503)
    private_redis.start()
    wait_ready(wg)
    assert wg.webhook(inbound_text(new_wa_id())).status_code == 200


def test_probes_while_redis_is_down_are_not_redis_errors(waguard_factory, private_redis):
    """A readiness probe or a scrape while Redis is not connected says so (503 naming Redis,
    waguard_redis_up 0) without sending a command that could only fail: a supervisor polling
    /readyz during startup must not show up as Redis errors (a CI run under ASan saw it)."""
    private_redis.stop()
    wg = waguard_factory(redis=private_redis, wait=False)
    wait_for(lambda: requests.get(wg.url + "/healthz", timeout=2).status_code == 200, 15,
             what="/healthz while Redis is down")
    for _ in range(5):
        r = readyz(wg)
        assert r.status_code == 503
        assert "redis" in r.json()["reason"].lower() or "connect" in r.json()["reason"].lower()
        assert wg.metric("waguard_redis_up") == 0
    assert wg.metric("waguard_redis_errors_total") == 0
    private_redis.start()
    wait_ready(wg)
    assert wg.metric("waguard_redis_up") == 1
    assert wg.metric("waguard_redis_errors_total") == 0


def test_a_second_instance_on_one_redis_is_no_redis_error(waguard_factory, private_redis):
    """Several waguards share one Redis: the second finds the library the first loaded (the
    same SHA-1, the same code). That is no Redis error: not counted in
    waguard_redis_errors_total (an alert's input), not a warning in the log, and a restart of
    either changes nothing."""
    wg1 = waguard_factory(redis=private_redis)
    wg2 = waguard_factory(redis=private_redis)
    w = new_wa_id()
    assert wg2.webhook(identity_change(w, "TWO1=", T0)).status_code == 200
    assert check_gate_response(wg1.gate(w, type="template"), w)["reasons"] == ["identity_unacknowledged"]
    assert len(private_redis.client().execute_command("FUNCTION", "LIST")) == 1
    for wg in (wg1, wg2):
        assert wg.metric("waguard_redis_errors_total") == 0, wg.log()
        assert "already exists" not in wg.log() and "Redis answered an error" not in wg.log(), wg.log()


def test_redis_restart_twice(waguard_factory, private_redis):
    wg = waguard_factory(redis=private_redis)
    for _ in range(2):
        private_redis.stop()
        wait_not_ready(wg)
        private_redis.start()
        wait_ready(wg)
        w = new_wa_id()
        assert wg.webhook(identity_change(w, "TWICE=", T0)).status_code == 200
        assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "TWICE="


def test_sigterm_with_store_work_in_flight(waguard_factory, private_redis):
    """SIGTERM while acknowledgements are being claimed from Redis (many pending identities,
    short retry delays, an unreachable WABA client): waguard still exits 0, every time."""
    for round_ in range(8):
        wg = waguard_factory({"identity": {"retry_base_ms": "10", "retry_max_s": "1"}},
                             redis=private_redis)
        msgs = [identity_change(new_wa_id(), "INFL%d=" % i, T0 + i)["messages"][0] for i in range(40)]
        assert wg.webhook({"messages": msgs}).status_code == 200
        wait_for(lambda: wg.metric("waguard_ack_attempts_total") >= 20, 10,
                 what="ack attempts under way")
        rc = wg.stop()
        assert rc == 0, "round %d: exit status %s\n%s" % (round_, rc, wg.log()[-3000:])


# ----------------------------------------------------------------------------- how Redis is reached

@pytest.fixture
def auth_redis():
    with RedisServer(password="redis-pass-123") as rs:
        yield rs


def test_redis_password_file(waguard_factory, auth_redis):
    wg = waguard_factory({"redis": {"password_file": "redis_password"}}, redis=auth_redis,
                         files={"redis_password": "redis-pass-123\n"})
    w = new_wa_id()
    assert wg.webhook(identity_change(w, "PASS=", T0)).status_code == 200
    assert auth_redis.client().hget(wg.user_key(w), "id_hash") == "PASS="


def test_redis_wrong_password_not_ready(waguard_factory, auth_redis):
    wg = waguard_factory({"redis": {"password_file": "redis_password"}}, redis=auth_redis,
                         files={"redis_password": "not-the-password\n"}, wait=False)
    wait_for(lambda: requests.get(wg.url + "/healthz", timeout=2).status_code == 200, 15,
             what="/healthz")
    wait_not_ready(wg)
    j = readyz(wg).json()
    assert j["ready"] is False and j["reason"], j
    assert_error_body(wg.webhook(inbound_text(new_wa_id())), 503)
    d = check_gate_response(wg.gate(new_wa_id(), type="template"))
    assert "store_unavailable" in d["reasons"], d


def test_redis_unix_socket(waguard_factory):
    with RedisServer(unix=True) as rs:
        wg = waguard_factory(redis=rs)
        w = new_wa_id()
        assert wg.webhook(identity_change(w, "UNIX=", T0)).status_code == 200
        assert rs.client().hget(wg.user_key(w), "id_hash") == "UNIX="
        rs.stop()
        wait_not_ready(wg)
        rs.start()
        wait_ready(wg)
        assert wg.webhook(inbound_text(w)).status_code == 200


# ----------------------------------------------------------------------------- Redis misbehaving while up

def test_script_cache_flushed_recovers(waguard_factory, private_redis):
    """SCRIPT FLUSH (as after a failover to a fresh replica): writes and decisions work again
    without restarting waguard."""
    wg = waguard_factory(redis=private_redis)
    w = new_wa_id()
    assert wg.webhook(identity_change(w, "S1=", T0)).status_code == 200
    private_redis.client().script_flush()
    wait_for(lambda: wg.webhook(identity_change(w, "S2=", T0 + 1)).status_code == 200, 10,
             what="a recorded webhook after SCRIPT FLUSH")
    private_redis.client().script_flush()
    wait_for(lambda: "store_unavailable" not in wg.gate(w, type="template").json()["reasons"], 10,
             what="a real decision after SCRIPT FLUSH")
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["identity"]["hash"] == "S2=" and d["reasons"] == ["identity_unacknowledged"], d


def test_script_cache_flushed_no_spurious_failure(waguard_factory, private_redis):
    """Robustness: Redis is healthy, only its script cache is empty (NOSCRIPT).  The request
    should be retried with the script's text (EVAL / SCRIPT LOAD) rather than answered 503 or
    denied with store_unavailable.  (ack = manual: no background work uses Redis first.)"""
    wg = waguard_factory({"identity": {"ack": "manual"}}, redis=private_redis)
    w = new_wa_id()
    assert wg.webhook(identity_change(w, "S1=", T0)).status_code == 200
    private_redis.client().script_flush()
    r = wg.webhook(identity_change(w, "S2=", T0 + 1))
    assert r.status_code == 200, r.text
    private_redis.client().script_flush()
    d = check_gate_response(wg.gate(w, type="template"), w)
    assert d["reasons"] == ["identity_unacknowledged"], d


def test_redis_refuses_writes_503(waguard_factory, private_redis):
    """Redis up but refusing writes (maxmemory reached, noeviction): not confirmed, so 503."""
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    w = new_wa_id()
    assert wg.webhook(inbound_text(w)).status_code == 200
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("maxmemory", "1")
    try:
        r = wg.webhook(identity_change(w, "OOM=", T0))
        assert_error_body(r, 503)
        assert requests.get(wg.url + "/healthz", timeout=5).status_code == 200
    finally:
        c.config_set("maxmemory", "0")
    r = wg.webhook(identity_change(w, "OOM=", T0))
    assert r.status_code == 200, r.text
    assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "OOM="


def test_connection_killed_reconnects(waguard_factory, private_redis):
    """The daemon's Redis connection is cut while Redis stays up: it reconnects by itself."""
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    before = wg.metric("waguard_redis_reconnects_total")
    c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    wait_for(lambda: wg.metric("waguard_redis_reconnects_total") > before
             and readyz(wg).status_code == 200, 15, what="reconnect after CLIENT KILL")
    w = new_wa_id()
    assert wg.webhook(identity_change(w, "KILL=", T0)).status_code == 200
    assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "KILL="


def test_redis_slow_answer_still_recorded(waguard_factory, private_redis):
    """A Redis that stalls for a moment (DEBUG SLEEP) delays the answer; the body is recorded."""
    import threading
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client(socket_timeout=10)
    t = threading.Thread(target=lambda: c.execute_command("DEBUG", "SLEEP", "0.5"))
    try:
        c.execute_command("DEBUG", "SLEEP", "0")
    except Exception:  # noqa: BLE001
        pytest.skip("DEBUG is disabled in this redis-server")
    t.start()
    w = new_wa_id()
    r = wg.webhook(identity_change(w, "SLOW=", T0))
    t.join()
    assert r.status_code == 200, r.text
    assert check_gate_response(wg.gate(w, type="template"))["identity"]["hash"] == "SLOW="


def test_library_lost_is_loaded_again_and_the_call_sent_again(waguard_factory, private_redis):
    """Redis loses waguard's functions (FUNCTION FLUSH, or a failover to a server that never had
    them): the next call is answered "Function not found", and waguard loads the library again and
    sends that same call once more (the command it keeps as it went on the wire), so the webhook
    is answered 200 and recorded, not 503."""
    wg = waguard_factory(redis=private_redis)
    c = private_redis.client()
    w = new_wa_id()
    assert wg.webhook(inbound_text(w)).status_code == 200
    assert c.execute_command("FUNCTION", "LIST")
    for hash_ in ("LOST1=", "LOST2="):
        c.execute_command("FUNCTION", "FLUSH")
        assert c.execute_command("FUNCTION", "LIST") == []
        r = wg.webhook(identity_change(w, hash_, T0 + len(hash_) + int(hash_[4])))
        assert r.status_code == 200, r.text
        assert r.json()["items"] == 1, r.text
        assert c.execute_command("FUNCTION", "LIST"), "the library was not loaded again"
        d = check_gate_response(wg.gate(w, type="template"), w)
        assert d["identity"]["hash"] == hash_ and d["reasons"] == ["identity_unacknowledged"], d
    assert wg.log().count("Redis does not have waguard's functions") == 2, wg.log()
