/* gate — see include/gate.h */
#include "gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "store.h"

#define GATE_VALUES 13          /* per user, in gate.lua's order */
#define GATE_BATCH_MAX 1000

/* True when an operator lifted this change's hold for the category. */
static bool hold_lifted(const struct gate_facts *f, const char *category)
{
    if (!f->hold_released)
        return false;
    char *end;
    long long at = strtoll(f->hold_released, &end, 10);
    if (*end != ':' || at != f->changed_ms)
        return false;           /* lifted for an earlier change: a new change holds again */
    return strcmp(end + 1, "*") == 0 || strcmp(end + 1, category) == 0;
}

void gate_decide(const struct config *cfg, const struct gate_facts *f, const struct gate_ask *ask,
                 long long now_ms, struct gate_decision *d)
{
    const char *type = ask->type;
    long long now_s = now_ms / 1000;
    memset(d, 0, sizeof *d);
    if (f->store_down) {
        d->allowed = cfg->fail == FAIL_OPEN;
        d->reason[REASON_STORE_UNAVAILABLE] = !d->allowed;
        return;
    }
    d->reason[REASON_IDENTITY_UNACKNOWLEDGED] = (f->hash && !f->acked) || f->hash_unknown || f->pending_without_hash;
    d->reason[REASON_BLOCKED] = f->blocked;
    /* A check said valid, or the user wrote to us in the last week. */
    d->reason[REASON_CONTACT_INVALID] = cfg->require_valid_contact &&
        !(f->contact && strcmp(f->contact, "valid") == 0) &&
        !(f->last_in && now_s - f->last_in <= 7 * 86400);
    d->reason[REASON_OUTSIDE_SESSION_WINDOW] = cfg->session_window &&
        strcmp(type, "template") != 0 && strcmp(type, "hsm") != 0 &&
        (f->last_in == 0 || now_s - f->last_in > 86400);
    d->reason[REASON_NUMBER_CHANGED] = f->moved_to != NULL;
    /* An account-takeover hold: a sensitive category is refused for a while after the
     * newest identity change, acknowledged or not. */
    const struct hold_category *h = ask->hold;
    if (h && h->seconds > 0 && f->changed_ms > 0 && now_ms < f->changed_ms + h->seconds * 1000 &&
        !hold_lifted(f, h->name)) {
        d->reason[REASON_IDENTITY_RECENTLY_CHANGED] = true;
        d->hold_until = (f->changed_ms + h->seconds * 1000 + 999) / 1000;
    }
    d->allowed = true;
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            d->allowed = false;
}

int gate_decide_all(const struct config *cfg, const struct gate_user *users, int n, const struct gate_ask *ask,
                    long long now_ms, struct gate_decision *d)
{
    int known = 0, report = -1, first_known = -1;
    struct gate_decision all = { .allowed = true };
    for (int i = 0; i < n; i++) {
        if (!users[i].known && !users[i].facts.store_down)
            continue;
        struct gate_decision one;
        gate_decide(cfg, &users[i].facts, ask, now_ms, &one);
        all.allowed = all.allowed && one.allowed;
        for (int r = 0; r < REASON_COUNT; r++)
            all.reason[r] = all.reason[r] || one.reason[r];
        if (one.hold_until > all.hold_until)
            all.hold_until = one.hold_until;
        if (first_known < 0)
            first_known = i;
        if (report < 0 && !one.allowed)
            report = i;
        if (known < GATE_MAX_CONSIDERED)
            all.considered[known] = users[i].wa_id;
        known++;
    }
    if (known == 0) {
        /* Nobody waguard knows: the most likely user, with no record. */
        gate_decide(cfg, &users[0].facts, ask, now_ms, d);
        return 0;
    }
    all.nconsidered = known > 1 ? (known < GATE_MAX_CONSIDERED ? known : GATE_MAX_CONSIDERED) : 0;
    *d = all;
    return report >= 0 ? report : first_known;
}

cJSON *gate_decision_json(const char *wa_id, const struct gate_facts *f, const struct gate_decision *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", wa_id);
    cJSON_AddBoolToObject(o, "allowed", d->allowed);
    cJSON *rs = cJSON_AddArrayToObject(o, "reasons");
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            cJSON_AddItemToArray(rs, cJSON_CreateString(metrics_reason_name((enum reason)i)));
    if (f->hash || f->hash_unknown || f->pending_without_hash) {
        cJSON *id = cJSON_AddObjectToObject(o, "identity");
        cJSON_AddStringToObject(id, "hash", f->hash ? f->hash : "");
        cJSON_AddNumberToObject(id, "created_timestamp", (double)(f->ts_ms / 1000));
        cJSON_AddBoolToObject(id, "acknowledged", f->acked && !f->hash_unknown);
        if (f->hash_unknown)
            cJSON_AddBoolToObject(id, "hash_unknown", 1);
    } else {
        cJSON_AddNullToObject(o, "identity");
    }
    if (f->moved_to)
        cJSON_AddStringToObject(o, "new_wa_id", f->moved_to);
    if (d->reason[REASON_IDENTITY_RECENTLY_CHANGED])
        cJSON_AddNumberToObject(o, "hold_until", (double)d->hold_until);
    if (d->nconsidered > 1) {
        cJSON *c = cJSON_AddArrayToObject(o, "considered");
        for (int i = 0; i < d->nconsidered; i++)
            cJSON_AddItemToArray(c, cJSON_CreateString(d->considered[i]));
    }
    return o;
}

void gate_count(struct app *app, const struct gate_decision *d)
{
    struct metrics *m = app->metrics;
    if (d->allowed)
        m->decisions_allowed++;
    else
        m->decisions_denied++;
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            m->reasons[i]++;
}

/* ---- reading the gate script's answer ---------------------------------- */

static const char *str_or_null(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && e->len > 0 ? e->str : NULL;
}

/* Reads one user's GATE_VALUES values.  Values of a shape that makes no sense leave the
 * user as "store down": the decision then refuses (fail = closed). */
static void user_from(redisReply *const *e, struct gate_user *u, long long now_ms)
{
    memset(u, 0, sizeof *u);
    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_INTEGER) {
        u->facts.store_down = true;
        u->wa_id = "?";
        return;
    }
    u->wa_id = e[0]->str;
    u->known = e[1]->integer == 1;
    struct gate_facts *f = &u->facts;
    f->hash = str_or_null(e[2]);
    f->ts_ms = f->hash && e[3]->type == REDIS_REPLY_STRING ? atoll(e[3]->str) : 0;
    f->acked = e[4]->type == REDIS_REPLY_STRING && strcmp(e[4]->str, "1") == 0;
    f->last_in = e[5]->type == REDIS_REPLY_STRING ? atoll(e[5]->str) : 0;
    f->blocked = e[6]->type == REDIS_REPLY_STRING && strcmp(e[6]->str, "1") == 0;
    f->moved_to = str_or_null(e[7]);
    f->contact = str_or_null(e[8]);
    /* A contact check is good for 7 days, as the WABA client caches it. */
    long long at = e[9]->type == REDIS_REPLY_STRING ? atoll(e[9]->str) : 0;
    if (f->contact && now_ms - at > 7LL * 86400 * 1000)
        f->contact = NULL;
    f->changed_ms = e[10]->type == REDIS_REPLY_STRING ? atoll(e[10]->str) : 0;
    f->hold_released = str_or_null(e[11]);
    const char *state = str_or_null(e[12]);
    f->hash_unknown = state && strcmp(state, "hash_unknown") == 0;
    /* A record with a state but no hash (a refused send before any hash was known) is
     * an identity to acknowledge all the same. */
    f->pending_without_hash = state && !f->hash && !f->acked;
}

/* Walks the answer for one recipient starting at element *pos; fills up to max users.
 * Returns how many, or -1 when the answer is not what gate.lua returns. */
static int users_from(const redisReply *reply, size_t *pos, struct gate_user *users, int max, long long now_ms)
{
    if (*pos >= reply->elements || reply->element[*pos]->type != REDIS_REPLY_INTEGER)
        return -1;
    long long n = reply->element[*pos]->integer;
    if (n < 1 || n > max || *pos + 1 + (size_t)n * GATE_VALUES > reply->elements)
        return -1;
    (*pos)++;
    for (long long i = 0; i < n; i++) {
        user_from(reply->element + *pos, &users[i], now_ms);
        *pos += GATE_VALUES;
    }
    return (int)n;
}

#define GATE_MAX_USERS (RECIPIENT_FORMS * 2)

/* The decision for one recipient from the answer (or the store being down), counted. */
static int decide_from(struct app *app, const redisReply *reply, size_t *pos, const struct recipient *rcpt,
                       const char *type, const char *category, struct gate_user *users, struct gate_decision *d)
{
    long long now_ms = app_wall_ms();
    int n = reply ? users_from(reply, pos, users, GATE_MAX_USERS, now_ms) : -1;
    if (n < 0) {
        memset(&users[0], 0, sizeof users[0]);
        users[0].wa_id = rcpt->form[0].key;
        users[0].facts.store_down = true;
        n = 1;
    }
    struct gate_ask ask = { .type = type, .hold = category ? config_hold(app->cfg, category) : NULL };
    int at = gate_decide_all(app->cfg, users, n, &ask, now_ms, d);
    if (users[at].facts.store_down && d->allowed)
        app->metrics->fail_open++;
    gate_count(app, d);
    if (d->reason[REASON_IDENTITY_RECENTLY_CHANGED]) {
        struct metrics_hold *mh = metrics_hold(app->metrics, ask.hold->name);
        if (mh)
            mh->applied++;
    }
    return at;
}

/* ---- one recipient, for other modules --------------------------------- */

struct check {
    gate_cb *cb;
    gate_fetch_cb *fetch_cb;     /* gate_fetch: the users, no decision */
    void *arg;
    struct recipient rcpt;
    char type[32];
    char category[64];           /* "" none */
    char number[64];             /* "" the default or every number (gate.lua) */
};

static void on_facts(struct app *app, redisReply *reply, void *arg)
{
    struct check *c = arg;
    struct gate_user users[GATE_MAX_USERS];
    size_t pos = 0;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY;
    if (c->fetch_cb) {
        int n = ok ? users_from(reply, &pos, users, GATE_MAX_USERS, app_wall_ms()) : -1;
        for (int i = 0; i < n; i++)
            if (users[i].facts.store_down)
                n = -1;
        c->fetch_cb(app, n > 0 ? users : NULL, n > 0 ? n : -1, c->arg);
        free(c);
        return;
    }
    struct gate_decision d;
    int at = decide_from(app, ok ? reply : NULL, &pos, &c->rcpt, c->type, c->category[0] ? c->category : NULL,
                         users, &d);
    c->cb(app, users[at].wa_id, &users[at].facts, &d, c->arg);
    free(c);
}

/* The number a decision is for: the one named, else [upstream] phone_number_id's first,
 * else "" (gate.lua: the one seen, or the strictest of all seen); On-Premises has one
 * number per WABA client, "-" (the plain fields). */
static void number_for(const struct app *app, const char *named, char *out, size_t len)
{
    if (named && *named)
        snprintf(out, len, "%s", named);
    else if (app->cfg->api == API_ONPREM)
        snprintf(out, len, "-");
    else if (config_default_number(app->cfg, out, len) != 0)
        out[0] = '\0';
}

static int ask(struct app *app, struct check *c)
{
    char spec[RECIPIENT_SPEC_MAX];
    const char *argv[] = { c->number, spec };
    if (recipient_spec(&c->rcpt, spec, sizeof spec) != 0 ||
        store_eval(app, SCRIPT_GATE, 2, argv, NULL, on_facts, c) != 0)
        on_facts(app, NULL, c);
    return 0;
}

int gate_check(struct app *app, const struct recipient *rcpt, const struct gate_query *q,
               gate_cb *cb, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->cb = cb;
    c->arg = arg;
    c->rcpt = *rcpt;
    snprintf(c->type, sizeof c->type, "%s", q->type ? q->type : "text");
    snprintf(c->category, sizeof c->category, "%s", q->category ? q->category : "");
    number_for(app, q->number, c->number, sizeof c->number);
    return ask(app, c);
}

int gate_fetch(struct app *app, const struct recipient *rcpt, gate_fetch_cb *cb, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->fetch_cb = cb;
    c->arg = arg;
    c->rcpt = *rcpt;
    number_for(app, NULL, c->number, sizeof c->number);
    return ask(app, c);
}

/* ---- GET /v1/gate/{wa_id} --------------------------------------------- */

static void answer_one(struct app *app, const char *wa_id, const struct gate_facts *f,
                       const struct gate_decision *d, void *arg)
{
    (void)app;
    struct request *r = arg;
    request_reply_json(r, d->allowed ? 200 : 423, gate_decision_json(wa_id, f, d));
}

static const char *type_param(struct request *r, char *buf, size_t len)
{
    const char *t = request_query(r, "type", buf, len);
    return t && *t ? t : "text";
}

void gate_get(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct recipient rcpt;
    char tbuf[32], cbuf[80];
    const char *why;
    if (recipient_parse(r->arg[0], r->app->cfg->home_country_code, &rcpt, &why) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return;
    }
    const char *category = request_query(r, "category", cbuf, sizeof cbuf);
    if (category && !config_category_valid(category)) {
        request_reply_error(r, 400, "Bad category", "category is lower-case letters, digits and _");
        return;
    }
    char nbuf[80];
    const char *number = request_query(r, "phone_number_id", nbuf, sizeof nbuf);
    if (number && !ops_number_valid(number)) {
        request_reply_error(r, 400, "Bad phone_number_id", "phone_number_id is 1 to 63 letters or digits");
        return;
    }
    struct gate_query q = { .type = type_param(r, tbuf, sizeof tbuf), .category = category, .number = number };
    request_hold(r);
    if (gate_check(r->app, &rcpt, &q, answer_one, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

/* ---- POST /v1/gate ----------------------------------------------------- */

struct batch {
    char type[32];
    char category[64];
    char number[64];
    size_t n;
    struct recipient *rcpt;
};

static void free_batch(void *p)
{
    struct batch *b = p;
    free(b->rcpt);
    free(b);
}

static void on_batch_facts(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct batch *b = r->data;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY;
    size_t pos = 0;
    cJSON *o = cJSON_CreateObject();
    cJSON *results = cJSON_AddArrayToObject(o, "results");
    for (size_t i = 0; i < b->n; i++) {
        struct gate_user users[GATE_MAX_USERS];
        struct gate_decision d;
        int at = decide_from(app, ok ? reply : NULL, &pos, &b->rcpt[i], b->type,
                             b->category[0] ? b->category : NULL, users, &d);
        if (ok && users[at].facts.store_down)
            ok = false;         /* out of step with the answer: the rest fail closed too */
        cJSON_AddItemToArray(results, gate_decision_json(users[at].wa_id, &users[at].facts, &d));
    }
    request_reply_json(r, 200, o);
}

void gate_batch(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct app *app = r->app;
    size_t len;
    const char *body = request_body(r, &len);
    cJSON *in = cJSON_ParseWithLength(body, len);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(in, "wa_ids");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(in, "type");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(in, "category");
    const cJSON *num = cJSON_GetObjectItemCaseSensitive(in, "phone_number_id");
    if (!cJSON_IsObject(in) || !cJSON_IsArray(ids) || (type && !cJSON_IsString(type)) ||
        (cat && (!cJSON_IsString(cat) || !config_category_valid(cat->valuestring))) ||
        (num && (!cJSON_IsString(num) || !ops_number_valid(num->valuestring)))) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request",
                            "expected {\"type\":\"text\",\"category\":\"…\" (optional),\"wa_ids\":[\"…\"]}");
        return;
    }
    int n = cJSON_GetArraySize(ids);
    if (n > GATE_BATCH_MAX) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "at most %d wa_ids a request", GATE_BATCH_MAX);
        return;
    }
    struct batch *b = calloc(1, sizeof *b);
    if (b)
        b->rcpt = calloc((size_t)n + 1, sizeof *b->rcpt);
    char (*specs)[RECIPIENT_SPEC_MAX] = calloc((size_t)n + 1, sizeof *specs);
    const char **argv = calloc((size_t)n + 2, sizeof *argv);
    if (!b || !b->rcpt || !specs || !argv) {
        if (b)
            free(b->rcpt);
        free(b);
        free(specs);
        free(argv);
        cJSON_Delete(in);
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    r->data = b;
    r->free_data = free_batch;
    snprintf(b->type, sizeof b->type, "%s", type ? type->valuestring : "text");
    snprintf(b->category, sizeof b->category, "%s", cat ? cat->valuestring : "");
    number_for(app, num ? num->valuestring : NULL, b->number, sizeof b->number);
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        const char *why = "not a string";
        if (!cJSON_IsString(it) ||
            recipient_parse(it->valuestring, app->cfg->home_country_code, &b->rcpt[b->n], &why) != 0 ||
            recipient_spec(&b->rcpt[b->n], specs[b->n], RECIPIENT_SPEC_MAX) != 0) {
            request_reply_error(r, 400, "Bad wa_id", "wa_ids[%zu]: %s", b->n, why);
            cJSON_Delete(in);
            free(specs);
            free(argv);
            return;
        }
        argv[b->n + 1] = specs[b->n];
        b->n++;
    }
    cJSON_Delete(in);
    argv[0] = b->number;
    request_hold(r);
    if (b->n == 0 || store_eval(app, SCRIPT_GATE, (int)b->n + 1, argv, NULL, on_batch_facts, r) != 0)
        on_batch_facts(app, NULL, r);
    free(specs);
    free(argv);
}
