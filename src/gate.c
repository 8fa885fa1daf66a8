/* gate — see include/gate.h */
#include "gate.h"

#include <stdlib.h>
#include <string.h>

#include "phone.h"
#include "store.h"

#define GATE_FIELDS 8
#define GATE_HMGET "HMGET %s:user:{%s} id_hash id_ts id_ack last_in blocked moved_to contact contact_at"
#define GATE_BATCH_MAX 1000

void gate_decide(const struct config *cfg, const struct gate_facts *f, const char *type,
                 long long now_s, struct gate_decision *d)
{
    memset(d, 0, sizeof *d);
    if (f->store_down) {
        d->allowed = cfg->fail == FAIL_OPEN;
        d->reason[REASON_STORE_UNAVAILABLE] = !d->allowed;
        return;
    }
    d->reason[REASON_IDENTITY_UNACKNOWLEDGED] = f->hash && !f->acked;
    d->reason[REASON_BLOCKED] = f->blocked;
    /* A check said valid, or the user wrote to us in the last week. */
    d->reason[REASON_CONTACT_INVALID] = cfg->require_valid_contact &&
        !(f->contact && strcmp(f->contact, "valid") == 0) &&
        !(f->last_in && now_s - f->last_in <= 7 * 86400);
    d->reason[REASON_OUTSIDE_SESSION_WINDOW] = cfg->session_window &&
        strcmp(type, "template") != 0 && (f->last_in == 0 || now_s - f->last_in > 86400);
    d->reason[REASON_NUMBER_CHANGED] = f->moved_to != NULL;
    d->allowed = true;
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            d->allowed = false;
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
    if (f->hash) {
        cJSON *id = cJSON_AddObjectToObject(o, "identity");
        cJSON_AddStringToObject(id, "hash", f->hash);
        cJSON_AddNumberToObject(id, "created_timestamp", (double)(f->ts_ms / 1000));
        cJSON_AddBoolToObject(id, "acknowledged", f->acked);
    } else {
        cJSON_AddNullToObject(o, "identity");
    }
    if (f->moved_to)
        cJSON_AddStringToObject(o, "new_wa_id", f->moved_to);
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

static const char *str_or_null(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && e->len > 0 ? e->str : NULL;
}

/* Reads the values of one user (GATE_FIELDS of them, in GATE_HMGET's order). */
static void facts_from(const redisReply *reply, size_t user, struct gate_facts *f)
{
    redisReply *const *e = reply->element + user * GATE_FIELDS;
    memset(f, 0, sizeof *f);
    f->hash = str_or_null(e[0]);
    f->ts_ms = f->hash && e[1]->type == REDIS_REPLY_STRING ? atoll(e[1]->str) : 0;
    f->acked = e[2]->type == REDIS_REPLY_STRING && strcmp(e[2]->str, "1") == 0;
    f->last_in = e[3]->type == REDIS_REPLY_STRING ? atoll(e[3]->str) : 0;
    f->blocked = e[4]->type == REDIS_REPLY_STRING && strcmp(e[4]->str, "1") == 0;
    f->moved_to = str_or_null(e[5]);
    f->contact = str_or_null(e[6]);
    /* A contact check is good for 7 days, as the WABA client caches it. */
    long long at = e[7]->type == REDIS_REPLY_STRING ? atoll(e[7]->str) : 0;
    if (f->contact && app_wall_ms() - at > 7LL * 86400 * 1000)
        f->contact = NULL;
}

static bool reply_ok(const redisReply *reply, size_t users)
{
    return reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == users * GATE_FIELDS;
}

/* ---- one user, for other modules -------------------------------------- */

struct check {
    gate_cb *cb;
    void *arg;
    char wa_id[PHONE_MAX];
    char type[32];
};

static void decide_and_call(struct app *app, struct check *c, const struct gate_facts *f)
{
    struct gate_decision d;
    gate_decide(app->cfg, f, c->type, app_wall_ms() / 1000, &d);
    if (f->store_down && d.allowed)
        app->metrics->fail_open++;
    gate_count(app, &d);
    c->cb(app, c->wa_id, f, &d, c->arg);
}

static void on_facts(struct app *app, redisReply *reply, void *arg)
{
    struct check *c = arg;
    struct gate_facts f = { .store_down = true };
    if (reply_ok(reply, 1))
        facts_from(reply, 0, &f);
    decide_and_call(app, c, &f);
    free(c);
}

int gate_check(struct app *app, const char *wa_id, const char *type, gate_cb *cb, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->cb = cb;
    c->arg = arg;
    snprintf(c->wa_id, sizeof c->wa_id, "%s", wa_id);
    snprintf(c->type, sizeof c->type, "%s", type);
    if (store_command(app, on_facts, c, GATE_HMGET, app->cfg->key_prefix, wa_id) != 0) {
        struct gate_facts f = { .store_down = true };
        decide_and_call(app, c, &f);
        free(c);
    }
    return 0;
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
    char w[PHONE_MAX], tbuf[32];
    const char *why;
    if (phone_normalise(r->arg[0], r->app->cfg->home_country_code, w, sizeof w, &why) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return;
    }
    request_hold(r);
    if (gate_check(r->app, w, type_param(r, tbuf, sizeof tbuf), answer_one, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

/* ---- POST /v1/gate ----------------------------------------------------- */

struct batch {
    char type[32];
    size_t n;
    char (*ids)[PHONE_MAX];
};

static void free_batch(void *p)
{
    struct batch *b = p;
    free(b->ids);
    free(b);
}

static void on_batch_facts(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct batch *b = r->data;
    bool ok = reply_ok(reply, b->n);
    long long now = app_wall_ms() / 1000;
    cJSON *o = cJSON_CreateObject();
    cJSON *results = cJSON_AddArrayToObject(o, "results");
    for (size_t i = 0; i < b->n; i++) {
        struct gate_facts f = { .store_down = true };
        if (ok)
            facts_from(reply, i, &f);
        struct gate_decision d;
        gate_decide(app->cfg, &f, b->type, now, &d);
        if (f.store_down && d.allowed)
            app->metrics->fail_open++;
        gate_count(app, &d);
        cJSON_AddItemToArray(results, gate_decision_json(b->ids[i], &f, &d));
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
    if (!cJSON_IsObject(in) || !cJSON_IsArray(ids) || (type && !cJSON_IsString(type))) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "expected {\"type\":\"text\",\"wa_ids\":[\"…\"]}");
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
        b->ids = calloc((size_t)n + 1, sizeof *b->ids);
    if (!b || !b->ids) {
        free(b);
        cJSON_Delete(in);
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    r->data = b;
    r->free_data = free_batch;
    snprintf(b->type, sizeof b->type, "%s", type ? type->valuestring : "text");
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        const char *why = "not a string";
        if (!cJSON_IsString(it) ||
            phone_normalise(it->valuestring, app->cfg->home_country_code, b->ids[b->n], PHONE_MAX, &why) != 0) {
            request_reply_error(r, 400, "Bad wa_id", "wa_ids[%zu]: %s", b->n, why);
            cJSON_Delete(in);
            return;
        }
        b->n++;
    }
    cJSON_Delete(in);
    const char **argv = calloc(b->n + 1, sizeof *argv);
    if (!argv) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        argv[i] = b->ids[i];
    request_hold(r);
    if (b->n == 0 || store_eval(app, SCRIPT_GATE, (int)b->n, argv, NULL, on_batch_facts, r) != 0)
        on_batch_facts(app, NULL, r);
    free(argv);
}
