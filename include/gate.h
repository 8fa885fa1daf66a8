/* gate — the send decision: may this recipient be sent this type of message now?
 *
 * A recipient (recipient.h) may name more than one user waguard knows (a bare number that
 * is one country's wa_id and another's dialled number, a number a contact check mapped to
 * another wa_id, a user id linked to a wa_id).  The facts of every user it names come in
 * one Redis round trip (src/lua/gate.lua); gate_decide() is pure for one user,
 * gate_decide_all() takes the strictest over the users that are known: the gate fails
 * closed, never open.  The HTTP routes are gate_http.h's; the gated send is send.h's. */
#ifndef WAGUARD_GATE_H
#define WAGUARD_GATE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "config.h"
#include "metrics.h"
#include "recipient.h"

/* The identity state a record is in (src/lua/identity.lua). */
enum gate_identity { GATE_ID_NONE, GATE_ID_PENDING, GATE_ID_ACKNOWLEDGED, GATE_ID_FAILED, GATE_ID_HASH_UNKNOWN };

/* What Redis knows of one user; strings borrowed from the reply. */
struct gate_facts {
    bool store_down;         /* Redis did not answer, or answered what makes no sense */
    enum gate_identity state;
    const char *hash;        /* newest identity hash, NULL when none is known */
    long long ts_ms;         /* its creation time */
    long long last_in;       /* last inbound message, unix seconds; 0 when none */
    bool blocked;
    const char *moved_to;    /* the user's new number, NULL when none */
    const char *retired_to;  /* the recipient named a retired user id: the new one */
    const char *contact;     /* contact-check status, NULL when none */
    long long changed_ms;    /* when the newest identity change reached Redis; 0 none */
    const char *hold_released; /* "CHANGED_MS:category" or "CHANGED_MS:*" an operator lifted */
};

#define GATE_MAX_CONSIDERED 4
#define GATE_MAX_USERS (RECIPIENT_FORMS * 2)

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

/* One user the recipient names, as the gate function returns it. */
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

/* The contract's decision object, plus "considered" when the recipient named more than
 * one known user.  Returns a new cJSON object. */
cJSON *gate_decision_json(const char *wa_id, const struct gate_facts *f, const struct gate_decision *d);

/* The decision's reasons, comma separated, into buf ("" when allowed). */
void gate_reasons_text(const struct gate_decision *d, char *buf, size_t len);
/* Graph's error_subcode for a refusal: its first reason's (part of the wire contract:
 * docs/cloud.md lists them; never an enum's position). */
int gate_subcode(const struct gate_decision *d);

/* What a caller asks about a recipient. */
struct gate_query {
    const char *type;           /* the message type; NULL: "text" */
    const struct hold_category *hold; /* the [hold] category of the send, or NULL */
    const char *number;         /* the business number (business.h's number_for), "-" or "" */
};

/* Fetches the facts of every user the recipient names and decides; cb gets the user the
 * answer reports, its facts and the decision (strings live only during the call), always
 * later from the event loop.  Returns 0, or -1 when out of memory (cb never called). */
typedef void gate_cb(struct app *app, const char *wa_id, const struct gate_facts *f,
                     const struct gate_decision *d, void *arg);
int gate_check(struct app *app, const struct recipient *rcpt, const struct gate_query *q,
               gate_cb *cb, void *arg) __attribute__((warn_unused_result));

/* The users a recipient names and their facts, without deciding (the identity-change
 * check): users NULL and n -1 when Redis did not answer.  Same contract as gate_check. */
typedef void gate_fetch_cb(struct app *app, const struct gate_user *users, int n, void *arg);
int gate_fetch(struct app *app, const struct recipient *rcpt, gate_fetch_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* Many recipients in one round trip: specs[i] as recipient_spec() writes them; cb gets
 * the reply (NULL when Redis did not answer) to read with gate_read_next(). */
struct redisReply;
int gate_fetch_many(struct app *app, const char *number, const char *const *specs, int n,
                    void (*cb)(struct app *app, struct redisReply *reply, void *arg), void *arg)
    __attribute__((warn_unused_result));
/* Reads the next recipient's users from a gate_fetch_many() reply at *pos, decides and
 * counts the decision; returns the index of the user to report (users[] filled). */
int gate_decide_next(struct app *app, const struct redisReply *reply, size_t *pos, const struct recipient *rcpt,
                     const struct gate_ask *ask, struct gate_user users[GATE_MAX_USERS], struct gate_decision *d);

#endif
