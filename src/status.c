/* status — see include/status.h */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "ack.h"
#include "keycheck.h"
#include "schema.h"
#include "secnotify.h"
#include "store.h"

enum {
#define STATUS_ST_(n) ST_##n,
    SCHEMA_STATS(STATUS_ST_)
#undef STATUS_ST_
    ST_N
};

void status_healthz(struct request *r)
{
    request_reply_raw(r, 200, "text/plain", "ok\n", 3);
}

static void not_ready(struct request *r, const char *why)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", 0);
    cJSON_AddStringToObject(o, "reason", why);
    keycheck_add_status(r->app, o);
    secnotify_add_status(r->app, o);
    request_reply_json(r, 503, o);
}

static void on_ready_ping(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        not_ready(r, reply ? reply->str : store_status(app));
        return;
    }
    const char *why;
    if (secnotify_not_ready(app, &why)) {
        not_ready(r, why);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", 1);
    keycheck_add_status(app, o);
    secnotify_add_status(app, o);
    request_reply_json(r, 200, o);
}

void status_readyz(struct request *r)
{
    struct app *app = r->app;
    if (app->stopping) {
        not_ready(r, "shutting down");
        return;
    }
    /* Not connected: say so without a PING that could only fail (and count as a Redis
     * error: a probe polling during startup is not one). */
    if (!store_ready(app)) {
        not_ready(r, store_status(app));
        return;
    }
    if (store_command(app, on_ready_ping, r, "PING") != 0)
        not_ready(r, "out of memory");
}

static void on_stats(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct metrics_gauges g = { .pending = -1, .redis_up = store_ready(app),
                                .acks_in_flight = ack_in_flight(app), .checks_unsent = -1,
                                .check_budget = app->cfg->check_budget };
    if (!store_failure(app, reply, ST_N)) {
        redisReply **e = reply->element;
        g.checks_unsent = store_int(e[ST_CHECKS_UNSENT], 0);
        g.pending = store_int(e[ST_PENDING], 0);
        g.failed = store_int(e[ST_FAILED], 0);
        g.queued = store_int(e[ST_QUEUED], 0);
        long long oldest = store_int(e[ST_OLDEST], -1);
        g.oldest_age_s = oldest < 0 ? 0 : (double)(app_wall_ms() - oldest) / 1000.0;
        if (g.oldest_age_s < 0)
            g.oldest_age_s = 0;
    } else {
        g.redis_up = 0;
    }
    struct evbuffer *out = evbuffer_new();
    if (!out || metrics_render(app->metrics, &g, WAGUARD_VERSION, out) != 0) {
        if (out)
            evbuffer_free(out);
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    keycheck_metrics(app, out);
    secnotify_metrics(app, out);
    size_t len = evbuffer_get_length(out);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    request_reply_raw(r, 200, "text/plain; version=0.0.4", text ? text : "", text ? len : 0);
    evbuffer_free(out);
}

void status_metrics(struct request *r)
{
    char window[32];
    snprintf(window, sizeof window, "%lld", (long long)r->app->cfg->check_window_s * 1000);
    const char *argv[] = { window, "0" };
    if (!store_ready(r->app)) {             /* render what is known, redis_up 0 */
        on_stats(r->app, NULL, r);
        return;
    }
    if (store_call(r->app, STORE_STATS, 2, argv, NULL, on_stats, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}
