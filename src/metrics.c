/* metrics — see include/metrics.h */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static const double bounds[METRICS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};

static const char *const route_names[ROUTE_COUNT] = {
    "webhook", "webhook_verify", "gate", "gate_batch", "messages", "contacts",
    "identity_proxy", "block", "blocklist", "cloud_messages", "cloud_block", "identities",
    "identity", "identity_ack", "healthz", "readyz", "metrics", "identity_release",
    "identity_change_check", "forwarded", "console", "audit", "overview", "other"
};
static const char *const reason_names[REASON_COUNT] = {
    "identity_unacknowledged", "blocked", "contact_invalid", "outside_session_window",
    "number_changed", "store_unavailable", "identity_recently_changed"
};
static const char *const outcome_names[ACK_OUTCOME_COUNT] = { "ok", "retry", "reconciled", "failed" };

const char *metrics_route_name(enum route r) { return route_names[r]; }
const char *metrics_reason_name(enum reason r) { return reason_names[r]; }

struct metrics_hold *metrics_hold(struct metrics *m, const char *category)
{
    for (int i = 0; i < m->nholds; i++)
        if (strcmp(m->holds[i].category, category) == 0)
            return &m->holds[i];
    if (m->nholds >= (int)(sizeof m->holds / sizeof m->holds[0]))
        return NULL;
    struct metrics_hold *h = &m->holds[m->nholds++];
    snprintf(h->category, sizeof h->category, "%s", category);
    return h;
}

void metrics_observe(struct histogram *h, double seconds)
{
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (seconds <= bounds[i]) {
            h->bucket[i]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
}

/* The text being written: libevent's buffer grows as it needs; a failed append is
 * remembered and the whole answer dropped. */
struct out {
    struct evbuffer *b;
    bool oom;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (evbuffer_add_vprintf(o->b, fmt, ap) < 0)
        o->oom = true;
    va_end(ap);
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(struct out *o, const char *name, const char *labels, const struct histogram *h)
{
    unsigned long long cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->bucket[i];
        put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i], cum);
    }
    put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, h->count);
    if (labels[0]) {
        put(o, "%s_sum{%s} %.6f\n", name, labels, h->sum);
        put(o, "%s_count{%s} %llu\n", name, labels, h->count);
    } else {
        put(o, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, h->count);
    }
}

int metrics_render(const struct metrics *m, const struct metrics_gauges *g, const char *version,
                   struct evbuffer *out)
{
    struct out o = { .b = out };

    head(&o, "waguard_build_info", "gauge", "Build information.");
    put(&o, "waguard_build_info{version=\"%s\"} 1\n", version);

    head(&o, "waguard_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int c = 100; c < 600; c++)
            if (m->requests[r][c])
                put(&o, "waguard_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                    route_names[r], c, m->requests[r][c]);
    head(&o, "waguard_http_request_duration_seconds", "histogram", "Time to answer, by route.");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        if (!m->latency[r].count)
            continue;
        char lbl[64];
        snprintf(lbl, sizeof lbl, "route=\"%s\"", route_names[r]);
        histogram(&o, "waguard_http_request_duration_seconds", lbl, &m->latency[r]);
    }

    head(&o, "waguard_webhook_items_total", "counter", "Webhook items recorded, by kind.");
    for (int k = 0; k < OP_KIND_COUNT; k++)
        put(&o, "waguard_webhook_items_total{kind=\"%s\"} %llu\n", ops_item_name((enum op_kind)k), m->items[k]);
    head(&o, "waguard_webhook_duplicates_total", "counter", "Webhook items recognised as already recorded.");
    put(&o, "waguard_webhook_duplicates_total %llu\n", m->duplicates);
    head(&o, "waguard_identity_late_total", "counter", "Identity notifications older than the recorded one, ignored.");
    put(&o, "waguard_identity_late_total %llu\n", m->late);
    head(&o, "waguard_identity_future_total", "counter",
         "Identity times later than Redis's clock by over 2 minutes, recorded at the time received.");
    put(&o, "waguard_identity_future_total %llu\n", m->future);
    head(&o, "waguard_dead_letters_total", "counter", "Webhook items that could not be understood, kept in the dead-letter stream.");
    put(&o, "waguard_dead_letters_total %llu\n", m->items[OP_DEAD]);
    head(&o, "waguard_identity_refusals_unplaced_total", "counter",
         "Refusals for identity (480, 137000) that named no user waguard could find: logged, never dropped silently.");
    put(&o, "waguard_identity_refusals_unplaced_total %llu\n", m->refusals_unplaced);
    head(&o, "waguard_webhook_auth_failures_total", "counter", "Webhook requests refused for their credentials.");
    put(&o, "waguard_webhook_auth_failures_total %llu\n", m->webhook_auth_failures);

    head(&o, "waguard_ack_attempts_total", "counter", "Acknowledgement attempts, by outcome.");
    for (int i = 0; i < ACK_OUTCOME_COUNT; i++)
        put(&o, "waguard_ack_attempts_total{outcome=\"%s\"} %llu\n", outcome_names[i], m->ack_attempts[i]);
    head(&o, "waguard_acks_in_flight", "gauge", "Acknowledgements being sent by this instance.");
    put(&o, "waguard_acks_in_flight %lld\n", g->acks_in_flight);

    head(&o, "waguard_upstream_requests_total", "counter", "Requests to the WABA client, by status (0: no answer).");
    for (int c = 0; c < 600; c++)
        if (m->upstream_requests[c])
            put(&o, "waguard_upstream_requests_total{code=\"%d\"} %llu\n", c, m->upstream_requests[c]);
    head(&o, "waguard_upstream_request_duration_seconds", "histogram", "Time the WABA client took to answer.");
    histogram(&o, "waguard_upstream_request_duration_seconds", "", &m->upstream_latency);

    head(&o, "waguard_redis_up", "gauge", "1 when Redis answers.");
    put(&o, "waguard_redis_up %d\n", g->redis_up);
    head(&o, "waguard_redis_errors_total", "counter", "Redis commands that failed or got no answer.");
    put(&o, "waguard_redis_errors_total %llu\n", m->redis_errors);
    head(&o, "waguard_redis_reconnects_total", "counter", "Connections to Redis made again after a loss.");
    put(&o, "waguard_redis_reconnects_total %llu\n", m->redis_reconnects);
    if (g->pending >= 0) {
        head(&o, "waguard_identities_pending", "gauge", "Identities waiting for acknowledgement.");
        put(&o, "waguard_identities_pending %lld\n", g->pending);
        head(&o, "waguard_identities_failed", "gauge", "Identities whose acknowledgement failed for good.");
        put(&o, "waguard_identities_failed %lld\n", g->failed);
        head(&o, "waguard_ack_queue_depth", "gauge", "Acknowledgements queued (due or waiting to retry).");
        put(&o, "waguard_ack_queue_depth %lld\n", g->queued);
        head(&o, "waguard_ack_queue_oldest_age_seconds", "gauge", "Age of the oldest identity waiting for acknowledgement.");
        put(&o, "waguard_ack_queue_oldest_age_seconds %.3f\n", g->oldest_age_s);
    }

    head(&o, "waguard_decisions_total", "counter", "Send decisions, by outcome.");
    put(&o, "waguard_decisions_total{outcome=\"allowed\"} %llu\n", m->decisions_allowed);
    put(&o, "waguard_decisions_total{outcome=\"denied\"} %llu\n", m->decisions_denied);
    head(&o, "waguard_decision_reasons_total", "counter", "Reasons given for denied sends.");
    for (int r = 0; r < REASON_COUNT; r++)
        put(&o, "waguard_decision_reasons_total{reason=\"%s\"} %llu\n", reason_names[r], m->reasons[r]);
    head(&o, "waguard_holds_applied_total", "counter",
         "Decisions refused by an account-takeover hold ([hold]), by category.");
    for (int i = 0; i < m->nholds; i++)
        put(&o, "waguard_holds_applied_total{category=\"%s\"} %llu\n", m->holds[i].category, m->holds[i].applied);
    head(&o, "waguard_holds_lifted_total", "counter",
         "Holds an operator lifted (POST /v1/identities/{wa_id}/release), by category.");
    for (int i = 0; i < m->nholds; i++)
        put(&o, "waguard_holds_lifted_total{category=\"%s\"} %llu\n", m->holds[i].category, m->holds[i].lifted);
    head(&o, "waguard_contact_checks_refused_total", "counter",
         "Contact checks refused (429) because the budget of numbers checked and never sent to is used up.");
    put(&o, "waguard_contact_checks_refused_total %llu\n", m->contact_checks_refused);
    head(&o, "waguard_contact_check_budget", "gauge", "[contacts] check_budget (0: off).");
    put(&o, "waguard_contact_check_budget %lld\n", g->check_budget);
    if (g->checks_unsent >= 0) {
        head(&o, "waguard_contact_checks_unsent", "gauge",
             "Numbers checked within [contacts] check_window_s and never sent to.");
        put(&o, "waguard_contact_checks_unsent %lld\n", g->checks_unsent);
    }
    head(&o, "waguard_blocklist_syncs_total", "counter",
         "Reads of the whole blocklist from the WABA client, by result.");
    put(&o, "waguard_blocklist_syncs_total{result=\"ok\"} %llu\n", m->blocklist_syncs_ok);
    put(&o, "waguard_blocklist_syncs_total{result=\"failed\"} %llu\n", m->blocklist_syncs_failed);
    head(&o, "waguard_fail_open_total", "counter", "Sends allowed without Redis because fail = open.");
    put(&o, "waguard_fail_open_total %llu\n", m->fail_open);
    head(&o, "waguard_config_reloads_total", "counter", "Configuration reloads, by result.");
    put(&o, "waguard_config_reloads_total{result=\"ok\"} %llu\n", m->reloads);
    put(&o, "waguard_config_reloads_total{result=\"failed\"} %llu\n", m->reload_failures);

    return o.oom ? -1 : 0;
}
