/* secnotify — see include/secnotify.h */
#include "secnotify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "envelope.h"
#include "ops.h"
#include "upstream.h"

enum sn_state { SN_UNKNOWN, SN_ON, SN_OFF };

struct secnotify {
    enum sn_state state;
    char why[400];
    unsigned generation;         /* the run an answer belongs to: older runs' answers are dropped */
    struct event *timer;
    long retry_s;                /* after a failed read or PATCH: 1, 2, 4, 8 s */
};

struct sn_call {
    struct app *app;
    unsigned generation;
};

static const char *const state_names[] = { "unknown", "on", "off" };

static bool active(const struct app *app)
{
    return app->cfg->api == API_ONPREM && app->cfg->security_notifications != SECNOT_OFF;
}

/* The next reading: settings_check_s after one that found it on; after a failure (no
 * answer, or a PATCH refused) in 1 s, then 2, 4 and every 8 s (settings_check_s at most). */
static void schedule(struct app *app, bool failed)
{
    struct secnotify *s = app->secnotify;
    long every = app->cfg->settings_check_s;
    if (!failed) {
        s->retry_s = 0;
    } else {
        s->retry_s = s->retry_s ? (s->retry_s < 8 ? s->retry_s * 2 : 8) : 1;
        if (s->retry_s < every)
            every = s->retry_s;
    }
    struct timeval tv = { every, 0 };
    evtimer_add(s->timer, &tv);
}

static struct sn_call *call_new(struct app *app)
{
    struct sn_call *c = malloc(sizeof *c);
    if (c)
        *c = (struct sn_call){ .app = app, .generation = app->secnotify->generation };
    return c;
}

static bool current(struct app *app, struct sn_call *c)
{
    bool ok = app->secnotify && c->generation == app->secnotify->generation;
    free(c);
    return ok;
}

static void describe(const struct upstream_reply *rep, const char *what, char *buf, size_t len)
{
    if (!rep->status) {
        snprintf(buf, len, "%s got no answer: %s", what, rep->error ? rep->error : "?");
        return;
    }
    cJSON *o = cJSON_ParseWithLength(rep->body, rep->len);
    char d[200];
    envelope_describe(o, d, sizeof d);
    cJSON_Delete(o);
    snprintf(buf, len, "%s answered HTTP %d%s%.200s", what, rep->status, d[0] ? ": " : "", d);
}

static void on_patched(struct app *app, const struct upstream_reply *rep, void *arg)
{
    if (!current(app, arg))
        return;
    struct secnotify *s = app->secnotify;
    cJSON *o = rep->status ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    bool ok = envelope_ok(rep->status, o);
    cJSON_Delete(o);
    if (ok) {
        s->state = SN_ON;
        s->why[0] = '\0';
        schedule(app, false);
        log_notice(&app->log, "secnotify", "show_security_notifications was off on the WABA client: turned it on "
                   "([upstream] security_notifications = ensure)");
        return;
    }
    schedule(app, true);
    s->state = SN_OFF;
    char why[200];
    describe(rep, "PATCH /v1/settings/application", why, sizeof why);
    snprintf(s->why, sizeof s->why, "show_security_notifications is off on the WABA client and could not be turned "
             "on (%s): it sends no identity change and lets every send through", why);
    log_error(&app->log, "secnotify", "%s; not ready until it is on", s->why);
}

static void on_settings(struct app *app, const struct upstream_reply *rep, void *arg)
{
    if (!current(app, arg))
        return;
    struct secnotify *s = app->secnotify;
    cJSON *o = rep->status ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    if (!envelope_ok(rep->status, o)) {
        schedule(app, true);
        char why[300];
        describe(rep, "GET /v1/settings/application", why, sizeof why);
        log_warn(&app->log, "secnotify", "could not read show_security_notifications (%s); reading again in %ld s",
                 why, s->retry_s < app->cfg->settings_check_s ? s->retry_s : app->cfg->settings_check_s);
        if (s->state == SN_UNKNOWN)
            snprintf(s->why, sizeof s->why, "%s", why);
        cJSON_Delete(o);
        return;
    }
    const cJSON *appl = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "settings"), "application");
    bool on = ops_acknowledged(cJSON_GetObjectItemCaseSensitive(appl, "show_security_notifications"));
    cJSON_Delete(o);
    if (on) {
        schedule(app, false);
        if (s->state != SN_ON)
            log_info(&app->log, "secnotify", "show_security_notifications is on");
        s->state = SN_ON;
        s->why[0] = '\0';
        return;
    }
    if (app->cfg->security_notifications == SECNOT_ENSURE) {
        static const char body[] = "{\"show_security_notifications\":true}";
        struct sn_call *c = call_new(app);
        if (c && upstream_request(app, EVHTTP_REQ_PATCH, "/v1/settings/application", body, sizeof body - 1,
                                  on_patched, c) == 0)
            return;
        free(c);
    }
    schedule(app, app->cfg->security_notifications == SECNOT_ENSURE);   /* check: known off, read as usual */
    s->state = SN_OFF;
    snprintf(s->why, sizeof s->why, "show_security_notifications is off on the WABA client: it sends no identity "
             "change and lets every send through ([upstream] security_notifications = check)");
    log_error(&app->log, "secnotify", "%s", s->why);
}

void secnotify_run(struct app *app)
{
    struct secnotify *s = app->secnotify;
    if (!s)
        return;
    s->generation++;
    evtimer_del(s->timer);
    if (!active(app)) {
        s->state = SN_UNKNOWN;
        return;
    }
    struct sn_call *c = call_new(app);
    if (!c || upstream_request(app, EVHTTP_REQ_GET, "/v1/settings/application", NULL, 0, on_settings, c) != 0) {
        free(c);
        schedule(app, true);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    secnotify_run(arg);
}

int secnotify_new(struct app *app, char *err, size_t errlen)
{
    struct secnotify *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->secnotify = s;
    s->timer = evtimer_new(app->base, on_timer, app);
    if (!s->timer) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    secnotify_run(app);
    return 0;
}

void secnotify_free(struct app *app)
{
    struct secnotify *s = app->secnotify;
    if (!s)
        return;
    if (s->timer)
        event_free(s->timer);
    free(s);
    app->secnotify = NULL;
}

void secnotify_add_status(const struct app *app, cJSON *answer)
{
    const struct secnotify *s = app->secnotify;
    if (!s || !active(app))
        return;
    cJSON *o = cJSON_AddObjectToObject(answer, "security_notifications");
    cJSON_AddStringToObject(o, "policy", app->cfg->security_notifications == SECNOT_ENSURE ? "ensure" : "check");
    cJSON_AddStringToObject(o, "state", state_names[s->state]);
    if (s->why[0])
        cJSON_AddStringToObject(o, "why", s->why);
}

bool secnotify_not_ready(const struct app *app, const char **why)
{
    const struct secnotify *s = app->secnotify;
    if (!s || !active(app) || s->state != SN_OFF)
        return false;
    *why = s->why;
    return true;
}

void secnotify_metrics(const struct app *app, struct evbuffer *out)
{
    const struct secnotify *s = app->secnotify;
    if (!s || !active(app))
        return;
    evbuffer_add_printf(out, "# HELP waguard_security_notifications On-Premises show_security_notifications as the "
                        "WABA client last said: 1 for the state it is in.\n"
                        "# TYPE waguard_security_notifications gauge\n");
    for (int i = 0; i < 3; i++)
        evbuffer_add_printf(out, "waguard_security_notifications{state=\"%s\"} %d\n", state_names[i],
                            (int)s->state == i ? 1 : 0);
}
