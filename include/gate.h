/* gate — the send decision: may this user be sent this type of message now?
 * gate_decide() is pure (facts in, decision out); the routes fetch the facts for one
 * or many users in one Redis round trip and answer 200 (allowed) or 423 (denied). */
#ifndef WAGUARD_GATE_H
#define WAGUARD_GATE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "metrics.h"
#include "server.h"

/* What Redis knows of one user (one HMGET of its hash); strings borrowed from the reply. */
struct gate_facts {
    bool store_down;         /* Redis did not answer */
    const char *hash;        /* newest identity hash, NULL when none */
    long long ts_ms;         /* its creation time */
    bool acked;
    long long last_in;       /* last inbound message, unix seconds; 0 when none */
    bool blocked;
    const char *moved_to;    /* the user's new number, NULL when none */
    const char *contact;     /* contact-check status, NULL when none */
};

struct gate_decision {
    bool allowed;
    bool reason[REASON_COUNT];
};

void gate_decide(const struct config *cfg, const struct gate_facts *f, const char *type,
                 long long now_s, struct gate_decision *d);

/* The contract's decision object.  Returns a new cJSON object. */
cJSON *gate_decision_json(const char *wa_id, const struct gate_facts *f, const struct gate_decision *d);

/* Fetches the facts of one user and decides; cb gets the decision (and the facts, whose
 * strings live only during the call).  Returns 0 when cb will be called. */
typedef void gate_cb(struct app *app, const char *wa_id, const struct gate_facts *f,
                     const struct gate_decision *d, void *arg);
int gate_check(struct app *app, const char *wa_id, const char *type, gate_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* Counts a decision in the metrics. */
void gate_count(struct app *app, const struct gate_decision *d);

void gate_get(struct request *r);
void gate_batch(struct request *r);

#endif
