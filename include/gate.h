/* gate — the send decision: may this recipient be sent this type of message now?
 *
 * A recipient (recipient.h) may name more than one user waguard knows (a bare number
 * that is one country's wa_id and another's dialled number, a number a contact check
 * mapped to another wa_id, a user id linked to a wa_id).  The facts of every user it
 * names come in one Redis round trip (src/lua/gate.lua); gate_decide() is pure for one
 * user, gate_decide_all() takes the strictest over the users that are known: the gate
 * fails closed, never open.  The routes answer 200 (allowed) or 423 (denied). */
#ifndef WAGUARD_GATE_H
#define WAGUARD_GATE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "metrics.h"
#include "recipient.h"
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
    long long changed_ms;    /* when the newest identity change reached Redis; 0 none */
    const char *hold_released; /* "CHANGED_MS:category" or "CHANGED_MS:*" an operator lifted */
    bool hash_unknown;       /* WhatsApp refused a send (137000, 480): the new hash is not known */
    bool pending_without_hash; /* an identity record in some state, with no hash */
};

#define GATE_MAX_CONSIDERED 4

struct gate_decision {
    bool allowed;
    bool reason[REASON_COUNT];
    long long hold_until;    /* with identity_recently_changed: unix seconds */
    /* the known users the recipient could name, when more than one (borrowed) */
    int nconsidered;
    const char *considered[GATE_MAX_CONSIDERED];
};

/* What is asked: the message type ("text" by default; "template" and the legacy "hsm"
 * are exempt from the 24-hour rule) and the [hold] category it belongs to, if any. */
struct gate_ask {
    const char *type;
    const struct hold_category *hold;   /* borrowed from the running config, or NULL */
};

void gate_decide(const struct config *cfg, const struct gate_facts *f, const struct gate_ask *ask,
                 long long now_ms, struct gate_decision *d);

/* One user the recipient names, as the gate script returns it. */
struct gate_user {
    const char *wa_id;          /* borrowed */
    bool known;                 /* waguard has a record of this user */
    struct gate_facts facts;
};

/* The decision for a recipient naming users[0..n): the strictest over the known ones
 * (the first user when none is known).  Returns the index of the user the answer
 * reports: the first known one that is refused, else the first known one. */
int gate_decide_all(const struct config *cfg, const struct gate_user *users, int n, const struct gate_ask *ask,
                    long long now_ms, struct gate_decision *d);

/* The contract's decision object, plus "considered" when the recipient named more
 * than one known user.  Returns a new cJSON object. */
cJSON *gate_decision_json(const char *wa_id, const struct gate_facts *f, const struct gate_decision *d);

/* Fetches the facts of every user the recipient names and decides; cb gets the user the
 * answer reports, its facts and the decision (strings live only during the call).
 * Returns 0 when cb will be called (always, unless out of memory). */
typedef void gate_cb(struct app *app, const char *wa_id, const struct gate_facts *f,
                     const struct gate_decision *d, void *arg);
/* What a caller asks about a recipient. */
struct gate_query {
    const char *type;           /* the message type; NULL: "text" */
    const char *category;       /* the [hold] category of the send, or NULL */
    const char *number;         /* the business number the send goes through (Cloud
                                   phone_number_id); NULL: [upstream] phone_number_id, else
                                   every number seen, strictest */
};
int gate_check(struct app *app, const struct recipient *rcpt, const struct gate_query *q,
               gate_cb *cb, void *arg) __attribute__((warn_unused_result));

/* The users a recipient names and their facts, without deciding (the identity-change
 * check): users NULL and n -1 when Redis did not answer.  Strings live during the call. */
typedef void gate_fetch_cb(struct app *app, const struct gate_user *users, int n, void *arg);
int gate_fetch(struct app *app, const struct recipient *rcpt, gate_fetch_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* Counts a decision in the metrics. */
void gate_count(struct app *app, const struct gate_decision *d);

void gate_get(struct request *r);
void gate_batch(struct request *r);

#endif
