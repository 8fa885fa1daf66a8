/* webhook — see include/webhook.h */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ack.h"
#include "store.h"
#include "webhook_parse.h"

bool webhook_signature_ok(const char *header, const char *body, size_t len, const char *secret)
{
    if (!header || strncmp(header, "sha256=", 7) != 0 || strlen(header + 7) != 64)
        return false;
    unsigned char mac[EVP_MAX_MD_SIZE], given[32];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, len, mac, &maclen))
        return false;
    for (int i = 0; i < 32; i++) {
        unsigned int b;
        if (sscanf(header + 7 + 2 * i, "%2x", &b) != 1)
            return false;
        given[i] = (unsigned char)b;
    }
    return maclen == 32 && CRYPTO_memcmp(mac, given, 32) == 0;
}

/* The webhook's credentials: whichever of bearer token and signature the request
 * presents must be right, and it must present one that is configured. */
static bool authenticated(struct request *r, const char *body, size_t len)
{
    const struct config *cfg = r->app->cfg;
    if (!cfg->webhook_token && !cfg->hmac_secret)
        return true;
    const char *auth = request_header(r, "Authorization");
    const char *sig = request_header(r, "X-Hub-Signature-256");
    bool ok = false;
    if (auth) {
        if (!cfg->webhook_token || strncasecmp(auth, "Bearer ", 7) != 0 ||
            !server_secret_equal(auth + 7, strlen(auth + 7), cfg->webhook_token))
            return false;
        ok = true;
    }
    if (sig) {
        if (!cfg->hmac_secret || !webhook_signature_ok(sig, body, len, cfg->hmac_secret))
            return false;
        ok = true;
    }
    return ok;
}

static const char *const op_kinds[ITEM_COUNT] = {
    [ITEM_IDENTITY] = "id", [ITEM_INBOUND] = "in", [ITEM_NUMBER_CHANGE] = "num",
    [ITEM_SYSTEM] = "sys", [ITEM_CONTACT_CHECK] = "cc", [ITEM_PROFILE] = "prof",
    [ITEM_STATUS] = "st", [ITEM_ERROR] = "err", [ITEM_DEAD_LETTER] = "dead",
};

/* The 200 answer: what was recorded. */
static cJSON *webhook_answer(long long items, long long dup, long long late, long long dead)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 1);
    cJSON_AddNumberToObject(o, "items", (double)items);
    cJSON_AddNumberToObject(o, "duplicates", (double)dup);
    cJSON_AddNumberToObject(o, "late", (double)late);
    cJSON_AddNumberToObject(o, "dead_letters", (double)dead);
    return o;
}

static void free_ops(void *p)
{
    cJSON_Delete(p);
}

static void on_applied(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    cJSON *ops = r->data;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 6) {
        log_warn(&app->log, "webhook", "Redis did not confirm a webhook (%s): answering 503",
                 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        request_reply_error(r, 503, "Store unavailable", "the webhook was not recorded; retry later (%s)",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    long long accepted = reply->element[0]->integer, dup = reply->element[1]->integer,
              late = reply->element[2]->integer, dead = reply->element[3]->integer,
              queued = reply->element[4]->integer, future = reply->element[5]->integer;
    struct metrics *m = app->metrics;
    const cJSON *op;
    cJSON_ArrayForEach(op, ops) {
        const char *k = cJSON_GetObjectItemCaseSensitive(op, "k")->valuestring;
        for (int i = 0; i < ITEM_COUNT; i++)
            if (strcmp(k, op_kinds[i]) == 0)
                m->items[i]++;
        if (strcmp(k, "id") == 0)
            log_info(&app->log, "webhook", "identity observed for %s: hash %s (%s)",
                     cJSON_GetObjectItemCaseSensitive(op, "w")->valuestring,
                     cJSON_GetObjectItemCaseSensitive(op, "h")->valuestring,
                     cJSON_GetObjectItemCaseSensitive(op, "src")->valuestring);
        else if (strcmp(k, "dead") == 0)
            log_warn(&app->log, "webhook", "dead letter: %s",
                     cJSON_GetObjectItemCaseSensitive(op, "reason")->valuestring);
    }
    m->duplicates += (unsigned long long)dup;
    m->late += (unsigned long long)late;
    m->future += (unsigned long long)future;
    if (future)
        log_warn(&app->log, "webhook", "%lld identity time(s) later than Redis's clock: recorded at the time "
                 "received instead (check the WABA host's clock)", future);
    if (late)
        log_notice(&app->log, "webhook", "%lld identity notification(s) older than the recorded one ignored", late);
    if (queued)
        ack_kick(app);
    request_reply_json(r, 200, webhook_answer(accepted, dup, late, dead));
}

/* Sends operations to the apply script; the request is answered from the callback.
 * Takes ownership of ops. */
int webhook_apply(struct request *r, const cJSON *ops, store_cb *cb)
{
    char *json = cJSON_PrintUnformatted(ops);
    if (!json)
        return -1;
    request_hold(r);         /* before: once sent, r may be answered at any time */
    int rc = store_apply(r->app, json, false, cb, r);
    cJSON_free(json);
    return rc;
}

void webhook_post(struct request *r)
{
    struct app *app = r->app;
    size_t len;
    const char *body = request_body(r, &len);
    if (!authenticated(r, body, len)) {
        app->metrics->webhook_auth_failures++;
        log_warn(&app->log, "webhook", "refused a webhook with missing or wrong credentials");
        request_reply_error(r, 401, "Unauthorized",
                            "the webhook needs a valid Authorization: Bearer token or X-Hub-Signature-256");
        return;
    }
    struct webhook_batch b;
    const char *why;
    if (webhook_parse(body, len, app->cfg->home_country_code, &b, &why) != 0) {
        request_reply_error(r, 400, "Bad request", "%s", why);
        return;
    }
    if (cJSON_GetArraySize(b.ops) == 0) {
        webhook_batch_free(&b);
        request_reply_json(r, 200, webhook_answer(0, 0, 0, 0));
        return;
    }
    r->data = b.ops;         /* kept for the metrics and logs of on_applied */
    r->free_data = free_ops;
    if (webhook_apply(r, b.ops, on_applied) != 0)
        request_reply_error(r, 503, "Store unavailable", "the webhook was not recorded; retry later (%s)",
                            store_status(app));
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
    if (!m || strcmp(m, "subscribe") != 0 || !t || !c ||
        !server_secret_equal(t, strlen(t), cfg->verify_token)) {
        request_reply_error(r, 403, "Forbidden", "hub.mode, hub.verify_token or hub.challenge is wrong");
        return;
    }
    request_reply_raw(r, 200, "text/plain", c, strlen(c));
}
