/* proxy — see include/proxy.h */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "business.h"
#include "forward.h"
#include "jsonx.h"
#include "keycheck.h"
#include "ops.h"
#include "recipient.h"
#include "secnotify.h"
#include "store.h"
#include "wtime.h"

enum {
#define PROXY_APPLY_(n) APPLY_##n,
    SCHEMA_APPLY_REPLY(PROXY_APPLY_)
#undef PROXY_APPLY_
    APPLY_N
};

/* What a recorded forward is about, kept beside the forward. */
struct rec {
    struct recipient rcpt;       /* who the path or the body names */
    char wa_id[RECIPIENT_MAX];   /* the WABA client's own name for the user */
    char hash[OPS_HASH_MAX + 1]; /* PUT identity: the hash sent */
    char number[BUSINESS_NUMBER_MAX]; /* Cloud: the business number */
    int block;                   /* 1 block, 0 unblock, -1 neither */
    bool must_record;            /* a record that is lost answers 503 */
};

static struct rec *rec_new(struct request *r, struct fwd *f)
{
    struct rec *x = calloc(1, sizeof *x);
    if (!x) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return NULL;
    }
    x->block = -1;
    f->more = x;
    f->more_free = free;
    return x;
}

/* ---- recording the answer ---------------------------------------------------------- */

static void on_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    struct rec *x = f->more;
    const char *why = store_failure(app, reply, x->must_record ? APPLY_N : 0);
    if (why && x->must_record) {
        log_warn(&app->log, "proxy", "could not record the WABA client's answer to %s (%s): answering 503", f->path, why);
        request_reply_error(r, 503, "Store unavailable", "the WABA client answered %d, but waguard could not record "
                            "what it said (%s): send it again (it is safe to)", f->status, why);
        return;
    }
    if (why)
        log_warn(&app->log, "proxy", "could not record the WABA client's answer to %s: %s", f->path, why);
    forward_reply(r, f);
}

/* Records ops (when any) and then answers; an empty ops answers at once. */
static void record_then_reply(struct request *r, struct fwd *f, struct ops *ops)
{
    if (ops->count == 0 && !ops->oom) {
        ops_free(ops);
        forward_reply(r, f);
        return;
    }
    int rc = store_apply(r->app, ops, false, on_recorded, r);
    ops_free(ops);
    if (rc != 0)
        request_reply_error(r, 503, "Store unavailable", "out of memory: the answer could not be recorded; send it again");
}

/* The users a block names, for the apply function to resolve like the gate does. */
static void block_op(struct ops *ops, const struct recipient *rcpt, bool blocked, const char *number)
{
    char spec[RECIPIENT_SPEC_MAX];
    if (recipient_spec(rcpt, spec, sizeof spec) == 0)
        ops_block(ops, spec, blocked, number);
}

/* ---- POST /v1/contacts (with the contact-check budget) ------------------------------- */

static void on_contacts_answer(struct request *r, struct fwd *f)
{
    struct rec *x = f->more;
    struct ops ops;
    ops_init(&ops);
    if (forward_ok(f)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(forward_json(f), "contacts")) {
            const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "status");
            const cJSON *wa = cJSON_GetObjectItemCaseSensitive(c, "wa_id");
            char n[RECIPIENT_MAX], w[RECIPIENT_MAX];
            if (!cJSON_IsString(in) || !cJSON_IsString(st) ||
                recipient_dial(in->valuestring, r->app->cfg->home_country_code, n, NULL) != 0)
                continue;
            bool valid = strcmp(st->valuestring, "valid") == 0 && cJSON_IsString(wa) &&
                         recipient_from_whatsapp(wa->valuestring, w, NULL) == 0;
            ops_contact_check(&ops, n, in->valuestring, st->valuestring, valid ? w : NULL);
        }
    }
    x->must_record = true;
    record_then_reply(r, f, &ops);
}

static void on_budget(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    enum {
#define PROXY_BUDGET_(n) BUDGET_##n,
        SCHEMA_BUDGET_REPLY(PROXY_BUDGET_)
#undef PROXY_BUDGET_
        BUDGET_N
    };
    const char *why = store_failure(app, reply, BUDGET_N);
    if (why) {
        /* The budget is what keeps the business from being banned: uncounted, no check goes. */
        request_reply_error(r, 503, "Store unavailable", "the contact-check budget cannot be counted (%s): the check "
                            "was not sent; try again later", why);
        return;
    }
    if (store_int(reply->element[BUDGET_OK], 0) == 1) {
        forward_send(r, f, on_contacts_answer);
        return;
    }
    long long count = store_int(reply->element[BUDGET_COUNT], 0);
    long long frees_ms = store_int(reply->element[BUDGET_FREES_AT], app_wall_ms());
    long long in_s = (frees_ms - app_wall_ms() + 999) / 1000;
    if (in_s < 1)
        in_s = 1;
    char when[40], retry[32];
    wtime_rfc3339(frees_ms, when, sizeof when);
    app->metrics->contact_checks_refused++;
    log_warn(&app->log, "proxy", "refused a contact check: %lld numbers checked and never sent to within %ld s "
             "(budget %ld)", count, app->cfg->check_window_s, app->cfg->check_budget);
    snprintf(retry, sizeof retry, "%lld", in_s);
    request_add_header(r, "Retry-After", retry);
    request_reply_error(r, 429, "Contact-check budget exhausted",
                        "%lld numbers were checked within the last %ld s and never sent to (budget %ld, "
                        "[contacts] check_budget): checking many numbers without messaging them gets the "
                        "business banned. The next one frees up at %s (in %lld s)", count,
                        app->cfg->check_window_s, app->cfg->check_budget, when, in_s);
}

void proxy_contacts(struct request *r)
{
    struct app *app = r->app;
    struct fwd *f = forward_new(r);
    if (!f || !rec_new(r, f))
        return;
    if (app->cfg->check_budget <= 0) {
        forward_send(r, f, on_contacts_answer);
        return;
    }
    /* Every number the check asks for is counted, read or not: as the mapping keys it,
     * or as "raw:" and what was given. */
    char why[200];
    cJSON *b = jsonx_parse(f->body ? f->body : "", f->len, why, sizeof why);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(b, "contacts");
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(b);
        request_reply_error(r, 400, "Bad request", "a contact check is {\"blocking\":…,\"contacts\":[\"+…\",…]}%s%s",
                            b ? "" : ": ", b ? "" : why);
        return;
    }
    int n = cJSON_GetArraySize(list);
    if (n > app->cfg->check_budget) {
        cJSON_Delete(b);
        request_reply_error(r, 400, "Contact check larger than the budget",
                            "this check asks for %d numbers, more than [contacts] check_budget (%ld) allows within "
                            "%ld s: it can never go; check fewer numbers at a time", n, app->cfg->check_budget,
                            app->cfg->check_window_s);
        return;
    }
    char (*keys)[RECIPIENT_MAX + 8] = calloc((size_t)n + 1, sizeof *keys);
    const char **argv = calloc((size_t)n + 2, sizeof *argv);
    if (!keys || !argv) {
        free(keys);
        free(argv);
        cJSON_Delete(b);
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    char window[32], budget[32];
    snprintf(window, sizeof window, "%lld", (long long)app->cfg->check_window_s * 1000);
    snprintf(budget, sizeof budget, "%ld", app->cfg->check_budget);
    argv[0] = window;
    argv[1] = budget;
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, list) {
        char d[RECIPIENT_MAX];
        if (cJSON_IsString(c) && recipient_dial(c->valuestring, app->cfg->home_country_code, d, NULL) == 0) {
            snprintf(keys[k], sizeof keys[k], "%s", d);
        } else {
            char *text = cJSON_IsString(c) ? NULL : cJSON_PrintUnformatted(c);
            snprintf(keys[k], sizeof keys[k], "raw:%.*s", RECIPIENT_MAX - 1,
                     cJSON_IsString(c) ? c->valuestring : text ? text : "?");
            cJSON_free(text);
        }
        argv[k + 2] = keys[k];
        k++;
    }
    cJSON_Delete(b);
    int rc = k == 0 ? -2 : store_call(app, STORE_BUDGET, k + 2, argv, NULL, on_budget, r);
    free(keys);
    free(argv);
    if (rc == -2)
        forward_send(r, f, on_contacts_answer);     /* nothing to count: the WABA client says what is wrong */
    else if (rc != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

void proxy_blocklist(struct request *r)
{
    struct fwd *f = forward_new(r);
    if (f)
        forward_send(r, f, forward_reply);
}

/* ---- GET and PUT /v1/contacts/{wa_id}/identity -------------------------------------- */

static void on_identity_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    if (!reply || reply->type != REDIS_REPLY_INTEGER)
        log_warn(&app->log, "proxy", "could not record the acknowledgement of %s: %s", f->path,
                 store_failure(app, reply, 0) ? store_failure(app, reply, 0) : "?");
    forward_reply(r, f);
}

static void on_identity_answer(struct request *r, struct fwd *f)
{
    struct app *app = r->app;
    struct rec *x = f->more;
    if (!forward_ok(f)) {
        forward_reply(r, f);
        return;
    }
    if (f->method == EVHTTP_REQ_PUT) {
        /* A PUT that succeeded acknowledges, if that hash is still the newest. */
        char answer[64];
        snprintf(answer, sizeof answer, "HTTP %d (forwarded PUT)", f->status);
        const char *argv[] = { x->wa_id, x->hash, "ok", r->caller, answer, "0", "",
                               app->cfg->ack == ACK_AUTO ? "auto" : "manual",
                               app->cfg->api == API_CLOUD ? "cloud" : "onprem" };
        if (store_call(app, STORE_OUTCOME, 9, argv, NULL, on_identity_recorded, r) != 0)
            forward_reply(r, f);
        return;
    }
    struct ops ops;
    ops_init(&ops);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(forward_json(f), "contacts");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "hash");
    long long t;
    if (cJSON_IsString(h) && ops_hash_valid(h->valuestring) &&
        wtime_parse(cJSON_GetObjectItemCaseSensitive(c, "created_timestamp"), &t) == 0 && t > 0)
        ops_identity(&ops, (struct ops_user){ x->wa_id, NULL, NULL }, h->valuestring, t, OPS_LOOKUP,
                     ops_acknowledged(cJSON_GetObjectItemCaseSensitive(c, "acknowledged")), NULL, false);
    record_then_reply(r, f, &ops);
}

/* The forward of a route naming one user in its path (r->arg[0]), read as the gate reads
 * a recipient.  Returns its record (f->more), or NULL after answering (400 titled
 * title when the path names nobody). */
static struct rec *user_forward(struct request *r, const char *title)
{
    struct fwd *f = forward_new(r);
    struct rec *x = f ? rec_new(r, f) : NULL;
    if (!x)
        return NULL;
    const char *why;
    if (recipient_parse(r->arg[0], r->app->cfg->home_country_code, &x->rcpt, &why) != 0) {
        request_reply_error(r, 400, title, "%s: %s", r->arg[0], why);
        return NULL;
    }
    return x;
}

void proxy_identity(struct request *r)
{
    struct rec *x = user_forward(r, "Bad wa_id");
    if (!x)
        return;
    struct fwd *f = r->data;
    /* the WABA client's own name for the user: as it is, or the dialled number's digits */
    snprintf(x->wa_id, sizeof x->wa_id, "%s", x->rcpt.form[0].key);
    char path[RECIPIENT_MAX + 32];
    snprintf(path, sizeof path, "/v1/contacts/%s/identity", x->wa_id);
    if (forward_set_path(r, f, path) != 0)
        return;
    if (f->method == EVHTTP_REQ_PUT) {
        char bad[200];
        cJSON *b = jsonx_parse(f->body ? f->body : "", f->len, bad, sizeof bad);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(b, "hash");
        if (!cJSON_IsString(h) || !ops_hash_valid(h->valuestring)) {
            cJSON_Delete(b);
            request_reply_error(r, 400, "Bad request", "expected {\"hash\":\"…\"} (1 to 200 bytes of base64)");
            return;
        }
        snprintf(x->hash, sizeof x->hash, "%s", h->valuestring);
        cJSON_Delete(b);
    }
    forward_send(r, f, on_identity_answer);
}

/* ---- blocks --------------------------------------------------------------------------- */

static void on_block_answer(struct request *r, struct fwd *f)
{
    struct rec *x = f->more;
    struct ops ops;
    ops_init(&ops);
    if (forward_ok(f) && x->block >= 0)
        block_op(&ops, &x->rcpt, x->block == 1, NULL);
    x->must_record = true;
    record_then_reply(r, f, &ops);
}

void proxy_block(struct request *r)
{
    struct rec *x = user_forward(r, "Bad phone number");
    if (!x)
        return;
    struct fwd *f = r->data;
    /* The route matched /v1/contacts/{phone}/VERB, with or without a final '/'. */
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r->req));
    size_t pl = strlen(path);
    if (pl && path[pl - 1] == '/')
        pl--;
    if (pl >= 6 && strncmp(path + pl - 6, "/block", 6) == 0) {
        x->block = 1;
    } else if (pl >= 8 && strncmp(path + pl - 8, "/unblock", 8) == 0) {
        x->block = 0;
    } else {
        char bad[200];
        cJSON *b = jsonx_parse(f->body ? f->body : "{}", f->len ? f->len : 2, bad, sizeof bad);
        const cJSON *blk = cJSON_GetObjectItemCaseSensitive(b, "block");
        if (cJSON_IsTrue(blk) || (cJSON_IsString(blk) && strcmp(blk->valuestring, "true") == 0))
            x->block = 1;
        cJSON_Delete(b);
    }
    forward_send(r, f, on_block_answer);
}

/* A user a Cloud block answer names: its wa_id or user_id as handed out, else the input
 * as a caller's recipient. */
static bool answered_user(const struct app *app, const cJSON *u, struct recipient *rc)
{
    char id[RECIPIENT_MAX];
    if (recipient_from_entry(u, false, id) == 0) {
        recipient_exact(id, rc);
        return true;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(u, "input");
    return cJSON_IsString(in) && recipient_parse(in->valuestring, app->cfg->home_country_code, rc, NULL) == 0;
}

static void on_cloud_block_answer(struct request *r, struct fwd *f)
{
    struct rec *x = f->more;
    struct ops ops;
    ops_init(&ops);
    /* What Meta says it did: added_users (block) or removed_users (unblock), also in a
     * partial failure (400 with failed_users beside them). */
    if (x->block >= 0 && (f->status / 100 == 2 || f->status == 400)) {
        const cJSON *bu = cJSON_GetObjectItemCaseSensitive(forward_json(f), "block_users");
        const cJSON *u;
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(bu, x->block == 1 ? "added_users" : "removed_users")) {
            struct recipient rc;
            if (answered_user(r->app, u, &rc))
                block_op(&ops, &rc, x->block == 1, x->number);
        }
    }
    x->must_record = true;
    record_then_reply(r, f, &ops);
}

void proxy_cloud_block(struct request *r)
{
    struct fwd *f = forward_new(r);
    struct rec *x = f ? rec_new(r, f) : NULL;
    if (!x)
        return;
    if (r->arg[1][0] && config_number_valid(r->arg[1]))
        snprintf(x->number, sizeof x->number, "%.63s", r->arg[1]);
    else
        business_number_default(r->app->cfg, x->number, sizeof x->number);
    x->block = f->method == EVHTTP_REQ_POST ? 1 : f->method == EVHTTP_REQ_DELETE ? 0 : -1;
    forward_send(r, f, x->block >= 0 ? on_cloud_block_answer : forward_reply);
}

/* ---- everything else under /v1/ and the Cloud /{version}/ ---------------------------- */

static bool is_version_segment(const char *p, size_t n)
{
    if (n < 2 || p[0] != 'v')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || p[i] == '.'))
            return false;
    return true;
}

bool proxy_forwardable(const char *path, int method)
{
    if (path[0] != '/')
        return false;
    const char *first = path + 1, *slash = strchr(first, '/');
    if (!slash || !is_version_segment(first, (size_t)(slash - first)))
        return false;
    if (strncmp(path, "/v1/gate", 8) == 0 || strncmp(path, "/v1/identities", 14) == 0)
        return false;                        /* waguard's own routes */
    if (path[strlen(path) - 1] == '/')
        return false;                        /* a final '/' names nothing of the WABA client's */
    int segments = 0, messages_at = -1;
    for (const char *p = path + 1; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;                    /* "//", "/./", "/../" or a final '/' */
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == '~' || c == '=' || c == ':'))
                return false;                /* no %-escapes: the WABA client may decode them */
        }
        /* "messages" anywhere in a segment: a send never goes around the gate */
        for (size_t i = 0; i + 8 <= n && messages_at < 0; i++)
            if (strncasecmp(p + i, "messages", 8) == 0)
                messages_at = segments;
        /* Meta's Calling API: a call rings the user */
        if (n == 5 && strncasecmp(p, "calls", 5) == 0)
            return false;
        segments++;
        p += n + (e ? 1 : 0);
        if (!e)
            break;
    }
    if (messages_at < 0)
        return true;
    /* On-Premises' read receipt, PUT /v1/messages/{id}: nobody is sent anything. */
    return method == EVHTTP_REQ_PUT && strncmp(path, "/v1/messages/", 13) == 0 && segments == 3 &&
           messages_at == 1 && strcasestr(path + 13, "messages") == NULL;
}

/* A Graph batch request names its operations in a batch parameter, in the query or a
 * form or JSON body: any of them could be a send. */
static bool names_batch(struct request *r, const struct fwd *f)
{
    char v[8];
    if (request_query(r, "batch", v, sizeof v))
        return true;
    if (!f->body)
        return false;
    if (strncmp(f->body, "batch=", 6) == 0 || strstr(f->body, "&batch=") || strstr(f->body, "name=\"batch\""))
        return true;
    cJSON *b = cJSON_ParseWithLength(f->body, f->len);
    bool has = cJSON_GetObjectItemCaseSensitive(b, "batch") != NULL;
    cJSON_Delete(b);
    return has;
}

void proxy_refuse_calls(struct request *r)
{
    request_reply_error(r, 400, "Calls are not forwarded", "Meta's Calling API rings the user around the gate, "
                        "whose identity may have changed: waguard does not forward it; call through the WABA "
                        "client directly once the gate allows a send");
}

/* A settings change went through (an operator's): what waguard reads of the settings is
 * read again at once, so /readyz never says "on" about a check just turned off. */
static void on_settings_answer(struct request *r, struct fwd *f)
{
    struct app *app = r->app;
    forward_reply(r, f);
    keycheck_run(app);
    secnotify_run(app);
}

/* Forwards r as it is, then done; a Graph batch is refused (it could carry a send). */
static void forward_plain(struct request *r, void (*done)(struct request *r, struct fwd *f))
{
    struct fwd *f = forward_new(r);
    if (!f)
        return;
    if (names_batch(r, f)) {
        request_reply_error(r, 400, "Batch requests are not forwarded",
                            "a Graph batch request (a batch parameter) could carry a send around the gate: send "
                            "each request on its own");
        return;
    }
    forward_send(r, f, done);
}

void proxy_settings(struct request *r)
{
    forward_plain(r, on_settings_answer);
}

void proxy_unknown(struct request *r)
{
    forward_plain(r, forward_reply);
}
