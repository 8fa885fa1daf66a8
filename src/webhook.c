/* webhook — see include/webhook.h */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "schema.h"
#include "secret.h"
#include "store.h"
#include "webhook_parse.h"

enum {
#define WEBHOOK_APPLY_(n) APPLY_##n,
    SCHEMA_APPLY_REPLY(WEBHOOK_APPLY_)
#undef WEBHOOK_APPLY_
    APPLY_N
};

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

bool webhook_signature_ok(const char *header, const char *body, size_t len, const struct secret_mac *key)
{
    if (!header || strncmp(header, "sha256=", 7) != 0 || strlen(header + 7) != 64)
        return false;
    unsigned char mac[SECRET_DIGEST_LEN], given[SECRET_DIGEST_LEN];
    if (!secret_mac_sum(key, body, len, mac))
        return false;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(header[7 + 2 * i]), lo = hexval(header[8 + 2 * i]);
        if (hi < 0 || lo < 0)
            return false;
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    return secret_digest_equal(mac, given);
}

/* The webhook's credentials (include/webhook.h).  Returns NULL, or why they are refused. */
static const char *refused(struct request *r, const char *body, size_t len)
{
    const struct config *cfg = r->app->cfg;
    const char *auth = request_header(r, "Authorization");
    if (cfg->hmac_secret) {
        if (!webhook_signature_ok(request_header(r, "X-Hub-Signature-256"), body, len, cfg->hmac_key))
            return "the body needs Meta's valid X-Hub-Signature-256 ([webhook] hmac_secret_file is set: a token "
                   "does not stand in for it)";
        /* a token presented beside it must be right too */
        if (auth && cfg->webhook_token) {
            const char *tok = request_bearer(r);
            if (!tok || !secret_matches(cfg->sha, tok, strlen(tok), cfg->webhook_token_digest))
                return "the webhook token is wrong";
        }
        return NULL;
    }
    if (cfg->webhook_token) {
        const char *tok = request_bearer(r);
        if (!tok || !secret_matches(cfg->sha, tok, strlen(tok), cfg->webhook_token_digest))
            return "the webhook needs Authorization: Bearer <[webhook] token_file's token>";
    }
    return NULL;
}

/* The 200 answer: what was recorded. */
static cJSON *answer(long long items, long long dup, long long late, long long dead)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 1);
    jsonx_add_int(o, "items", items);
    jsonx_add_int(o, "duplicates", dup);
    jsonx_add_int(o, "late", late);
    jsonx_add_int(o, "dead_letters", dead);
    return o;
}

static void on_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    const char *why = store_failure(app, reply, APPLY_N);
    if (why) {
        log_warn(&app->log, "webhook", "Redis did not confirm a webhook (%s): answering 503", why);
        request_reply_error(r, 503, "Store unavailable", "the webhook was not recorded; retry later (%s)", why);
        return;
    }
    request_reply_json(r, 200, answer(store_int(reply->element[APPLY_ACCEPTED], 0),
                                      store_int(reply->element[APPLY_DUPLICATES], 0),
                                      store_int(reply->element[APPLY_LATE], 0),
                                      store_int(reply->element[APPLY_DEAD], 0)));
}

void webhook_post(struct request *r)
{
    struct app *app = r->app;
    size_t len;
    const char *body = request_body(r, &len);
    const char *no = refused(r, body, len);
    if (no) {
        app->metrics->webhook_auth_failures++;
        log_warn(&app->log, "webhook", "refused a webhook: %s", no);
        request_reply_error(r, 401, "Unauthorized", "%s", no);
        return;
    }
    struct webhook_batch b;
    char why[160];
    if (webhook_parse(body, len, app->cfg->home_country_code, &b, why, sizeof why) != 0) {
        request_reply_error(r, 400, "Bad request", "%s", why);
        return;
    }
    if (b.ops.count == 0 && !b.ops.oom) {
        webhook_batch_free(&b);
        request_reply_json(r, 200, answer(0, 0, 0, 0));
        return;
    }
    int rc = store_apply(app, &b.ops, false, on_recorded, r);
    webhook_batch_free(&b);
    if (rc != 0)
        request_reply_error(r, 503, "Store unavailable", "the webhook was not recorded (out of memory); retry later");
}

void webhook_verify(struct request *r)
{
    const struct config *cfg = r->app->cfg;
    char mode[32], token[256], challenge[256];
    const char *m = request_query(r, "hub.mode", mode, sizeof mode);
    const char *t = request_query(r, "hub.verify_token", token, sizeof token);
    const char *c = request_query(r, "hub.challenge", challenge, sizeof challenge);
    if (!cfg->verify_token) {
        request_reply_error(r, 403, "Forbidden", "no [webhook] verify_token_file is configured");
        return;
    }
    if (!m || strcmp(m, "subscribe") != 0 || !t || !c || !*c ||
        !secret_equal(cfg->sha, t, strlen(t), cfg->verify_token)) {
        request_reply_error(r, 403, "Forbidden", "hub.mode, hub.verify_token or hub.challenge is wrong");
        return;
    }
    request_reply_raw(r, 200, "text/plain", c, strlen(c));
}
