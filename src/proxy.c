/* proxy — see include/proxy.h */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "phone.h"
#include "store.h"
#include "upstream.h"
#include "webhook.h"

enum record { REC_NONE, REC_CONTACTS, REC_IDENTITY_GET, REC_IDENTITY_PUT, REC_BLOCK, REC_CLOUD_BLOCK };

struct fwd {
    enum record rec;
    enum evhttp_cmd_type method;
    char path[1024];
    char wa_id[PHONE_MAX];
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

static cJSON *op(cJSON *ops, const char *kind, const char *w)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "k", kind);
    if (w)
        cJSON_AddStringToObject(o, "w", w);
    cJSON_AddItemToArray(ops, o);
    return o;
}

/* What a 2xx answer tells us, as operations for the apply script (NULL: nothing). */
static cJSON *ops_from_answer(struct app *app, struct fwd *f)
{
    cJSON *ops = cJSON_CreateArray();
    cJSON *ans = cJSON_ParseWithLength(f->answer ? f->answer : "", f->answer_len);
    switch (f->rec) {
    case REC_CONTACTS: {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(ans, "contacts")) {
            const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "status");
            const cJSON *wa = cJSON_GetObjectItemCaseSensitive(c, "wa_id");
            char n[PHONE_MAX], w[PHONE_MAX];
            if (!cJSON_IsString(in) || !cJSON_IsString(st) ||
                phone_normalise(in->valuestring, app->cfg->home_country_code, n, sizeof n, NULL) != 0)
                continue;
            cJSON *o = op(ops, "cc", NULL);
            cJSON_AddStringToObject(o, "in", n);
            cJSON_AddStringToObject(o, "raw", in->valuestring);
            cJSON_AddStringToObject(o, "st", st->valuestring);
            if (cJSON_IsString(wa) && strcmp(st->valuestring, "valid") == 0 &&
                phone_normalise(wa->valuestring, NULL, w, sizeof w, NULL) == 0)
                cJSON_AddStringToObject(o, "w", w);
        }
        break;
    }
    case REC_IDENTITY_GET: {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(ans, "contacts");
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "hash");
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(c, "created_timestamp");
        const cJSON *ack = cJSON_GetObjectItemCaseSensitive(c, "acknowledged");
        if (cJSON_IsString(h) && cJSON_IsNumber(ts)) {
            cJSON *o = op(ops, "id", f->wa_id);
            cJSON_AddStringToObject(o, "h", h->valuestring);
            double t = ts->valuedouble < 1e11 ? ts->valuedouble * 1000 : ts->valuedouble;
            cJSON_AddNumberToObject(o, "t", t);
            cJSON_AddStringToObject(o, "src", "lookup");
            cJSON_AddBoolToObject(o, "ack", cJSON_IsTrue(ack) ||
                                  (cJSON_IsString(ack) && strcmp(ack->valuestring, "true") == 0));
        }
        break;
    }
    case REC_BLOCK:
        if (f->block >= 0)
            cJSON_AddNumberToObject(op(ops, "blk", f->wa_id), "b", f->block);
        break;
    case REC_CLOUD_BLOCK: {
        cJSON *req = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
        const cJSON *u;
        cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(req, "block_users")) {
            const cJSON *who = cJSON_GetObjectItemCaseSensitive(u, "user");
            if (!cJSON_IsString(who))
                who = cJSON_GetObjectItemCaseSensitive(u, "user_id");
            char w[PHONE_MAX];
            if (cJSON_IsString(who) &&
                phone_normalise(who->valuestring, app->cfg->home_country_code, w, sizeof w, NULL) == 0)
                cJSON_AddNumberToObject(op(ops, "blk", w), "b", f->block);
        }
        cJSON_Delete(req);
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
    if (rep->status == 0) {
        bool timeout = rep->error && strstr(rep->error, "timed out");
        request_reply_error(r, timeout ? 504 : 502, timeout ? "Gateway timeout" : "Bad gateway",
                            "the WABA client did not answer: %s", rep->error ? rep->error : "?");
        return;
    }
    f->status = rep->status;
    f->answer = malloc(rep->len + 1);
    if (f->answer) {
        memcpy(f->answer, rep->body, rep->len);
        f->answer[rep->len] = '\0';
        f->answer_len = rep->len;
    }
    if (rep->status / 100 != 2 || !f->answer) {
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
        request_reply_error(r, 500, "Internal error", "out of memory");
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

static void gated_send(struct request *r, const char *to_key, const char *alt_key)
{
    if (request_authorize(r, ROLE_API) != 0)
        return;
    struct fwd *f = fwd_new(r, REC_NONE);
    if (!f)
        return;
    cJSON *msg = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(msg, to_key);
    if (!cJSON_IsString(to) && alt_key)
        to = cJSON_GetObjectItemCaseSensitive(msg, alt_key);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(msg, "status");
    if (alt_key && cJSON_IsString(status) && !cJSON_IsString(to)) {
        /* Cloud API "mark as read" ({"status":"read","message_id":…}): no one is sent anything. */
        cJSON_Delete(msg);
        forward(r);
        return;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(msg, "type");
    char t[32];
    snprintf(t, sizeof t, "%s", cJSON_IsString(type) ? type->valuestring : "text");
    const char *why = "missing";
    if (!cJSON_IsObject(msg) || !cJSON_IsString(to) ||
        phone_normalise(to->valuestring, r->app->cfg->home_country_code, f->wa_id, sizeof f->wa_id, &why) != 0) {
        cJSON_Delete(msg);
        request_reply_error(r, 400, "Bad request", "the message needs a JSON body with \"%s\": %s", to_key, why);
        return;
    }
    cJSON_Delete(msg);
    request_hold(r);
    if (gate_check(r->app, f->wa_id, t, on_gate, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

void proxy_messages(struct request *r)
{
    gated_send(r, "to", NULL);
}

void proxy_cloud_messages(struct request *r)
{
    gated_send(r, "to", "recipient");
}

/* ---- recorded forwards ------------------------------------------------- */

void proxy_contacts(struct request *r)
{
    if (request_authorize(r, ROLE_API) == 0 && fwd_new(r, REC_CONTACTS))
        forward(r);
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
    if (phone_normalise(r->arg[0], r->app->cfg->home_country_code, f->wa_id, sizeof f->wa_id, &why) != 0) {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return;
    }
    snprintf(f->path, sizeof f->path, "/v1/contacts/%s/identity", f->wa_id);
    if (put) {
        cJSON *b = cJSON_ParseWithLength(f->body ? f->body : "", f->len);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(b, "hash");
        if (!cJSON_IsString(h) || strlen(h->valuestring) >= sizeof f->hash) {
            cJSON_Delete(b);
            request_reply_error(r, 400, "Bad request", "expected {\"hash\":\"…\"} (at most 255 bytes)");
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
    if (phone_normalise(r->arg[0], r->app->cfg->home_country_code, f->wa_id, sizeof f->wa_id, &why) != 0) {
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
    f->block = f->method == EVHTTP_REQ_POST ? 1 : f->method == EVHTTP_REQ_DELETE ? 0 : -1;
    if (f->block < 0)
        f->rec = REC_NONE;
    forward(r);
}
