"""/metrics: every series the operator's alerts and dashboards read, with values that
follow what happened."""
import time

from daemon import API_TOKEN
from helpers import (identity_change, inbound_text, metric_value, new_wa_id, parse_metrics,
                     wait_for)


def test_metrics_follow_the_traffic(procs):
    _, sim, wg = procs.stack(overrides={"identity": {"retry_base_ms": "1000", "retry_max_s": "5"}})
    sim.fail(count=100, status=503, path_prefix="/v1/contacts/", method="PUT")
    w1, w2 = new_wa_id(), new_wa_id()
    now = int(time.time())
    sim.set_identity(w1, "M1=", created_timestamp=now * 1000)
    sim.set_identity(w2, "M2=", created_timestamp=now * 1000)
    wg.webhook_ok(identity_change(w1, "M1=", int(time.time())))
    wg.webhook_ok(identity_change(w2, "M2=", int(time.time())))
    wg.webhook_ok(inbound_text(w1))
    wg.webhook_ok(inbound_text(w1, msg_id="dup-1"))
    wg.webhook_ok(inbound_text(w1, msg_id="dup-1"))                       # a duplicate
    wg.webhook_ok(identity_change(w2, "OLD=", int(time.time()) - 3600))   # late
    wg.webhook_ok({"messages": [{"type": "text"}]})                        # a dead letter
    assert wg.gate(w1).status_code == 423
    assert wg.gate(w2, type="template").status_code == 423
    wait_for(lambda: wg.metric("waguard_ack_attempts_total", outcome="retry") >= 2, 5,
             what="two retried acknowledgements")
    time.sleep(1.1)                                # the oldest waiting identity ages

    s = parse_metrics(wg.metrics_text())
    v = lambda name, **l: metric_value(s, name, **l)
    assert v("waguard_build_info", version="0.1.0") == 1
    assert v("waguard_http_requests_total", route="webhook", code="200") == 7
    assert v("waguard_http_requests_total", route="gate", code="423") == 2
    assert v("waguard_http_request_duration_seconds_count", route="webhook") == 7
    assert v("waguard_http_request_duration_seconds_bucket", route="webhook", le="+Inf") == 7
    assert v("waguard_webhook_items_total", kind="identity_change") == 3
    assert v("waguard_webhook_items_total", kind="inbound_message") == 3
    assert v("waguard_webhook_duplicates_total") == 1
    assert v("waguard_identity_late_total") == 1
    assert v("waguard_dead_letters_total") == 1
    assert v("waguard_identities_pending") == 2
    assert v("waguard_identities_failed") == 0
    assert v("waguard_ack_queue_depth") == 2
    assert v("waguard_ack_queue_oldest_age_seconds") >= 1.0
    assert v("waguard_ack_attempts_total", outcome="ok") == 0
    assert v("waguard_upstream_requests_total", code="503") >= 2
    assert v("waguard_upstream_request_duration_seconds_count") >= 2
    assert v("waguard_redis_up") == 1
    assert v("waguard_redis_errors_total") == 0
    assert v("waguard_redis_reconnects_total") == 0
    assert v("waguard_decisions_total", outcome="denied") == 2
    assert v("waguard_decision_reasons_total", reason="identity_unacknowledged") == 2
    assert v("waguard_decision_reasons_total", reason="outside_session_window") == 0

    # the WABA client recovers: the queue drains and the gauges follow
    sim.clear_rules()
    wait_for(lambda: wg.metric("waguard_ack_queue_depth") == 0, 10, what="queue drained")
    s = parse_metrics(wg.metrics_text())
    assert metric_value(s, "waguard_identities_pending") == 0
    assert metric_value(s, "waguard_ack_attempts_total", outcome="ok") == 2
    assert metric_value(s, "waguard_ack_queue_oldest_age_seconds") == 0
    assert wg.get("/v1/gate/%s?type=template" % w2, token=API_TOKEN).status_code == 200
