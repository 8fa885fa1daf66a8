/* blocksync — see include/blocksync.h
 * Reads top to bottom: the timer → Redis's TIME (when the read began) → one page after
 * another for each number → the script that applies the list → the next number. */
#include "blocksync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "business.h"
#include "envelope.h"
#include "metrics.h"
#include "recipient.h"
#include "store.h"
#include "upstream.h"

#define MAX_NUMBERS 16
#define MAX_PAGES 1000
#define ONPREM_PAGE 200
#define CLOUD_PAGE 1000

struct blocksync {
    struct event *timer;
    bool running;
    /* the read in progress */
    char numbers[MAX_NUMBERS][BUSINESS_NUMBER_MAX]; /* "" On-Premises' one number, or a Cloud path without one */
    int nnumbers, at;
    char started[32];                /* Redis ms when the read began */
    cJSON *ids;                      /* the users listed so far for numbers[at] */
    long offset;                     /* On-Premises */
    char after[512];                 /* Cloud cursor */
    int pages;
};

static void next_page(struct app *app);
static void next_number(struct app *app);

static void schedule(struct app *app, long seconds)
{
    struct blocksync *b = app->blocksync;
    struct timeval tv = { seconds, 0 };
    evtimer_add(b->timer, &tv);
}

static void finish(struct app *app, bool ok, const char *why)
{
    struct blocksync *b = app->blocksync;
    cJSON_Delete(b->ids);
    b->ids = NULL;
    b->running = false;
    if (ok)
        app->metrics->blocklist_syncs_ok++;
    else {
        app->metrics->blocklist_syncs_failed++;
        log_warn(&app->log, "blocksync", "reading the blocklist failed, nothing changed: %s", why);
    }
    if (app->cfg->blocklist_sync_s > 0)
        schedule(app, ok ? app->cfg->blocklist_sync_s : (app->cfg->blocklist_sync_s < 60 ? app->cfg->blocklist_sync_s : 60));
}

/* ---- applying one number's list ------------------------------------------ */

static void on_list_applied(struct app *app, redisReply *reply, void *arg)
{
    struct blocksync *b = app->blocksync;
    (void)arg;
    if (!b)
        return;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        finish(app, false, reply && reply->type == REDIS_REPLY_ERROR ? reply->str : store_status(app));
        return;
    }
    log_info(&app->log, "blocksync", "blocklist%s%s: %d listed, %lld newly blocked, %lld unblocked elsewhere",
             b->numbers[b->at][0] ? " of number " : "", b->numbers[b->at], cJSON_GetArraySize(b->ids),
             reply->element[0]->integer, reply->element[1]->integer);
    b->at++;
    next_number(app);
}

static void apply_list(struct app *app)
{
    struct blocksync *b = app->blocksync;
    int n = cJSON_GetArraySize(b->ids);
    const char **argv = calloc((size_t)n + 2, sizeof *argv);
    if (!argv) {
        finish(app, false, "out of memory");
        return;
    }
    argv[0] = b->numbers[b->at];
    argv[1] = b->started;
    int i = 2;
    const cJSON *it;
    cJSON_ArrayForEach(it, b->ids) argv[i++] = it->valuestring;
    if (store_call(app, STORE_BLOCKSYNC, n + 2, argv, NULL, on_list_applied, NULL) != 0)
        finish(app, false, "out of memory");
    free(argv);
}

/* ---- reading pages ---------------------------------------------------------- */

static void add_user(struct blocksync *b, const cJSON *entry)
{
    /* kept in any shape the WABA client lists it (the seed's example is no plain wa_id) */
    char id[RECIPIENT_MAX];
    if (recipient_from_entry(entry, true, id) == 0)
        cJSON_AddItemToArray(b->ids, cJSON_CreateString(id));
}

static void on_page(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct blocksync *b = app->blocksync;
    (void)arg;
    if (!b || !b->running)
        return;
    char why[400];
    if (rep->status / 100 != 2) {
        snprintf(why, sizeof why, "HTTP %d: %.300s", rep->status, rep->status ? rep->body : rep->error);
        finish(app, false, why);
        return;
    }
    cJSON *o = cJSON_ParseWithLength(rep->body, rep->len);
    if (!cJSON_IsObject(o) || !envelope_ok(rep->status, o)) {
        cJSON_Delete(o);
        snprintf(why, sizeof why, "an answer that is not a blocklist page, or carries errors: %.300s", rep->body);
        finish(app, false, why);
        return;
    }
    bool more = false;
    const cJSON *e;
    if (app->cfg->api == API_CLOUD) {
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
        cJSON_ArrayForEach(e, data) add_user(b, e);
        const cJSON *paging = cJSON_GetObjectItemCaseSensitive(o, "paging");
        const cJSON *after = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(paging, "cursors"), "after");
        more = cJSON_GetObjectItemCaseSensitive(paging, "next") && cJSON_IsString(after) &&
               cJSON_GetArraySize(data) > 0 && strlen(after->valuestring) < sizeof b->after;
        if (more)
            snprintf(b->after, sizeof b->after, "%s", after->valuestring);
    } else {
        const cJSON *contacts = cJSON_GetObjectItemCaseSensitive(o, "contacts");
        cJSON_ArrayForEach(e, contacts) add_user(b, e);
        const cJSON *total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "pagination"), "total");
        int got = cJSON_GetArraySize(contacts);
        b->offset += got;
        more = got > 0 && cJSON_IsNumber(total) && total->valuedouble > 0 && total->valuedouble < 1e9 &&
               b->offset < (long)total->valuedouble;   /* a nonsense total (huge, NaN) ends the walk */
    }
    cJSON_Delete(o);
    if (more && ++b->pages >= MAX_PAGES) {
        finish(app, false, "more than 1000 pages: not applied");
        return;
    }
    if (more)
        next_page(app);
    else
        apply_list(app);
}

static void next_page(struct app *app)
{
    struct blocksync *b = app->blocksync;
    const struct config *cfg = app->cfg;
    char path[1024];
    if (cfg->api == API_CLOUD) {
        if (b->numbers[b->at][0])
            snprintf(path, sizeof path, "/%s/%s/block_users?limit=%d%s%s", cfg->graph_version, b->numbers[b->at],
                     CLOUD_PAGE, b->after[0] ? "&after=" : "", b->after);
        else
            snprintf(path, sizeof path, "/block_users?limit=%d%s%s", CLOUD_PAGE, b->after[0] ? "&after=" : "", b->after);
    } else {
        snprintf(path, sizeof path, "/v1/contacts/blocklist?limit=%d&offset=%ld", ONPREM_PAGE, b->offset);
    }
    if (upstream_request(app, EVHTTP_REQ_GET, path, NULL, 0, on_page, NULL) != 0)
        finish(app, false, "out of memory");
}

static void next_number(struct app *app)
{
    struct blocksync *b = app->blocksync;
    if (b->at >= b->nnumbers) {
        finish(app, true, NULL);
        return;
    }
    cJSON_Delete(b->ids);
    b->ids = cJSON_CreateArray();
    b->offset = 0;
    b->after[0] = '\0';
    b->pages = 0;
    next_page(app);
}

/* ---- starting ---------------------------------------------------------------- */

static void on_time(struct app *app, redisReply *reply, void *arg)
{
    struct blocksync *b = app->blocksync;
    (void)arg;
    if (!b)
        return;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        finish(app, false, store_status(app));
        return;
    }
    snprintf(b->started, sizeof b->started, "%lld",
             atoll(reply->element[0]->str) * 1000 + atoll(reply->element[1]->str) / 1000);
    next_number(app);
}

void blocksync_now(struct app *app)
{
    struct blocksync *b = app->blocksync;
    if (!b || b->running || app->stopping)
        return;
    if (!store_ready(app)) {
        schedule(app, 1);
        return;
    }
    b->running = true;
    b->nnumbers = 0;
    b->at = 0;
    if (app->cfg->api == API_CLOUD)
        b->nnumbers = business_numbers(app->cfg, b->numbers, MAX_NUMBERS);
    if (b->nnumbers == 0)
        b->numbers[b->nnumbers++][0] = '\0';
    if (store_command(app, on_time, NULL, "TIME") != 0)
        finish(app, false, "out of memory");
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    blocksync_now(arg);
}

int blocksync_new(struct app *app, char *err, size_t errlen)
{
    struct blocksync *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->blocksync = b;
    b->timer = evtimer_new(app->base, on_timer, app);
    if (!b->timer) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (app->cfg->blocklist_sync_s > 0)
        schedule(app, 1);
    return 0;
}

void blocksync_free(struct app *app)
{
    struct blocksync *b = app->blocksync;
    if (!b)
        return;
    if (b->timer)
        event_free(b->timer);
    cJSON_Delete(b->ids);
    free(b);
    app->blocksync = NULL;
}
