/* gate_http — see include/gate_http.h */
#include "gate_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "business.h"
#include "gate.h"
#include "jsonx.h"
#include "store.h"

#define GATE_BATCH_MAX 1000

int gate_http_category(struct request *r, const char *name, const struct hold_category **out)
{
    *out = NULL;
    if (!name)
        return 0;
    const struct config *cfg = r->app->cfg;
    if (!config_category_valid(name)) {
        request_reply_error(r, 400, "Bad category", "a category is 1 to 63 lower-case letters, digits and _");
        return -1;
    }
    *out = config_hold(cfg, name);
    if (!*out) {
        char known[512] = "";
        for (size_t i = 0; i < cfg->nholds; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", cfg->holds[i].name);
        request_reply_error(r, 400, "Unknown category", "category %s is not one [hold] configures (%s): a send "
                            "of an unknown category is not decided as if it held nothing", name,
                            known[0] ? known : "none is configured");
        return -1;
    }
    return 0;
}

/* ---- GET /v1/gate/{wa_id} ---------------------------------------------------- */

static void answer_one(struct app *app, const char *wa_id, const struct gate_facts *f,
                       const struct gate_decision *d, void *arg)
{
    (void)app;
    struct request *r = arg;
    request_reply_json(r, d->allowed ? 200 : 423, gate_decision_json(wa_id, f, d));
}

/* The business number a decision is for, into number: the one named (?phone_number_id=,
 * or the batch's), else the configured default.  Returns 0, or -1 after answering 400:
 * a name of the wrong shape, or one On-Premises has no use for (one number per client:
 * a Cloud number's window would never be written there, so every send would look
 * outside it). */
static int number_named(struct request *r, const char *named, char number[BUSINESS_NUMBER_MAX])
{
    if (named && !config_number_valid(named)) {
        request_reply_error(r, 400, "Bad phone_number_id", "phone_number_id is 1 to 63 letters, digits, _ or -");
        return -1;
    }
    if (named && r->app->cfg->api == API_ONPREM) {
        request_reply_error(r, 400, "Bad phone_number_id", "phone_number_id names a Cloud API business number; "
                            "this waguard is beside an On-Premises client ([upstream] api = onprem), which has one "
                            "number: leave it out");
        return -1;
    }
    business_number_for(r->app->cfg, named, number, BUSINESS_NUMBER_MAX);
    return 0;
}

void gate_http_get(struct request *r)
{
    struct app *app = r->app;
    struct recipient rcpt;
    char tbuf[32], cbuf[80], nbuf[80];
    const char *why;
    if (recipient_parse(r->arg[0], app->cfg->home_country_code, &rcpt, &why) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return;
    }
    const struct hold_category *hold;
    if (gate_http_category(r, request_query(r, "category", cbuf, sizeof cbuf), &hold) != 0)
        return;
    char number[BUSINESS_NUMBER_MAX];
    if (number_named(r, request_query(r, "phone_number_id", nbuf, sizeof nbuf), number) != 0)
        return;
    const char *t = request_query(r, "type", tbuf, sizeof tbuf);
    if (r->query_too_long) {
        request_reply_error(r, 400, "Bad request", "a query value (type, category, phone_number_id) is too long");
        return;
    }
    struct gate_query q = { .type = t && *t ? t : "text", .hold = hold, .number = number };
    if (gate_check(app, &rcpt, &q, answer_one, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

/* ---- POST /v1/gate ----------------------------------------------------------- */

struct batch {
    char type[32];
    const struct hold_category *hold;
    size_t n;
    struct recipient *rcpt;
};

static void free_batch(void *p)
{
    struct batch *b = p;
    free(b->rcpt);
    free(b);
}

static void on_batch_facts(struct app *app, struct redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct batch *b = r->data;
    size_t pos = 0;
    cJSON *o = cJSON_CreateObject();
    cJSON *results = cJSON_AddArrayToObject(o, "results");
    struct gate_ask ask = { .type = b->type, .hold = b->hold };
    for (size_t i = 0; i < b->n; i++) {
        struct gate_user users[GATE_MAX_USERS];
        struct gate_decision d;
        int at = gate_decide_next(app, reply, &pos, &b->rcpt[i], &ask, users, &d);
        if (users[at].facts.store_down)
            reply = NULL;        /* out of step with the answer: the rest fail closed too */
        cJSON_AddItemToArray(results, gate_decision_json(users[at].wa_id, &users[at].facts, &d));
    }
    request_reply_json(r, 200, o);
}

void gate_http_batch(struct request *r)
{
    struct app *app = r->app;
    size_t len;
    const char *body = request_body(r, &len);
    char why[200];
    cJSON *in = jsonx_parse(body, len, why, sizeof why);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(in, "wa_ids");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(in, "type");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(in, "category");
    const cJSON *num = cJSON_GetObjectItemCaseSensitive(in, "phone_number_id");
    if (!cJSON_IsObject(in) || !cJSON_IsArray(ids) ||
        (type && (!cJSON_IsString(type) || strlen(type->valuestring) >= sizeof ((struct batch *)0)->type)) ||
        (cat && !cJSON_IsString(cat)) ||
        (num && (!cJSON_IsString(num) || !config_number_valid(num->valuestring)))) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "expected {\"type\":\"text\",\"category\":\"…\" (optional),"
                            "\"phone_number_id\":\"…\" (optional),\"wa_ids\":[\"…\"]}%s%s", in ? "" : ": ",
                            in ? "" : why);
        return;
    }
    char number[BUSINESS_NUMBER_MAX];
    if (number_named(r, num ? num->valuestring : NULL, number) != 0) {
        cJSON_Delete(in);
        return;
    }
    int n = cJSON_GetArraySize(ids);
    if (n > GATE_BATCH_MAX) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "at most %d wa_ids a request", GATE_BATCH_MAX);
        return;
    }
    const struct hold_category *hold;
    if (gate_http_category(r, cat ? cat->valuestring : NULL, &hold) != 0) {
        cJSON_Delete(in);
        return;
    }
    struct batch *b = calloc(1, sizeof *b);
    if (b)
        b->rcpt = calloc((size_t)n + 1, sizeof *b->rcpt);
    char (*specs)[RECIPIENT_SPEC_MAX] = calloc((size_t)n + 1, sizeof *specs);
    const char **argv = calloc((size_t)n + 1, sizeof *argv);
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
    b->hold = hold;
    snprintf(b->type, sizeof b->type, "%s", type && type->valuestring[0] ? type->valuestring : "text");
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        const char *bad = "not a string";
        if (!cJSON_IsString(it) ||
            recipient_parse(it->valuestring, app->cfg->home_country_code, &b->rcpt[b->n], &bad) != 0 ||
            recipient_spec(&b->rcpt[b->n], specs[b->n], RECIPIENT_SPEC_MAX) != 0) {
            request_reply_error(r, 400, "Bad wa_id", "wa_ids[%zu]: %s", b->n, bad);
            cJSON_Delete(in);
            free(specs);
            free(argv);
            return;
        }
        argv[b->n] = specs[b->n];
        b->n++;
    }
    cJSON_Delete(in);
    if (b->n == 0) {
        free(specs);
        free(argv);
        request_reply_json(r, 200, cJSON_Parse("{\"results\":[]}"));
        return;
    }
    int rc = gate_fetch_many(app, number, argv, (int)b->n, on_batch_facts, r);
    free(specs);
    free(argv);
    if (rc != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}
