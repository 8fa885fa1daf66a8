/* metrics — counters and histograms kept in the process, written out in the
 * Prometheus text format.  Gauges that live in Redis (queue depth, identities waiting)
 * are read by the /metrics route and passed to metrics_render(). */
#ifndef WAGUARD_METRICS_H
#define WAGUARD_METRICS_H

#include <stddef.h>

#include "ops.h"

struct evbuffer;

enum route {
    ROUTE_WEBHOOK, ROUTE_WEBHOOK_VERIFY, ROUTE_GATE, ROUTE_GATE_BATCH, ROUTE_MESSAGES,
    ROUTE_CONTACTS, ROUTE_IDENTITY_PROXY, ROUTE_BLOCK, ROUTE_BLOCKLIST, ROUTE_CLOUD_MESSAGES,
    ROUTE_CLOUD_BLOCK, ROUTE_IDENTITIES, ROUTE_IDENTITY, ROUTE_IDENTITY_ACK, ROUTE_HEALTHZ,
    ROUTE_READYZ, ROUTE_METRICS, ROUTE_IDENTITY_RELEASE, ROUTE_IDENTITY_CHANGE_CHECK, ROUTE_FORWARDED,
    ROUTE_CONSOLE, ROUTE_AUDIT, ROUTE_OVERVIEW, ROUTE_OTHER, ROUTE_COUNT
};

enum ack_outcome { ACK_OK, ACK_RETRY, ACK_RECONCILED, ACK_FAILED, ACK_OUTCOME_COUNT };

enum reason {
    REASON_IDENTITY_UNACKNOWLEDGED, REASON_BLOCKED, REASON_CONTACT_INVALID,
    REASON_OUTSIDE_SESSION_WINDOW, REASON_NUMBER_CHANGED, REASON_STORE_UNAVAILABLE,
    REASON_IDENTITY_RECENTLY_CHANGED, REASON_COUNT
};

#define METRICS_BUCKETS 13

struct histogram {
    unsigned long long bucket[METRICS_BUCKETS];   /* cumulative on output, not here */
    unsigned long long count;
    double sum;
};

struct metrics {
    unsigned long long requests[ROUTE_COUNT][600];     /* by route and HTTP status */
    struct histogram latency[ROUTE_COUNT];
    unsigned long long items[OP_KIND_COUNT];           /* operations recorded, by kind */
    unsigned long long duplicates, late, future, webhook_auth_failures;
    unsigned long long refusals_unplaced;              /* 480/137000 naming no user waguard knows */
    unsigned long long ack_attempts[ACK_OUTCOME_COUNT];
    unsigned long long upstream_requests[600];         /* by status; 0 = no answer */
    struct histogram upstream_latency;
    unsigned long long redis_errors, redis_reconnects;
    unsigned long long decisions_allowed, decisions_denied, fail_open;
    unsigned long long reasons[REASON_COUNT];
    unsigned long long reloads, reload_failures;
    unsigned long long blocklist_syncs_ok, blocklist_syncs_failed;
    unsigned long long contact_checks_refused;
    /* account-takeover holds, by category name */
    struct metrics_hold {
        char category[64];
        unsigned long long applied, lifted;
    } holds[32];
    int nholds;
};

/* Gauges read from Redis for one scrape; negative values are left out. */
struct metrics_gauges {
    int redis_up;
    long long pending, failed, queued;
    double oldest_age_s;
    long long acks_in_flight;
    long long checks_unsent;     /* numbers checked and never sent to, within the window */
    long long check_budget;
};

const char *metrics_route_name(enum route r);
const char *metrics_reason_name(enum reason r);
void metrics_observe(struct histogram *h, double seconds);
/* The hold counters of a category (added on first use); NULL when the table is full. */
struct metrics_hold *metrics_hold(struct metrics *m, const char *category);

/* Renders everything onto out.  Returns 0, or -1 when out of memory. */
int metrics_render(const struct metrics *m, const struct metrics_gauges *g, const char *version,
                   struct evbuffer *out) __attribute__((warn_unused_result));

#endif
