/* keycheck — see include/keycheck.h */
#include "keycheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "business.h"
#include "config.h"
#include "upstream.h"

#define KEYCHECK_MAX 16
#define RETRY_S 60

enum keycheck_state { KC_PENDING, KC_ON, KC_REFUSED };

struct number_check {
    char number[64];
    enum keycheck_state state;
    char why[300];
    unsigned generation;         /* the run it belongs to: late answers of older runs are dropped */
};

struct keycheck {
    struct number_check n[KEYCHECK_MAX];
    int count;
    unsigned generation;
    struct event *retry;
};

struct call {
    struct app *app;
    int index;
    unsigned generation;
};

static void on_settings(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct call *c = arg;
    struct keycheck *k = app->keycheck;
    if (!k || c->generation != k->generation) {
        free(c);
        return;
    }
    struct number_check *n = &k->n[c->index];
    free(c);
    cJSON *o = rep->status ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(o, "success");
    if (rep->status / 100 == 2 && cJSON_IsTrue(ok)) {
        n->state = KC_ON;
        n->why[0] = '\0';
        log_notice(&app->log, "keycheck", "Meta's identity key check is on for number %s", n->number);
    } else {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "error"), "message");
        n->state = KC_REFUSED;
        if (cJSON_IsString(msg))
            snprintf(n->why, sizeof n->why, "HTTP %d: %.250s", rep->status, msg->valuestring);
        else if (rep->status)
            snprintf(n->why, sizeof n->why, "HTTP %d: %.250s", rep->status, rep->body);
        else
            snprintf(n->why, sizeof n->why, "no answer: %.250s", rep->error ? rep->error : "?");
        log_error(&app->log, "keycheck", "could not turn Meta's identity key check on for number %s: %s "
                  "(waguard's own gate still refuses unacknowledged changes; trying again in %d s)",
                  n->number, n->why, RETRY_S);
        struct timeval tv = { RETRY_S, 0 };
        if (k->retry)
            evtimer_add(k->retry, &tv);
    }
    cJSON_Delete(o);
}

void keycheck_run(struct app *app)
{
    struct keycheck *k = app->keycheck;
    if (!k)
        return;
    k->generation++;
    k->count = 0;
    const struct config *cfg = app->cfg;
    if (!cfg->identity_check)
        return;
    char numbers[KEYCHECK_MAX][BUSINESS_NUMBER_MAX];
    int count = business_numbers(cfg, numbers, KEYCHECK_MAX);
    for (int i = 0; i < count; i++) {
        struct number_check *n = &k->n[k->count];
        memset(n, 0, sizeof *n);
        memcpy(n->number, numbers[i], sizeof n->number);
        n->generation = k->generation;
        struct call *c = calloc(1, sizeof *c);
        if (!c)
            break;
        *c = (struct call){ .app = app, .index = k->count, .generation = k->generation };
        k->count++;
        char path[160];
        snprintf(path, sizeof path, "/%s/%s/settings", cfg->graph_version, n->number);
        static const char body[] = "{\"user_identity_change\":{\"enable_identity_key_check\":true}}";
        if (upstream_request(app, EVHTTP_REQ_POST, path, body, sizeof body - 1, on_settings, c) != 0) {
            free(c);
            n->state = KC_REFUSED;
            snprintf(n->why, sizeof n->why, "out of memory");
        }
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    keycheck_run(arg);
}

int keycheck_new(struct app *app, char *err, size_t errlen)
{
    struct keycheck *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->keycheck = k;
    k->retry = evtimer_new(app->base, on_retry, app);
    if (!k->retry) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    keycheck_run(app);
    return 0;
}

void keycheck_free(struct app *app)
{
    struct keycheck *k = app->keycheck;
    if (!k)
        return;
    if (k->retry)
        event_free(k->retry);
    free(k);
    app->keycheck = NULL;
}

static const char *state_name(const struct number_check *n)
{
    return n->state == KC_ON ? "on" : n->state == KC_PENDING ? "pending" : "refused";
}

void keycheck_add_status(const struct app *app, cJSON *answer)
{
    const struct keycheck *k = app->keycheck;
    if (!k || !app->cfg->identity_check)
        return;
    cJSON *o = cJSON_AddObjectToObject(answer, "identity_check");
    for (int i = 0; i < k->count; i++) {
        char v[340];
        if (k->n[i].state == KC_REFUSED)
            snprintf(v, sizeof v, "refused: %s", k->n[i].why);
        else
            snprintf(v, sizeof v, "%s", state_name(&k->n[i]));
        cJSON_AddStringToObject(o, k->n[i].number, v);
    }
}

void keycheck_metrics(const struct app *app, struct evbuffer *out)
{
    const struct keycheck *k = app->keycheck;
    if (!k || !app->cfg->identity_check)
        return;
    evbuffer_add_printf(out, "# HELP waguard_identity_check Meta's identity key check per number: "
                        "1 for the state it is in.\n# TYPE waguard_identity_check gauge\n");
    static const char *const states[] = { "pending", "on", "refused" };
    for (int i = 0; i < k->count; i++)
        for (int s = 0; s < 3; s++)
            evbuffer_add_printf(out, "waguard_identity_check{phone_number_id=\"%s\",state=\"%s\"} %d\n",
                                k->n[i].number, states[s], (int)k->n[i].state == s ? 1 : 0);
}
