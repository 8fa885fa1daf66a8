/* admin — see include/admin.h */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "business.h"
#include "jsonx.h"
#include "keycheck.h"
#include "recipient.h"
#include "schema.h"
#include "secnotify.h"
#include "store.h"

enum {
#define L_(n) LI_##n,
    SCHEMA_LIST_ITEM(L_)
#undef L_
    LI_N
};
enum {
#define G_(n) GR_##n,
    SCHEMA_GET_RECORD(G_)
#undef G_
    GR_N
};
enum {
#define A_(n) AU_##n,
    SCHEMA_AUDIT_ITEM(A_)
#undef A_
    AU_N
};
enum {
#define R_(n) RL_##n,
    SCHEMA_RELEASE_REPLY(R_)
#undef R_
    RL_N
};
enum {
#define S_(n) ST_##n,
    SCHEMA_STATS(S_)
#undef S_
    ST_N
};
enum {
#define P_(E, v) PICK_##E = v,
    SCHEMA_PICK(P_)
#undef P_
};
enum {
#define Q_(E, v) REQ_##E = v,
    SCHEMA_REQUEST_RESULTS(Q_)
#undef Q_
};

/* ---- small writers ------------------------------------------------------------------ */

static void add_str(cJSON *o, const char *key, const redisReply *e)
{
    const char *s = store_str(e);
    if (s)
        cJSON_AddStringToObject(o, key, s);
    else
        cJSON_AddNullToObject(o, key);
}

/* A time kept in ms, given in seconds (null when none). */
static void add_seconds(cJSON *o, const char *key, const redisReply *e)
{
    long long ms = store_int(e, -1);
    if (ms > 0)
        cJSON_AddNumberToObject(o, key, (double)(ms / 1000));
    else
        cJSON_AddNullToObject(o, key);
}

static cJSON *json_list(const redisReply *l)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; l && l->type == REDIS_REPLY_ARRAY && i < l->elements; i++) {
        cJSON *e = l->element[i]->type == REDIS_REPLY_STRING ? cJSON_Parse(l->element[i]->str) : NULL;
        if (e)
            cJSON_AddItemToArray(a, e);
    }
    return a;
}

/* ---- naming a user, as the gate does ---------------------------------------------- */

/* Adds name: the JSON object a store value holds, when it holds one. */
static void add_object(cJSON *o, const char *name, const redisReply *v)
{
    cJSON *x = v->type == REDIS_REPLY_STRING ? cJSON_ParseWithLength(v->str, v->len) : NULL;
    if (cJSON_IsObject(x))
        cJSON_AddItemToObject(o, name, x);
    else
        cJSON_Delete(x);
}

/* Calls the store for r, answering 500 when the call cannot even be queued. */
static void call_store(struct request *r, enum store_fn fn, int argc, const char **argv, store_cb *cb)
{
    if (store_call(r->app, fn, argc, argv, NULL, cb, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

/* True, after answering 503, when the store's reply is no answer of at least n values. */
static bool unavailable(struct request *r, redisReply *reply, size_t n)
{
    const char *why = store_failure(r->app, reply, n);
    if (why)
        request_reply_unavailable(r, why);
    return why != NULL;
}

/* The recipient forms of the operator's argument, as the gate reads a recipient, after
 * an exact name ("e:…") when the argument is a wa_id or user id as it is: that record is
 * the user when waguard has it.  Returns 0, or -1 after answering 400. */
static int name_arg(struct request *r, const char *arg, char spec[RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3])
{
    struct recipient rcpt;
    const char *why;
    char exact[RECIPIENT_MAX];
    char forms[RECIPIENT_SPEC_MAX];
    if (recipient_parse(arg, r->app->cfg->home_country_code, &rcpt, &why) != 0 ||
        recipient_spec(&rcpt, forms, sizeof forms) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", arg, why);
        return -1;
    }
    if (arg[0] != '+' && recipient_from_whatsapp(arg, exact, NULL) == 0)
        snprintf(spec, RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3, "e:%s %s", exact, forms);
    else
        snprintf(spec, RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3, "%s", forms);
    return 0;
}

/* Answers a pick that found no one record: 404, or 409 with the records it could name.
 * Returns true when it answered. */
static bool unpicked(struct request *r, const redisReply *reply)
{
    long long st = store_int(reply->element[0], PICK_UNKNOWN);
    if (st == PICK_FOUND)
        return false;
    if (st == PICK_UNKNOWN) {
        request_reply_error(r, 404, "Not found", "waguard knows no user %s names", r->arg[0]);
        return true;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *errs = cJSON_AddArrayToObject(o, "errors");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "code", 409);
    cJSON_AddStringToObject(e, "title", "Ambiguous user");
    cJSON_AddStringToObject(e, "details", "this names more than one user waguard knows (as the gate reads it): "
                            "name one by its wa_id or user id");
    cJSON_AddItemToArray(errs, e);
    cJSON *c = cJSON_AddArrayToObject(o, "considered");
    for (size_t i = 1; i < reply->elements; i++)
        if (store_str(reply->element[i]))
            cJSON_AddItemToArray(c, cJSON_CreateString(reply->element[i]->str));
    request_reply_json(r, 409, o);
    return true;
}

/* ---- GET /v1/identities?state=pending|failed|held&limit=N&cursor=C&q=TEXT ---------- */

static long long longest_hold_ms(const struct config *cfg)
{
    long long ms = 0;
    for (size_t i = 0; i < cfg->nholds; i++)
        if (cfg->holds[i].seconds * 1000LL > ms)
            ms = cfg->holds[i].seconds * 1000LL;
    return ms;
}

static void on_list(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    const char *why = store_failure(app, reply, 1);
    if (why || (reply->elements - 1) % LI_N != 0) {
        request_reply_unavailable(r, why ? why : "an answer of the wrong shape");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(o, "identities");
    for (size_t i = 1; i + LI_N - 1 < reply->elements; i += LI_N) {
        redisReply **e = reply->element + i;
        cJSON *it = cJSON_CreateObject();
        add_str(it, "wa_id", e[LI_W]);
        add_str(it, "hash", e[LI_HASH]);
        cJSON_AddNumberToObject(it, "created_timestamp", (double)(store_int(e[LI_TS], 0) / 1000));
        const char *st = store_str(e[LI_STATE]);
        cJSON_AddBoolToObject(it, "acknowledged", st && strcmp(st, "acknowledged") == 0);
        add_str(it, "state", e[LI_STATE]);
        cJSON_AddNumberToObject(it, "attempts", (double)store_int(e[LI_ATTEMPTS], 0));
        add_str(it, "last_error", e[LI_ERR]);
        add_str(it, "name", e[LI_NAME]);
        add_str(it, "user_id", e[LI_USER_ID]);
        add_str(it, "old_hash", e[LI_OLD_HASH]);
        add_seconds(it, "since", e[LI_SINCE]);
        add_seconds(it, "changed_at", e[LI_CHANGED_AT]);
        add_seconds(it, "next_attempt", e[LI_NEXT]);
        add_seconds(it, "leased_until", e[LI_LEASE]);
        add_str(it, "hold_released", e[LI_HOLD_RELEASED]);
        cJSON_AddItemToArray(list, it);
    }
    add_str(o, "next_cursor", reply->element[0]);
    request_reply_json(r, 200, o);
}

/* The paging and search of a list: ?cursor=C&limit=N&q=TEXT (each optional; "" none). */
struct page {
    char cursor[RECIPIENT_MAX];
    char q[512];
    char limit[16];              /* 1 to 1000, default 100, as text for the store */
};

/* Reads r's paging into pg.  Returns 0, or -1 after answering 400. */
static int page_of(struct request *r, struct page *pg)
{
    char in[16];
    long limit = 100;
    if (request_query(r, "limit", in, sizeof in)) {
        char *end;
        limit = strtol(in, &end, 10);
        if (*end || limit < 1 || limit > 1000) {
            request_reply_error(r, 400, "Bad request", "limit must be 1 to 1000");
            return -1;
        }
    }
    snprintf(pg->limit, sizeof pg->limit, "%ld", limit);
    if (!request_query(r, "cursor", pg->cursor, sizeof pg->cursor))
        pg->cursor[0] = '\0';
    if (!request_query(r, "q", pg->q, sizeof pg->q))
        pg->q[0] = '\0';
    if (r->query_too_long) {
        request_reply_error(r, 400, "Bad request", "a query value is too long (cursor: at most %zu bytes, the "
                            "next_cursor of an answer; q and the others: at most %zu)", sizeof pg->cursor - 1,
                            sizeof pg->q - 1);
        return -1;
    }
    return 0;
}

void admin_list(struct request *r)
{
    char state[16];
    struct page pg;
    const char *st = request_query(r, "state", state, sizeof state);
    if (!st)
        st = "pending";
    if (strcmp(st, "pending") != 0 && strcmp(st, "failed") != 0 && strcmp(st, "held") != 0) {
        request_reply_error(r, 400, "Bad request", "state must be pending, failed or held");
        return;
    }
    if (page_of(r, &pg) != 0)
        return;
    char since[24];
    long long hold = longest_hold_ms(r->app->cfg);
    if (strcmp(st, "held") == 0 && hold == 0) {
        /* no [hold] category holds anything: nobody is held */
        request_reply_json(r, 200, cJSON_Parse("{\"identities\":[],\"next_cursor\":null}"));
        return;
    }
    snprintf(since, sizeof since, "%lld", app_wall_ms() - hold);
    const char *argv[] = { st, pg.cursor, pg.limit, pg.q, since };
    call_store(r, STORE_LIST, 5, argv, on_list);
}

/* ---- GET /v1/identities/{wa_id} ----------------------------------------------------- */

static void on_get(struct app *app, redisReply *reply, void *arg)
{
    (void)app;
    struct request *r = arg;
    if (unavailable(r, reply, 1))
        return;
    if (unpicked(r, reply))
        return;
    const redisReply *rec = reply->elements == 4 ? reply->element[1] : NULL;
    if (!rec || rec->type != REDIS_REPLY_ARRAY || rec->elements != GR_N) {
        request_reply_unavailable(r, "an answer of the wrong shape");
        return;
    }
    redisReply **e = rec->element;
    cJSON *o = cJSON_CreateObject();
    add_str(o, "wa_id", e[GR_W]);
    const char *state = store_str(e[GR_STATE]);
    if (store_str(e[GR_HASH]) || state) {
        cJSON *id = cJSON_AddObjectToObject(o, "identity");
        add_str(id, "hash", e[GR_HASH]);
        cJSON_AddNumberToObject(id, "created_timestamp", (double)(store_int(e[GR_TS], 0) / 1000));
        cJSON_AddBoolToObject(id, "acknowledged", state && strcmp(state, "acknowledged") == 0);
        cJSON_AddStringToObject(id, "state", state ? state : "pending");
        cJSON_AddNumberToObject(id, "attempts", (double)store_int(e[GR_ATTEMPTS], 0));
        if (store_str(e[GR_ERR]))
            cJSON_AddStringToObject(id, "last_error", e[GR_ERR]->str);
        if (store_str(e[GR_ACKED_BY]))
            cJSON_AddStringToObject(id, "acknowledged_by", e[GR_ACKED_BY]->str);
        if (store_int(e[GR_ACKED_AT], 0) > 0)
            cJSON_AddNumberToObject(id, "acknowledged_at", (double)(store_int(e[GR_ACKED_AT], 0) / 1000));
        cJSON_AddBoolToObject(id, "time_believed", store_int(e[GR_RX], 0) != 1);
        add_seconds(id, "changed_at", e[GR_CHANGED_AT]);
        add_seconds(id, "pending_since", e[GR_SINCE]);
        add_seconds(id, "next_attempt", e[GR_NEXT]);
        add_seconds(id, "leased_until", e[GR_LEASE]);
        add_str(id, "requested_by", e[GR_REQUESTED_BY]);
        add_str(id, "hold_released", e[GR_HOLD_RELEASED]);
    } else {
        cJSON_AddNullToObject(o, "identity");
    }
    add_str(o, "name", e[GR_NAME]);
    add_str(o, "user_id", e[GR_USER_ID]);
    add_str(o, "parent_user_id", e[GR_PARENT_USER_ID]);
    add_str(o, "username", e[GR_USERNAME]);
    if (store_int(e[GR_LAST_IN], 0) > 0)
        cJSON_AddNumberToObject(o, "last_inbound", (double)store_int(e[GR_LAST_IN], 0));
    else
        cJSON_AddNullToObject(o, "last_inbound");
    /* Cloud: the window of each business number the user wrote to ({number: time}) */
    add_object(o, "last_inbound_by_number", e[GR_LAST_IN_BY_NUMBER]);
    /* Cloud: the blocks of each business number ({number: true|false}) */
    add_object(o, "blocked_by_number", e[GR_BLOCKED_BY_NUMBER]);
    cJSON_AddBoolToObject(o, "blocked", store_int(e[GR_BLOCKED], 0) == 1);
    add_str(o, "moved_to", e[GR_MOVED_TO]);
    add_str(o, "contact", e[GR_CONTACT]);
    cJSON_AddItemToObject(o, "history", json_list(reply->element[2]));
    cJSON_AddItemToObject(o, "acks", json_list(reply->element[3]));
    request_reply_json(r, 200, o);
}

void admin_get(struct request *r)
{
    char spec[RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3];
    if (name_arg(r, r->arg[0], spec) != 0)
        return;
    const char *argv[] = { spec };
    call_store(r, STORE_GET, 1, argv, on_get);
}

/* ---- POST /v1/identities/{wa_id}/ack ------------------------------------------------ */

/* The optional {"reason":"…"} of an operator's act (at most 500 bytes of UTF-8); required
 * is says whether it must be there.  Returns 0 with reason filled ("" none), or -1
 * after answering 400. */
static int reason_of(struct request *r, bool required, char *reason, size_t len, char *category, size_t clen)
{
    size_t n;
    const char *body = request_body(r, &n);
    reason[0] = '\0';
    if (category)
        snprintf(category, clen, "*");
    if (n == 0 && !required)
        return 0;
    char why[200];
    cJSON *in = jsonx_parse(body, n, why, sizeof why);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(in, "reason");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(in, "category");
    bool ok = cJSON_IsObject(in) && (!rs || (cJSON_IsString(rs) && strlen(rs->valuestring) <= 500)) &&
              (!required || (cJSON_IsString(rs) && rs->valuestring[0])) &&
              (!cat || (category && cJSON_IsString(cat) && config_category_valid(cat->valuestring)));
    if (ok) {
        if (rs)
            snprintf(reason, len, "%s", rs->valuestring);
        if (cat)
            snprintf(category, clen, "%s", cat->valuestring);
    }
    cJSON_Delete(in);
    if (!ok)
        request_reply_error(r, 400, "Bad request", "expected {\"reason\":\"why\"%s} (a reason of at most 500 "
                            "bytes%s)%s%s", category ? ",\"category\":\"…\" (optional: default every category)" : "",
                            required ? ", required" : "", in ? "" : ": ", in ? "" : why);
    return ok ? 0 : -1;
}

static void on_requested(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (unavailable(r, reply, 1))
        return;
    if (unpicked(r, reply))
        return;
    long long res = reply->elements >= 3 ? store_int(reply->element[1], REQ_UNKNOWN) : REQ_UNKNOWN;
    const char *w = reply->elements >= 3 ? store_str(reply->element[2]) : NULL;
    if (res == REQ_UNKNOWN || !w) {
        request_reply_error(r, 404, "Not found", "no identity is known for %s", r->arg[0]);
        return;
    }
    if (res == REQ_WAITS_FOR_HASH) {
        request_reply_error(r, 409, "The new identity is not known yet",
                            "WhatsApp refused a send to %s because the identity changed, and the new hash comes "
                            "with the user's next message or status (the Cloud API has no call to ask for it): "
                            "acknowledging the hash on record would let sends through to whoever holds the new key. "
                            "Verify the person another way; the gate opens once the new hash is acknowledged", w);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", w);
    if (res == REQ_ALREADY) {
        cJSON_AddStringToObject(o, "state", "acknowledged");
        request_reply_json(r, 200, o);
        return;
    }
    log_notice(&app->log, "admin", "%s asked to acknowledge %s now", r->caller, w);
    cJSON_AddStringToObject(o, "state", "queued");
    cJSON_AddStringToObject(o, "requested_by", r->caller);
    cJSON_AddStringToObject(o, "detail", app->cfg->api == API_CLOUD
                            ? "the Cloud API has no acknowledgement call: waguard records the newest identity as "
                              "acknowledged, opens the gate and pins that hash on every send from now on"
                            : "waguard PUTs the newest identity to the WABA client now; the gate opens once the "
                              "client accepts it");
    request_reply_json(r, 202, o);
}

void admin_ack(struct request *r)
{
    char spec[RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3], reason[512];
    if (name_arg(r, r->arg[0], spec) != 0 || reason_of(r, false, reason, sizeof reason, NULL, 0) != 0)
        return;
    const char *argv[] = { spec, r->caller, r->app->cfg->api == API_CLOUD ? "cloud" : "onprem", reason };
    call_store(r, STORE_REQUEST, 4, argv, on_requested);
}

/* ---- POST /v1/identities/retry {"expected":N,"reason":"…"} -------------------------- */

static void on_retried(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (unavailable(r, reply, 2))
        return;
    long long done = store_int(reply->element[0], -1), now = store_int(reply->element[1], 0);
    if (done < 0) {
        request_reply_error(r, 409, "The count changed", "%lld acknowledgement(s) are failed now, not the number "
                            "you were shown: look again, then retry with \"expected\":%lld", now, now);
        return;
    }
    log_notice(&app->log, "admin", "%s asked again for %lld failed acknowledgement(s)", r->caller, done);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "retried", (double)done);
    cJSON_AddNumberToObject(o, "failed", (double)now);
    request_reply_json(r, 202, o);
}

void admin_retry_all(struct request *r)
{
    size_t n;
    const char *body = request_body(r, &n);
    char why[200];
    cJSON *in = jsonx_parse(body, n, why, sizeof why);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(in, "expected");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(in, "reason");
    if (!cJSON_IsObject(in) || !cJSON_IsNumber(exp) || exp->valuedouble < 0 || exp->valuedouble > 1e9 ||
        exp->valuedouble != (double)(long long)exp->valuedouble ||
        (rs && (!cJSON_IsString(rs) || strlen(rs->valuestring) > 500))) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "expected {\"expected\":N,\"reason\":\"why\" (optional, at most 500 "
                            "bytes)}: N is the number of failed acknowledgements you were shown (GET /v1/overview), "
                            "so that no more are retried than you meant");
        return;
    }
    char expected[24], reason[512];
    snprintf(expected, sizeof expected, "%lld", (long long)exp->valuedouble);
    snprintf(reason, sizeof reason, "%s", rs ? rs->valuestring : "");
    cJSON_Delete(in);
    const char *argv[] = { r->caller, expected, r->app->cfg->api == API_CLOUD ? "cloud" : "onprem", reason };
    call_store(r, STORE_RETRY, 4, argv, on_retried);
}

/* ---- POST /v1/identities/{wa_id}/release --------------------------------------------- */

struct release {
    char category[64];           /* "*": every category */
};

static void on_released(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct release *rel = r->data;
    if (unavailable(r, reply, 1))
        return;
    if (unpicked(r, reply))
        return;
    if (reply->elements < 1 + RL_N) {
        request_reply_error(r, 404, "Not found", "%s has no identity change on record: nothing is held", r->arg[0]);
        return;
    }
    redisReply **e = reply->element + 1;
    for (size_t i = 0; i < app->cfg->nholds; i++) {
        const struct hold_category *h = &app->cfg->holds[i];
        if (h->seconds > 0 && (strcmp(rel->category, "*") == 0 || strcmp(rel->category, h->name) == 0)) {
            struct metrics_hold *mh = metrics_hold(app->metrics, h->name);
            if (mh)
                mh->lifted++;
        }
    }
    log_notice(&app->log, "admin", "%s lifted the %s hold of %s (change at %s)", r->caller, rel->category,
               store_str(e[RL_W]) ? e[RL_W]->str : "?", store_str(e[RL_CHANGED_AT]) ? e[RL_CHANGED_AT]->str : "?");
    cJSON *o = cJSON_CreateObject();
    add_str(o, "wa_id", e[RL_W]);
    cJSON_AddBoolToObject(o, "released", 1);
    cJSON_AddStringToObject(o, "category", rel->category);
    cJSON_AddNumberToObject(o, "changed_at", (double)(store_int(e[RL_CHANGED_AT], 0) / 1000));
    add_str(o, "hash", e[RL_HASH]);
    cJSON_AddStringToObject(o, "released_by", r->caller);
    request_reply_json(r, 200, o);
}

void admin_release(struct request *r)
{
    char spec[RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3], reason[512];
    struct release *rel = calloc(1, sizeof *rel);
    if (!rel) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    r->data = rel;
    r->free_data = free;
    if (name_arg(r, r->arg[0], spec) != 0 || reason_of(r, true, reason, sizeof reason, rel->category, sizeof rel->category) != 0)
        return;
    if (strcmp(rel->category, "*") != 0 && !config_hold(r->app->cfg, rel->category)) {
        /* as the gate answers ?category= naming no [hold] category */
        request_reply_error(r, 400, "Unknown category", "[hold] configures no category \"%s\": nothing to release",
                            rel->category);
        return;
    }
    const char *argv[] = { spec, r->caller, rel->category, reason };
    call_store(r, STORE_RELEASE, 4, argv, on_released);
}

/* ---- GET /v1/audit?cursor=C&limit=N&wa_id=W&q=TEXT --------------------------------- */

static void on_audit(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    const char *why = store_failure(app, reply, 1);
    if (!why && reply->element[0]->type == REDIS_REPLY_INTEGER) {
        /* the user named no one record: its pick */
        snprintf(r->arg[0], sizeof r->arg[0], "%s", (const char *)r->data);
        unpicked(r, reply);
        return;
    }
    if (why || (reply->elements - 1) % AU_N != 0) {
        request_reply_unavailable(r, why ? why : "an answer of the wrong shape");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(o, "entries");
    for (size_t i = 1; i + AU_N - 1 < reply->elements; i += AU_N) {
        redisReply **e = reply->element + i;
        cJSON *it = cJSON_CreateObject();
        add_str(it, "id", e[AU_ID]);
        add_str(it, "wa_id", e[AU_W]);
        add_str(it, "hash", e[AU_HASH]);
        add_str(it, "who", e[AU_WHO]);
        add_str(it, "result", e[AU_RESULT]);
        add_str(it, "reason", e[AU_ANSWER]);
        add_seconds(it, "at", e[AU_AT]);
        cJSON_AddItemToArray(list, it);
    }
    add_str(o, "next_cursor", reply->element[0]);
    request_reply_json(r, 200, o);
}

void admin_audit(struct request *r)
{
    char who[RECIPIENT_MAX], spec[RECIPIENT_SPEC_MAX + RECIPIENT_MAX + 3] = "";
    struct page pg;
    if (page_of(r, &pg) != 0)
        return;
    /* a stream entry id, MS-SEQ, each part under 2^64 (19 digits at most) */
    size_t ms = strspn(pg.cursor, "0123456789"), seq = strlen(pg.cursor + ms + (pg.cursor[ms] == '-'));
    if (pg.cursor[0] && !(ms > 0 && ms <= 19 && pg.cursor[ms] == '-' && seq > 0 && seq <= 19 &&
                          strspn(pg.cursor + ms + 1, "0123456789") == seq)) {
        request_reply_error(r, 400, "Bad request", "cursor is the id of the last entry seen (next_cursor)");
        return;
    }
    const char *w = request_query(r, "wa_id", who, sizeof who);
    if (w && name_arg(r, w, spec) != 0)
        return;
    if (w) {
        r->data = strdup(w);             /* named in a 404 or 409 */
        r->free_data = free;
    }
    if (r->query_too_long) {
        request_reply_error(r, 400, "Bad request", "wa_id is too long (at most %zu bytes)", sizeof who - 1);
        return;
    }
    const char *argv[] = { pg.cursor, pg.limit, spec, pg.q };
    call_store(r, STORE_AUDIT, 4, argv, on_audit);
}

/* ---- GET /v1/overview ------------------------------------------------------------------ */

static void on_overview(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    const char *why = store_failure(app, reply, ST_N);
    cJSON *o = cJSON_CreateObject();
    cJSON *redis = cJSON_AddObjectToObject(o, "redis");
    cJSON_AddBoolToObject(redis, "up", !why);
    cJSON_AddStringToObject(redis, "status", why ? why : "ok");
    if (!why) {
        redisReply **e = reply->element;
        cJSON_AddNumberToObject(o, "pending", (double)store_int(e[ST_PENDING], 0));
        cJSON_AddNumberToObject(o, "failed", (double)store_int(e[ST_FAILED], 0));
        cJSON_AddNumberToObject(o, "held", (double)store_int(e[ST_HELD], 0));
        cJSON_AddNumberToObject(o, "blocked", (double)store_int(e[ST_BLOCKED], 0));
        cJSON_AddNumberToObject(o, "queued", (double)store_int(e[ST_QUEUED], 0));
        cJSON_AddNumberToObject(o, "identity_changes_24h", (double)store_int(e[ST_CHANGES_24H], 0));
        cJSON_AddNumberToObject(o, "identity_refusals_24h", (double)store_int(e[ST_REFUSALS_24H], 0));
        long long oldest = store_int(e[ST_OLDEST], -1);
        if (oldest > 0)
            cJSON_AddNumberToObject(o, "oldest_pending_s", (double)((app_wall_ms() - oldest) / 1000));
        else
            cJSON_AddNullToObject(o, "oldest_pending_s");
    }
    cJSON *waba = cJSON_AddObjectToObject(o, "waba");
    unsigned long long ok = 0, bad = 0;
    for (int c = 200; c < 300; c++)
        ok += app->metrics->upstream_requests[c];
    for (int c = 500; c < 600; c++)
        bad += app->metrics->upstream_requests[c];
    cJSON_AddNumberToObject(waba, "answered_2xx", (double)ok);
    cJSON_AddNumberToObject(waba, "answered_5xx", (double)bad);
    cJSON_AddNumberToObject(waba, "no_answer", (double)app->metrics->upstream_requests[0]);
    cJSON_AddStringToObject(o, "api", app->cfg->api == API_CLOUD ? "cloud" : "onprem");
    cJSON_AddStringToObject(o, "ack", app->cfg->ack == ACK_AUTO ? "auto" : "manual");
    keycheck_add_status(app, o);
    secnotify_add_status(app, o);
    cJSON *holds = cJSON_AddArrayToObject(o, "holds");
    for (size_t i = 0; i < app->cfg->nholds; i++) {
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "category", app->cfg->holds[i].name);
        cJSON_AddNumberToObject(h, "seconds", (double)app->cfg->holds[i].seconds);
        cJSON_AddItemToArray(holds, h);
    }
    cJSON *numbers = cJSON_AddArrayToObject(o, "numbers");
    char nums[BUSINESS_NUMBERS_MAX][BUSINESS_NUMBER_MAX];
    int nn = business_numbers(app->cfg, nums, BUSINESS_NUMBERS_MAX);
    for (int i = 0; i < nn; i++)
        cJSON_AddItemToArray(numbers, cJSON_CreateString(nums[i]));
    cJSON_AddStringToObject(o, "caller", r->caller);
    cJSON_AddStringToObject(o, "role", r->caller_role == ROLE_ADMIN ? "admin" : "api");
    request_reply_json(r, 200, o);
}

void admin_overview(struct request *r)
{
    char window[32], hold[32];
    snprintf(window, sizeof window, "%lld", (long long)r->app->cfg->check_window_s * 1000);
    snprintf(hold, sizeof hold, "%lld", longest_hold_ms(r->app->cfg));
    const char *argv[] = { window, hold };
    call_store(r, STORE_STATS, 2, argv, on_overview);
}
