/* proxy — see include/proxy.h */
#include "proxy.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gate.h"
#include "ops.h"
#include "recipient.h"
#include "store.h"
#include "upstream.h"
#include "webhook.h"
#include "wtime.h"

enum record { REC_NONE, REC_SEND, REC_CONTACTS, REC_IDENTITY_GET, REC_IDENTITY_PUT, REC_BLOCK, REC_CLOUD_BLOCK };

struct fwd {
    enum record rec;
    enum evhttp_cmd_type method;
    char path[1024];
    char wa_id[RECIPIENT_MAX];
    struct recipient rcpt;      /* who the path or the body names */
    char category[64];          /* a gated template's [hold] category, "" none */
    bool cloud;                 /* a Cloud route: waguard's own errors in Graph's envelope */
    char number[64];            /* Cloud: the business number (path, or the configured one) */
    char hash[256];             /* PUT identity: the hash sent */
    int block;                  /* 1 block, 0 unblock, -1 neither */
    char *body;                 /* what is forwarded (owned) */
    size_t len;
    int status;                 /* the WABA client's answer, kept while it is recorded */
    char *answer;
    size_t answer_len;
};

static void free_fwd(void *p)
{
    struct fwd *f = p;
    free(f->body);
    free(f->answer);
    free(f);
}

/* Graph's error envelope, as Meta's Cloud API answers (waguard's own codes: the README's
 * "On Meta's Cloud API"). */
static cJSON *graph_error(struct request *r, int code, int subcode, const char *type, const char *message,
                          const char *details)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNumberToObject(e, "code", code);
    if (subcode)
        cJSON_AddNumberToObject(e, "error_subcode", subcode);
    cJSON *data = cJSON_AddObjectToObject(e, "error_data");
    cJSON_AddStringToObject(data, "messaging_product", "whatsapp");
    cJSON_AddStringToObject(data, "details", details);
    char trace[40];
    snprintf(trace, sizeof trace, "waguard-%llx%06llx", (unsigned long long)r->start_ms,
             (unsigned long long)((uintptr_t)r & 0xffffff));
    cJSON_AddStringToObject(e, "fbtrace_id", trace);
    return o;
}

/* waguard's own error on a forwarded route: the WABA envelope on /v1, Graph's on the
 * Cloud routes (code 100 for a bad request, as Graph's "Invalid parameter"; else the
 * HTTP status). */
static void fail(struct request *r, bool cloud, int status, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void fail(struct request *r, bool cloud, int status, const char *title, const char *fmt, ...)
{
    char details[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    if (!cloud) {
        request_reply_error(r, status, title, "%s", details);
        return;
    }
    request_reply_json(r, status, graph_error(r, status == 400 ? 100 : status, 0, "WaguardException", title, details));
}

/* The WABA client did not answer: 504 when the time ran out, else 502.  Returns true
 * when it answered the request so. */
static bool no_answer(struct request *r, bool cloud, const struct upstream_reply *rep)
{
    if (rep->status != 0)
        return false;
    bool timeout = rep->error && strstr(rep->error, "timed out");
    fail(r, cloud, timeout ? 504 : 502, timeout ? "Gateway timeout" : "Bad gateway",
         "the WABA client did not answer: %s", rep->error ? rep->error : "?");
    return true;
}

static struct fwd *fwd_new(struct request *r, enum record rec)
{
    struct fwd *f = calloc(1, sizeof *f);
    if (!f) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return NULL;
    }
    f->rec = rec;
    f->block = -1;
    f->method = evhttp_request_get_command(r->req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
    const char *q = evhttp_uri_get_query(uri);
    snprintf(f->path, sizeof f->path, "%s%s%s", evhttp_uri_get_path(uri), q ? "?" : "", q ? q : "");
    size_t len;
    const char *body = request_body(r, &len);
    if (len) {
        f->body = malloc(len + 1);
        if (!f->body) {
            free(f);
            request_reply_error(r, 500, "Internal error", "out of memory");
            return NULL;
        }
        memcpy(f->body, body, len);
        f->body[len] = '\0';
        f->len = len;
    }
    r->data = f;
    r->free_data = free_fwd;
    return f;
}

static void answer_upstream(struct request *r)
{
    struct fwd *f = r->data;
    request_reply_raw(r, f->status, "application/json", f->answer ? f->answer : "", f->answer_len);
}

static void on_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        log_warn(&app->log, "proxy", "could not record the WABA client's answer to %s: %s",
                 ((struct fwd *)r->data)->path, reply ? reply->str : store_status(app));
    answer_upstream(r);
}

/* The users a block names, for the apply script to resolve like the gate does. */
static void block_op(cJSON *ops, const struct recipient *rcpt, bool blocked, const char *number)
{
    char spec[RECIPIENT_SPEC_MAX];
    if (recipient_spec(rcpt, spec, sizeof spec) == 0)
        ops_block(ops, spec, blocked, number);
}

/* A user a Cloud block answer names: its wa_id or user_id as handed out, else the input
 * as a caller's recipient. */
static bool answered_user(const struct app *app, const cJSON *u, struct recipient *rc)
{
    char id[RECIPIENT_MAX];
    if (recipient_from_entry(u, id) == 0) {
        memset(rc, 0, sizeof *rc);
        rc->n = 1;
        rc->form[0].kind = RECIPIENT_ID;
        memcpy(rc->form[0].key, id, sizeof id);
        return true;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(u, "input");
    return cJSON_IsString(in) && recipient_parse(in->valuestring, app->cfg->home_country_code, rc, NULL) == 0;
}

/* A 2xx answer that carries a non-empty errors[] did not do what was asked. */
static bool answer_has_errors(const cJSON *ans)
{
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(ans, "errors");
    return cJSON_IsArray(errs) && cJSON_GetArraySize(errs) > 0;
}

/* What a 2xx answer tells us, as operations for the apply script (NULL: nothing). */
static cJSON *ops_from_answer(struct app *app, struct fwd *f)
{
    cJSON *ops = cJSON_CreateArray();
    cJSON *ans = cJSON_ParseWithLength(f->answer ? f->answer : "", f->answer_len);
    if (f->status / 100 != 2 && f->rec != REC_CLOUD_BLOCK) {
        cJSON_Delete(ans);
        cJSON_Delete(ops);
        return NULL;
    }
    if (answer_has_errors(ans)) {
        log_warn(&app->log, "proxy", "the WABA client answered %s with %d and errors[]: nothing recorded",
                 f->path, f->status);
        cJSON_Delete(ans);
        cJSON_Delete(ops);
        return NULL;
    }
    switch (f->rec) {
    case REC_CONTACTS: {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(ans, "contacts")) {
            const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "status");
            const cJSON *wa = cJSON_GetObjectItemCaseSensitive(c, "wa_id");
            char n[RECIPIENT_MAX], w[RECIPIENT_MAX];
            if (!cJSON_IsString(in) || !cJSON_IsString(st) ||
                recipient_dial(in->valuestring, app->cfg->home_country_code, n, NULL) != 0)
                continue;
            bool valid = strcmp(st->valuestring, "valid") == 0 && cJSON_IsString(wa) &&
                         recipient_from_whatsapp(wa->valuestring, w, NULL) == 0;
            ops_contact_check(ops, n, in->valuestring, st->valuestring, valid ? w : NULL);
        }
        break;
    }
    case REC_IDENTITY_GET: {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(ans, "contacts");
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "hash");
        long long t;
        if (cJSON_IsString(h) && ops_hash_valid(h->valuestring) &&
            wtime_parse(cJSON_GetObjectItemCaseSensitive(c, "created_timestamp"), &t) == 0 && t > 0)
            ops_identity(ops, (struct ops_user){ f->wa_id, NULL }, h->valuestring, t, OPS_LOOKUP,
                         ops_acknowledged(cJSON_GetObjectItemCaseSensitive(c, "acknowledged")), NULL, false);
        break;
    }
    case REC_BLOCK:
        if (f->block >= 0)
            block_op(ops, &f->rcpt, f->block == 1, NULL);
        break;
    case REC_SEND: {
        char spec[RECIPIENT_SPEC_MAX];
        if (recipient_spec(&f->rcpt, spec, sizeof spec) == 0)
            ops_sent(ops, spec);
        break;
    }
    case REC_CLOUD_BLOCK: {
        /* What Meta says it did: added_users (block) or removed_users (unblock), also in
         * a partial failure (400 with failed_users beside them). */
        const cJSON *bu = cJSON_GetObjectItemCaseSensitive(ans, "block_users");
        const cJSON *u;
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(bu, f->block == 1 ? "added_users" : "removed_users")) {
            struct recipient rc;
            if (answered_user(app, u, &rc))
                block_op(ops, &rc, f->block == 1, f->number);
        }
        break;
    }
    default:
        break;
    }
    cJSON_Delete(ans);
    if (cJSON_GetArraySize(ops) == 0) {
        cJSON_Delete(ops);
        return NULL;
    }
    return ops;
}

static void on_upstream(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    if (no_answer(r, f->cloud, rep))
        return;
    f->status = rep->status;
    f->answer = malloc(rep->len + 1);
    if (f->answer) {
        memcpy(f->answer, rep->body, rep->len);
        f->answer[rep->len] = '\0';
        f->answer_len = rep->len;
    }
    bool partial_block = f->rec == REC_CLOUD_BLOCK && rep->status == 400;
    if ((rep->status / 100 != 2 && !partial_block) || !f->answer) {
        answer_upstream(r);
        return;
    }
    if (f->rec == REC_IDENTITY_PUT) {
        /* A PUT that succeeded acknowledges, if that hash is still the newest. */
        char answer[64];
        snprintf(answer, sizeof answer, "HTTP %d (forwarded PUT)", rep->status);
        const char *argv[] = { f->wa_id, f->hash, "ok", r->caller, answer, "0", "",
                               app->cfg->ack == ACK_AUTO ? "auto" : "manual" };
        if (store_eval(app, SCRIPT_ACK_RESULT, 8, argv, NULL, on_recorded, r) != 0)
            answer_upstream(r);
        return;
    }
    cJSON *ops = ops_from_answer(app, f);
    int rc = ops ? webhook_apply(r, ops, on_recorded) : -1;
    cJSON_Delete(ops);
    if (rc != 0)
        answer_upstream(r);
}

static void forward(struct request *r)
{
    struct fwd *f = r->data;
    request_hold(r);
    if (upstream_request(r->app, f->method, f->path, f->body, f->len, on_upstream, r) != 0)
        fail(r, f->cloud, 500, "Internal error", "out of memory");
}

/* ---- gated sends ------------------------------------------------------- */

static void on_gate(struct app *app, const char *wa_id, const struct gate_facts *facts,
                    const struct gate_decision *d, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    if (!d->allowed) {
        char reasons[256] = "";
        for (int i = 0; i < REASON_COUNT; i++)
            if (d->reason[i])
                snprintf(reasons + strlen(reasons), sizeof reasons - strlen(reasons), "%s%s",
                         reasons[0] ? ", " : "", metrics_reason_name((enum reason)i));
        log_info(&app->log, "proxy", "refused a send to %s: %s", wa_id, reasons);
        if (f->cloud) {
            int sub = 0;
            for (int i = 0; i < REASON_COUNT && !sub; i++)
                if (d->reason[i])
                    sub = i + 1;
            cJSON *o = graph_error(r, 423, sub, "WaguardGateRefusal", "Send refused by waguard", reasons);
            cJSON_AddItemToObject(o, "decision", gate_decision_json(wa_id, facts, d));
            request_reply_json(r, 423, o);
            return;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON *errs = cJSON_AddArrayToObject(o, "errors");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "code", d->reason[REASON_IDENTITY_UNACKNOWLEDGED] ? 480 :
                                d->reason[REASON_OUTSIDE_SESSION_WINDOW] ? 470 : 423);
        cJSON_AddStringToObject(e, "title", "Send refused by waguard");
        cJSON_AddStringToObject(e, "details", reasons);
        cJSON_AddItemToArray(errs, e);
        cJSON_AddItemToObject(o, "decision", gate_decision_json(wa_id, facts, d));
        request_reply_json(r, 423, o);
        return;
    }
    if (app->cfg->api == API_CLOUD && facts->hash && facts->acked) {
        /* Pin the acknowledged identity: Meta refuses delivery if it changed since. */
        cJSON *msg = cJSON_ParseWithLength(f->body, f->len);
        if (cJSON_IsObject(msg)) {
            cJSON_DeleteItemFromObjectCaseSensitive(msg, "recipient_identity_key_hash");
            cJSON_AddStringToObject(msg, "recipient_identity_key_hash", facts->hash);
            char *s = cJSON_PrintUnformatted(msg);
            if (s) {
                free(f->body);
                f->body = strdup(s);
                f->len = f->body ? strlen(f->body) : 0;
                cJSON_free(s);
            }
        }
        cJSON_Delete(msg);
    }
    forward(r);
}

/* ---- strict send bodies -------------------------------------------------- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key that appears twice in one object anywhere in v, or NULL.  cJSON keeps
 * the first of two equal keys while other parsers (the WABA client's among them) may
 * take the last: a body that says two things is refused, not guessed at. */
static const char *duplicate_key(const cJSON *v)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return NULL;
    int n = cJSON_GetArraySize(v);
    if (cJSON_IsObject(v) && n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names)
            return "(out of memory)";
        int k = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, v) names[k++] = c->string;
        qsort(names, (size_t)n, sizeof *names, cmp_names);
        const char *dup = NULL;
        for (int i = 1; i < n && !dup; i++)
            if (strcmp(names[i - 1], names[i]) == 0)
                dup = names[i];
        free(names);
        if (dup)
            return dup;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, v) {
        const char *d = duplicate_key(c);
        if (d)
            return d;
    }
    return NULL;
}

/* A Cloud API read receipt and nothing else: {"messaging_product","status":"read",
 * "message_id"[,"typing_indicator"]}.  No one is sent anything. */
static bool is_read_receipt(const cJSON *msg)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(msg, "status");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "message_id");
    if (!cJSON_IsString(st) || strcmp(st->valuestring, "read") != 0 || !cJSON_IsString(id))
        return false;
    static const char *const allowed[] = { "messaging_product", "status", "message_id", "typing_indicator" };
    const cJSON *c;
    cJSON_ArrayForEach(c, msg) {
        bool ok = false;
        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
            ok = ok || strcmp(c->string, allowed[i]) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* Refuses a gated body that is not one clear message to one recipient.  Returns 0 with
 * f->rcpt and type filled, or -1 after answering 400. */
static int read_send_body(struct request *r, struct fwd *f, bool cloud, char *type, size_t typelen,
                          bool *receipt)
{
    cJSON *msg = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
    const char *why = NULL, *dup;
    *receipt = false;
    if (!cJSON_IsObject(msg)) {
        cJSON_Delete(msg);
        fail(r, cloud, 400, "Bad request", "the message needs a JSON object body");
        return -1;
    }
    if ((dup = duplicate_key(msg)) != NULL) {
        fail(r, cloud, 400, "Bad request", "the key \"%.100s\" appears twice in one object: "
                            "a body must say one thing", dup);
        cJSON_Delete(msg);
        return -1;
    }
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(msg, "to");
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(msg, "recipient");
    if (to && rc) {
        cJSON_Delete(msg);
        fail(r, cloud, 400, "Bad request", "the recipient is named in more than one field "
                            "(\"to\" and \"recipient\"): name it once");
        return -1;
    }
    if (cloud && !to && !rc && is_read_receipt(msg)) {
        cJSON_Delete(msg);
        *receipt = true;
        return 0;
    }
    const cJSON *who = to ? to : rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(msg, "type");
    if (t && !cJSON_IsString(t))
        why = "\"type\" is not a string";
    else if (!cJSON_IsString(who))
        why = cloud ? "\"to\" (or \"recipient\") is missing or not a string" : "\"to\" is missing or not a string";
    else if (recipient_parse(who->valuestring, r->app->cfg->home_country_code, &f->rcpt, &why) != 0)
        ;
    else {
        snprintf(type, typelen, "%s", t ? t->valuestring : "text");
        snprintf(f->wa_id, sizeof f->wa_id, "%s", f->rcpt.form[0].key);
        /* A template's name puts it in a [hold] category (the legacy hsm names it
         * element_name). */
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(msg, "template");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tp, "name");
        if (!cJSON_IsString(name))
            name = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(msg, "hsm"), "element_name");
        const struct hold_category *h = cJSON_IsString(name) ?
            config_hold_for_template(r->app->cfg, name->valuestring) : NULL;
        snprintf(f->category, sizeof f->category, "%s", h ? h->name : "");
    }
    cJSON_Delete(msg);
    if (why) {
        fail(r, cloud, 400, "Bad request", "the message's recipient: %s", why);
        return -1;
    }
    return 0;
}

/* Cloud routes name the business number in the path (/{version}/{pnid}/…); providers'
 * paths without it use [upstream] phone_number_id. */
static void cloud_number(struct request *r, struct fwd *f)
{
    f->cloud = true;
    if (r->arg[1][0] && ops_number_valid(r->arg[1]))
        snprintf(f->number, sizeof f->number, "%.63s", r->arg[1]);
    else if (config_default_number(r->app->cfg, f->number, sizeof f->number) != 0)
        f->number[0] = '\0';
}

static void gated_send(struct request *r, bool cloud)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct fwd *f = fwd_new(r, REC_NONE);
    if (!f)
        return;
    if (cloud)
        cloud_number(r, f);
    char t[32];
    bool receipt;
    if (read_send_body(r, f, cloud, t, sizeof t, &receipt) != 0)
        return;
    if (receipt) {
        forward(r);
        return;
    }
    struct gate_query q = { .type = t, .category = f->category[0] ? f->category : NULL,
                            .number = f->number[0] ? f->number : NULL };
    if (r->app->cfg->check_budget > 0)
        f->rec = REC_SEND;   /* a send that goes out stops counting against the check budget */
    request_hold(r);
    if (gate_check(r->app, &f->rcpt, &q, on_gate, r) != 0)
        fail(r, cloud, 500, "Internal error", "out of memory");
}

void proxy_messages(struct request *r)
{
    gated_send(r, false);
}

void proxy_cloud_messages(struct request *r)
{
    gated_send(r, true);
}

/* ---- recorded forwards ------------------------------------------------- */

/* ---- the contact-check budget ------------------------------------------- */

static void on_budget(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        /* Redis cannot count: the check goes out (it sends nothing to anyone). */
        log_warn(&app->log, "proxy", "could not count the contact-check budget (%s); forwarding the check",
                 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        forward(r);
        return;
    }
    if (reply->element[0]->integer == 1) {
        forward(r);
        return;
    }
    long long count = reply->element[1]->integer;
    long long frees_ms = reply->elements > 2 ? reply->element[2]->integer : app_wall_ms();
    long long in_s = (frees_ms - app_wall_ms() + 999) / 1000;
    if (in_s < 1)
        in_s = 1;
    char when[40];
    time_t t = (time_t)(frees_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    app->metrics->contact_checks_refused++;
    log_warn(&app->log, "proxy", "refused a contact check: %lld numbers checked and never sent to within %ld s "
             "(budget %ld)", count, app->cfg->check_window_s, app->cfg->check_budget);
    char retry[32];
    snprintf(retry, sizeof retry, "%lld", in_s);
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", retry);
    request_reply_error(r, 429, "Contact-check budget exhausted",
                        "%lld numbers were checked within the last %ld s and never sent to (budget %ld, "
                        "[contacts] check_budget): checking many numbers without messaging them gets the "
                        "business banned. The next one frees up at %s (in %lld s)", count,
                        app->cfg->check_window_s, app->cfg->check_budget, when, in_s);
}

void proxy_contacts(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct fwd *f = fwd_new(r, REC_CONTACTS);
    if (!f)
        return;
    struct app *app = r->app;
    if (app->cfg->check_budget <= 0) {
        forward(r);
        return;
    }
    /* The numbers asked for, normalised as the mapping keys them. */
    cJSON *b = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(b, "contacts");
    int n = cJSON_GetArraySize(list);
    char (*nums)[RECIPIENT_MAX] = calloc((size_t)n + 1, sizeof *nums);
    const char **argv = calloc((size_t)n + 3, sizeof *argv);
    if (!nums || !argv) {
        free(nums);
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
    cJSON_ArrayForEach(c, list)
        if (cJSON_IsString(c) && recipient_dial(c->valuestring, app->cfg->home_country_code, nums[k], NULL) == 0) {
            argv[k + 2] = nums[k];
            k++;
        }
    cJSON_Delete(b);
    request_hold(r);
    if (k == 0)
        forward(r);             /* nothing dialable: the WABA client says what is wrong */
    else if (store_eval(app, SCRIPT_BUDGET, k + 2, argv, NULL, on_budget, r) != 0)
        on_budget(app, NULL, r);
    free(nums);
    free(argv);
}

void proxy_blocklist(struct request *r)
{
    if (request_authorize(r, ROLE_API) == 0 && fwd_new(r, REC_NONE))
        forward(r);
}

void proxy_identity(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    bool put = evhttp_request_get_command(r->req) == EVHTTP_REQ_PUT;
    struct fwd *f = fwd_new(r, put ? REC_IDENTITY_PUT : REC_IDENTITY_GET);
    if (!f)
        return;
    const char *why;
    if (recipient_parse(r->arg[0], r->app->cfg->home_country_code, &f->rcpt, &why) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return;
    }
    /* the WABA client's own name for the user: as it is, or the dialled number's digits */
    snprintf(f->wa_id, sizeof f->wa_id, "%s", f->rcpt.form[0].key);
    snprintf(f->path, sizeof f->path, "/v1/contacts/%s/identity", f->wa_id);
    if (put) {
        cJSON *b = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(b, "hash");
        if (!cJSON_IsString(h) || !ops_hash_valid(h->valuestring)) {
            cJSON_Delete(b);
            request_reply_error(r, 400, "Bad request", "expected {\"hash\":\"…\"} (1 to 200 bytes of base64)");
            return;
        }
        snprintf(f->hash, sizeof f->hash, "%s", h->valuestring);
        cJSON_Delete(b);
    }
    forward(r);
}

void proxy_block(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct fwd *f = fwd_new(r, REC_BLOCK);
    if (!f)
        return;
    const char *why;
    if (recipient_parse(r->arg[0], r->app->cfg->home_country_code, &f->rcpt, &why) != 0) {
        request_reply_error(r, 400, "Bad phone number", "%s: %s", r->arg[0], why);
        return;
    }
    /* The route matched /v1/contacts/{phone}/VERB, with or without a final '/'. */
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r->req));
    size_t pl = strlen(path);
    if (pl && path[pl - 1] == '/')
        pl--;
    bool is_block = pl >= 6 && strncmp(path + pl - 6, "/block", 6) == 0;
    bool is_unblock = pl >= 8 && strncmp(path + pl - 8, "/unblock", 8) == 0;
    if (is_block) {
        f->block = 1;
    } else if (is_unblock) {
        f->block = 0;
    } else {
        cJSON *b = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
        const cJSON *blk = cJSON_GetObjectItemCaseSensitive(b, "block");
        if (cJSON_IsTrue(blk) || (cJSON_IsString(blk) && strcmp(blk->valuestring, "true") == 0))
            f->block = 1;
        cJSON_Delete(b);
    }
    forward(r);
}

void proxy_cloud_block(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct fwd *f = fwd_new(r, REC_CLOUD_BLOCK);
    if (!f)
        return;
    cloud_number(r, f);
    f->block = f->method == EVHTTP_REQ_POST ? 1 : f->method == EVHTTP_REQ_DELETE ? 0 : -1;
    if (f->block < 0)
        f->rec = REC_NONE;
    forward(r);
}

/* ---- everything else under /v1/ and the Cloud /{version}/ --------------- */

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
        /* "messages" anywhere in a segment: /messages, and send routes such as Meta's
         * /{number}/marketing_messages, never go around the gate */
        for (size_t i = 0; i + 8 <= n && messages_at < 0; i++)
            if (strncasecmp(p + i, "messages", 8) == 0)
                messages_at = segments;
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

static void on_unknown_answer(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct request *r = arg;
    if (no_answer(r, false, rep))
        return;
    if (rep->len > (size_t)app->cfg->max_body_bytes) {
        request_reply_error(r, 502, "Bad gateway", "the WABA client's answer (%zu bytes) is larger than "
                            "[server] max_body_bytes (%ld)", rep->len, app->cfg->max_body_bytes);
        return;
    }
    request_reply_raw(r, rep->status, rep->content_type ? rep->content_type : "application/json", rep->body, rep->len);
}

void proxy_unknown(struct request *r)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
    const char *q = evhttp_uri_get_query(uri);
    char path[2048];
    int w = snprintf(path, sizeof path, "%s%s%s", evhttp_uri_get_path(uri), q ? "?" : "", q ? q : "");
    if (w < 0 || (size_t)w >= sizeof path) {
        request_reply_error(r, 414, "URI too long", "the path and query are over %zu bytes", sizeof path - 1);
        return;
    }
    size_t len;
    const char *body = request_body(r, &len);
    /* The caller's Content-Type goes along (media uploads); its Authorization and
     * hop-by-hop headers never do: upstream.c sends waguard's own credentials. */
    const char *ct = request_header(r, "Content-Type");
    request_hold(r);
    if (upstream_request_typed(r->app, evhttp_request_get_command(r->req), path, len ? body : NULL, len, ct,
                               on_unknown_answer, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}
