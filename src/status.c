/* status — see include/status.h */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ack.h"
#include "keycheck.h"
#include "store.h"

void status_healthz(struct request *r)
{
    request_reply_raw(r, 200, "text/plain", "ok\n", 3);
}

static void on_ready_ping(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ready", 0);
        cJSON_AddStringToObject(o, "reason", reply ? reply->str : store_status(app));
        request_reply_json(r, 503, o);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", 1);
    cJSON *kc = keycheck_status(app);
    if (kc)
        cJSON_AddItemToObject(o, "identity_check", kc);
    request_reply_json(r, 200, o);
}

void status_readyz(struct request *r)
{
    struct app *app = r->app;
    if (app->stopping) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ready", 0);
        cJSON_AddStringToObject(o, "reason", "shutting down");
        request_reply_json(r, 503, o);
        return;
    }
    request_hold(r);
    if (store_command(app, on_ready_ping, r, "PING") != 0)
        on_ready_ping(app, NULL, r);
}

static void on_stats(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct metrics_gauges g = { .pending = -1, .redis_up = store_ready(app),
                                .acks_in_flight = ack_in_flight(app), .checks_unsent = -1,
                                .check_budget = app->cfg->check_budget };
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 5) {
        g.checks_unsent = reply->element[4]->integer;
        g.pending = reply->element[0]->integer;
        g.failed = reply->element[1]->integer;
        g.queued = reply->element[2]->integer;
        long long oldest = reply->element[3]->integer;
        g.oldest_age_s = oldest < 0 ? 0 : (double)(app_wall_ms() - oldest) / 1000.0;
        if (g.oldest_age_s < 0)
            g.oldest_age_s = 0;
    } else {
        g.redis_up = 0;
    }
    char *text = metrics_render(app->metrics, &g, WAGUARD_VERSION);
    keycheck_metrics(app, &text);
    if (!text) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    request_reply_raw(r, 200, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
}

void status_metrics(struct request *r)
{
    request_hold(r);
    char window[32];
    snprintf(window, sizeof window, "%lld", (long long)r->app->cfg->check_window_s * 1000);
    const char *argv[] = { window };
    if (store_eval(r->app, SCRIPT_STATS, 1, argv, NULL, on_stats, r) != 0)
        on_stats(r->app, NULL, r);
}
