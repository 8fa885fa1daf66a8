/* admin — see include/admin.h */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ack.h"
#include "recipient.h"
#include "store.h"

/* ---- GET /v1/identities?state=pending|failed&limit=N&cursor=C --------- */

static cJSON *str_or_null(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && e->len ? cJSON_CreateString(e->str) : cJSON_CreateNull();
}

static void on_list(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        (reply->elements - 1) % 7 != 0) {
        request_reply_error(r, 503, "Store unavailable", "%s",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(o, "identities");
    for (size_t i = 1; i + 6 < reply->elements; i += 7) {
        redisReply **e = reply->element + i;
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "wa_id", e[0]->str);
        cJSON_AddItemToObject(it, "hash", str_or_null(e[1]));
        cJSON_AddNumberToObject(it, "created_timestamp", (double)(atoll(e[2]->str) / 1000));
        cJSON_AddBoolToObject(it, "acknowledged", strcmp(e[3]->str, "1") == 0);
        cJSON_AddItemToObject(it, "state", str_or_null(e[4]));
        cJSON_AddNumberToObject(it, "attempts", atof(e[5]->str));
        cJSON_AddItemToObject(it, "last_error", str_or_null(e[6]));
        cJSON_AddItemToArray(list, it);
    }
    cJSON_AddItemToObject(o, "next_cursor", str_or_null(reply->element[0]));
    request_reply_json(r, 200, o);
}

void admin_list(struct request *r)
{
    if (request_authorize(r, ROLE_ADMIN) != 0)
        return;
    char state[16], limit_s[16], cursor[RECIPIENT_MAX];
    const char *st = request_query(r, "state", state, sizeof state);
    if (!st)
        st = "pending";
    if (strcmp(st, "pending") != 0 && strcmp(st, "failed") != 0) {
        request_reply_error(r, 400, "Bad request", "state must be pending or failed");
        return;
    }
    long limit = 100;
    if (request_query(r, "limit", limit_s, sizeof limit_s)) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || limit < 1 || limit > 1000) {
            request_reply_error(r, 400, "Bad request", "limit must be 1 to 1000");
            return;
        }
    }
    const char *cur = request_query(r, "cursor", cursor, sizeof cursor);
    char lim[16];
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *argv[] = { st, cur ? cur : "", lim };
    request_hold(r);
    if (store_eval(r->app, SCRIPT_LIST, 3, argv, NULL, on_list, r) != 0)
        on_list(r->app, NULL, r);
}

/* ---- GET /v1/identities/{wa_id} ---------------------------------------- */

static const char *field(const redisReply *hash, const char *name)
{
    for (size_t i = 0; i + 1 < hash->elements; i += 2)
        if (strcmp(hash->element[i]->str, name) == 0)
            return hash->element[i + 1]->str;
    return NULL;
}

static cJSON *json_list(const redisReply *l)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < l->elements; i++) {
        cJSON *e = cJSON_Parse(l->element[i]->str);
        if (e)
            cJSON_AddItemToArray(a, e);
    }
    return a;
}

static void on_get(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        request_reply_error(r, 503, "Store unavailable", "%s",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    const redisReply *h = reply->element[0];
    const char *hash = field(h, "id_hash");
    if (!hash) {
        request_reply_error(r, 404, "Not found", "no identity is known for %s", r->arg[1]);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", r->arg[1]);
    cJSON *id = cJSON_AddObjectToObject(o, "identity");
    const char *ts = field(h, "id_ts"), *ack = field(h, "id_ack"), *state = field(h, "id_state"),
               *att = field(h, "id_attempts"), *err = field(h, "id_err"), *by = field(h, "id_acked_by"),
               *at = field(h, "id_acked_at");
    cJSON_AddStringToObject(id, "hash", hash);
    cJSON_AddNumberToObject(id, "created_timestamp", ts ? (double)(atoll(ts) / 1000) : 0);
    cJSON_AddBoolToObject(id, "acknowledged", ack && strcmp(ack, "1") == 0);
    cJSON_AddStringToObject(id, "state", state ? state : "pending");
    cJSON_AddNumberToObject(id, "attempts", att ? atof(att) : 0);
    if (err && *err)
        cJSON_AddStringToObject(id, "last_error", err);
    if (by)
        cJSON_AddStringToObject(id, "acknowledged_by", by);
    if (at)
        cJSON_AddNumberToObject(id, "acknowledged_at", (double)(atoll(at) / 1000));
    cJSON_AddItemToObject(o, "history", json_list(reply->element[1]));
    cJSON_AddItemToObject(o, "acks", json_list(reply->element[2]));
    request_reply_json(r, 200, o);
}

/* An operator names a user as WhatsApp does (a wa_id or user id, taken as it is; the
 * scripts follow a linked user id to its record), or by a dialable number. */
static int normalise_arg(struct request *r)
{
    const char *why;
    char id[RECIPIENT_MAX];
    if (recipient_from_whatsapp(r->arg[0], id, NULL) == 0) {
        snprintf(r->arg[1], sizeof r->arg[1], "%s", id);
        return 0;
    }
    if (recipient_dial(r->arg[0], r->app->cfg->home_country_code, id, &why) == 0) {
        snprintf(r->arg[1], sizeof r->arg[1], "%s", id);
        return 0;
    }
    {
        request_reply_error(r, 400, "Bad wa_id", "%s: %s", r->arg[0], why);
        return -1;
    }
    return 0;
}

void admin_get(struct request *r)
{
    if (request_authorize(r, ROLE_ADMIN) != 0 || normalise_arg(r) != 0)
        return;
    const char *argv[] = { r->arg[1] };
    request_hold(r);
    if (store_eval(r->app, SCRIPT_GET, 1, argv, NULL, on_get, r) != 0)
        on_get(r->app, NULL, r);
}

/* ---- POST /v1/identities/{wa_id}/ack ----------------------------------- */

static void on_enqueued(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        request_reply_error(r, 503, "Store unavailable", "%s",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    if (reply->integer < 0) {
        request_reply_error(r, 404, "Not found", "no identity is known for %s", r->arg[1]);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", r->arg[1]);
    if (reply->integer == 0) {
        cJSON_AddStringToObject(o, "state", "acknowledged");
        request_reply_json(r, 200, o);
        return;
    }
    log_notice(&app->log, "admin", "%s asked to acknowledge %s now", r->caller, r->arg[1]);
    ack_kick(app);
    cJSON_AddStringToObject(o, "state", "queued");
    request_reply_json(r, 202, o);
}

void admin_ack(struct request *r)
{
    if (request_authorize(r, ROLE_ADMIN) != 0 || normalise_arg(r) != 0)
        return;
    const char *argv[] = { r->arg[1], r->caller };
    request_hold(r);
    if (store_eval(r->app, SCRIPT_ENQUEUE, 2, argv, NULL, on_enqueued, r) != 0)
        on_enqueued(r->app, NULL, r);
}

/* ---- POST /v1/identities/{wa_id}/release -------------------------------- */

struct release {
    char category[64];           /* "*": every category */
};

static void on_released(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct release *rel = r->data;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == -1) {
        request_reply_error(r, 404, "Not found", "%s has no identity change on record: nothing is held", r->arg[1]);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        request_reply_error(r, 503, "Store unavailable", "%s",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    for (size_t i = 0; i < app->cfg->nholds; i++) {
        const struct hold_category *h = &app->cfg->holds[i];
        if (h->seconds > 0 && (strcmp(rel->category, "*") == 0 || strcmp(rel->category, h->name) == 0)) {
            struct metrics_hold *mh = metrics_hold(app->metrics, h->name);
            if (mh)
                mh->lifted++;
        }
    }
    log_notice(&app->log, "admin", "%s lifted the %s hold of %s (change at %s)", r->caller,
               rel->category, reply->element[0]->str, reply->element[1]->str);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", reply->element[0]->str);
    cJSON_AddBoolToObject(o, "released", 1);
    cJSON_AddStringToObject(o, "category", rel->category);
    cJSON_AddNumberToObject(o, "changed_at", (double)(atoll(reply->element[1]->str) / 1000));
    cJSON_AddStringToObject(o, "hash", reply->element[2]->str);
    cJSON_AddStringToObject(o, "released_by", r->caller);
    request_reply_json(r, 200, o);
}

void admin_release(struct request *r)
{
    if (request_authorize(r, ROLE_ADMIN) != 0 || normalise_arg(r) != 0)
        return;
    size_t len;
    const char *body = request_body(r, &len);
    cJSON *in = cJSON_ParseWithLength(body, len);
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(in, "reason");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(in, "category");
    bool cat_ok = !cat || (cJSON_IsString(cat) && config_category_valid(cat->valuestring));
    if (!cJSON_IsObject(in) || !cJSON_IsString(why) || !why->valuestring[0] || strlen(why->valuestring) > 500 ||
        !cat_ok) {
        cJSON_Delete(in);
        request_reply_error(r, 400, "Bad request", "expected {\"reason\":\"why the hold is lifted\"} (at most "
                            "500 characters), optionally with \"category\" (default: every category)");
        return;
    }
    struct release *rel = calloc(1, sizeof *rel);
    if (!rel) {
        cJSON_Delete(in);
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    snprintf(rel->category, sizeof rel->category, "%s", cat ? cat->valuestring : "*");
    r->data = rel;
    r->free_data = free;
    const char *argv[] = { r->arg[1], r->caller, rel->category, why->valuestring };
    request_hold(r);
    int rc = store_eval(r->app, SCRIPT_RELEASE, 4, argv, NULL, on_released, r);
    cJSON_Delete(in);
    if (rc != 0)
        on_released(r->app, NULL, r);
}
