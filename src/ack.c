/* ack — see include/ack.h
 * Reads top to bottom: claim → PUT → (reconcile) → write the outcome. */
#include "ack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "envelope.h"
#include "metrics.h"
#include "ops.h"
#include "recipient.h"
#include "schema.h"
#include "store.h"
#include "upstream.h"
#include "wtime.h"

#define POLL_MS 500

struct ack {
    struct event *poll;          /* periodic claim */
    struct event *kick;          /* claim now */
    struct event *wake;          /* claim when the soonest retry is due */
    bool claiming;               /* a claim is in flight */
    bool again;                  /* kicked while claiming */
    bool stopped;
    long long in_flight;
    unsigned rng;                /* xorshift state for jitter */
};

enum {
#define ACK_JOB_(n) JOB_##n,
    SCHEMA_CLAIM_JOB(ACK_JOB_)
#undef ACK_JOB_
    JOB_N
};

struct job {
    struct app *app;
    char wa_id[RECIPIENT_MAX];
    char hash[OPS_HASH_MAX + 1]; /* '' when not known: asked of the WABA client first */
    long long ts_ms;
    long long attempts;
    char who[64];
    char lease[32];              /* the lease it was claimed with: fences the outcome */
    long long claimed_ms;        /* monotonic: when the lease was taken */
    char answer[512];
};

static unsigned next_random(struct ack *a)
{
    unsigned x = a->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return a->rng = x ? x : 2463534242u;
}

long long ack_backoff_ms(long long base_ms, long long max_ms, long long attempts, unsigned r)
{
    long long d = base_ms;
    for (long long i = 1; i < attempts && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    long long half = d / 2;
    return half + (half > 0 ? (long long)(r % (unsigned long long)(half + 1)) : 0);
}

/* ---- writing the outcome ---------------------------------------------- */

static void job_done(struct app *app, redisReply *reply, void *arg)
{
    struct job *j = arg;
    if (!reply || reply->type != REDIS_REPLY_INTEGER)
        log_warn(&app->log, "ack", "could not record the outcome for %s (%s); the lease will run out "
                 "and the work be retried", j->wa_id, reply && reply->str ? reply->str : store_status(app));
    else if (reply->integer == 0)
        log_info(&app->log, "ack", "%s: hash %s was replaced by a newer one meanwhile", j->wa_id, j->hash);
    app->ack->in_flight--;
    free(j);
    ack_kick(app);
}

static void record(struct job *j, const char *outcome, long long delay_ms)
{
    struct app *app = j->app;
    char delay[32];
    snprintf(delay, sizeof delay, "%lld", delay_ms);
    const char *argv[] = { j->wa_id, j->hash, outcome, j->who, j->answer, delay, j->lease,
                           app->cfg->ack == ACK_AUTO ? "auto" : "manual", app->cfg->api == API_CLOUD ? "cloud" : "onprem" };
    if (store_call(app, STORE_OUTCOME, 9, argv, NULL, job_done, j) != 0) {
        app->ack->in_flight--;
        free(j);                 /* out of memory: the lease runs out and the work is claimed again */
    }
}

static void retry(struct job *j)
{
    struct app *app = j->app;
    long long d = ack_backoff_ms(app->cfg->retry_base_ms, app->cfg->retry_max_s * 1000, j->attempts,
                                 next_random(app->ack));
    app->metrics->ack_attempts[ACK_RETRY]++;
    log_warn(&app->log, "ack", "%s: %s; attempt %lld, next in %lld ms", j->wa_id, j->answer, j->attempts, d);
    record(j, "retry", d);
    /* A retry sooner than the next poll gets a wake-up of its own. */
    struct ack *a = app->ack;
    if (d < POLL_MS && !a->stopped && !evtimer_pending(a->wake, NULL)) {
        struct timeval tv = { 0, (suseconds_t)(d + 1) * 1000 };
        evtimer_add(a->wake, &tv);
    }
}

static void fail(struct job *j)
{
    j->app->metrics->ack_attempts[ACK_FAILED]++;
    log_error(&j->app->log, "ack", "%s: acknowledgement of %s failed for good: %s "
              "(see GET /v1/identities/%s; POST …/ack to try again)", j->wa_id, j->hash, j->answer, j->wa_id);
    record(j, "failed", 0);
}

static void describe(struct job *j, const struct upstream_reply *rep, const char *what)
{
    if (rep->status)
        snprintf(j->answer, sizeof j->answer, "%s answered HTTP %d: %.300s", what, rep->status, rep->body);
    else
        snprintf(j->answer, sizeof j->answer, "%s got no answer: %s", what, rep->error ? rep->error : "?");
}

static bool transient(int status)
{
    return status == 0 || status >= 500 || status == 429 || status == 408 || status == 401 || status == 403;
}

/* ---- reconcile after a 4xx -------------------------------------------- */

/* The WABA client's identity was recorded: what it changed is for the outcome to find (a
 * newer hash, or hash_unknown resolved, supersedes this job and is queued at once; else
 * the job is tried again after its backoff). */
static void on_reconciled(struct app *app, redisReply *reply, void *arg)
{
    struct job *j = arg;
    (void)app;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        snprintf(j->answer, sizeof j->answer, "could not record the WABA client's identity");
    retry(j);
}

static void on_identity(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct job *j = arg;
    cJSON *o = rep->status ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    bool ok = envelope_ok(rep->status, o);
    if (!ok) {
        cJSON_Delete(o);
        char put_answer[512];
        snprintf(put_answer, sizeof put_answer, "%s", j->answer);
        describe(j, rep, "GET identity");
        if (transient(rep->status)) {
            retry(j);
            return;
        }
        snprintf(j->answer, sizeof j->answer, "%.250s; %.250s", put_answer, rep->status == 404 ?
                 "the WABA client knows no identity for this user" : "GET identity failed too");
        fail(j);
        return;
    }
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "contacts");
    if (cJSON_IsArray(c))
        c = cJSON_GetArrayItem(c, 0);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "hash");
    bool acked = ops_acknowledged(cJSON_GetObjectItemCaseSensitive(c, "acknowledged"));
    if (!cJSON_IsString(h) || !ops_hash_valid(h->valuestring)) {
        cJSON_Delete(o);
        snprintf(j->answer + strlen(j->answer), sizeof j->answer - strlen(j->answer),
                 "; GET identity answered without a usable contacts.hash");
        fail(j);
        return;
    }
    long long their_ts;
    if (wtime_parse(cJSON_GetObjectItemCaseSensitive(c, "created_timestamp"), &their_ts) != 0)
        their_ts = 0;
    if (j->hash[0] && strcmp(h->valuestring, j->hash) == 0 && acked) {
        cJSON_Delete(o);
        app->metrics->ack_attempts[ACK_RECONCILED]++;
        snprintf(j->answer, sizeof j->answer, "the WABA client already shows this hash acknowledged");
        log_info(&app->log, "ack", "%s: %s", j->wa_id, j->answer);
        record(j, "ok", 0);
        return;
    }
    if (!j->hash[0] || (strcmp(h->valuestring, j->hash) != 0 && their_ts >= j->ts_ms)) {
        /* The hash was not known, or the WABA client knows a newer identity: record it like
         * a notification (src/lua/identity.lua decides what it changes). */
        log_notice(&app->log, "ack", "%s: the WABA client's identity is %s (%s); recording it", j->wa_id,
                   h->valuestring, j->hash[0] ? "newer than ours" : "the hash was not known");
        app->metrics->ack_attempts[ACK_RECONCILED]++;
        struct ops ops;
        ops_init(&ops);
        ops_identity(&ops, (struct ops_user){ j->wa_id, NULL, NULL }, h->valuestring, their_ts, OPS_RECONCILE,
                     acked, NULL, false);
        cJSON_Delete(o);
        int rc = store_apply(app, &ops, true, on_reconciled, j);
        ops_free(&ops);
        if (rc != 0)
            on_reconciled(app, NULL, j);
        return;
    }
    snprintf(j->answer + strlen(j->answer), sizeof j->answer - strlen(j->answer),
             "; the WABA client shows hash %.60s (%s)", h->valuestring, acked ? "acknowledged" : "not acknowledged");
    cJSON_Delete(o);
    fail(j);
}

/* ---- the lease ----------------------------------------------------------- */

/* A call to the WABA client may start only while the lease still covers its whole
 * time (timeout_ms, queue included, plus a margin for recording the outcome); else the
 * job is abandoned and another claim takes it up when the lease runs out, so that two
 * instances never both wait on a call for one user. */
static bool lease_allows(struct app *app, struct job *j, const char *what)
{
    long long left = app->cfg->lease_s * 1000 - (app_mono_ms() - j->claimed_ms);
    if (left > app->cfg->timeout_ms + app->cfg->timeout_ms / 2)
        return true;
    log_warn(&app->log, "ack", "%s: %lld ms left of the lease, too little for %s (timeout %ld ms); "
             "leaving it to the next claim", j->wa_id, left, what, app->cfg->timeout_ms);
    app->ack->in_flight--;
    free(j);
    return false;
}

/* ---- PUT ----------------------------------------------------------------- */

/* GET the WABA client's identity for the user: after a 4xx to the PUT, or first when the
 * hash is not known (WhatsApp refused a send, 480). */
static void ask_identity(struct app *app, struct job *j)
{
    if (!lease_allows(app, j, "the identity GET"))
        return;
    char path[200];
    snprintf(path, sizeof path, "/v1/contacts/%s/identity", j->wa_id);
    if (upstream_request(app, EVHTTP_REQ_GET, path, NULL, 0, on_identity, j) != 0)
        retry(j);
}

static void on_put(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct job *j = arg;
    describe(j, rep, "PUT identity");
    cJSON *o = rep->status ? cJSON_ParseWithLength(rep->body, rep->len) : NULL;
    bool ok = envelope_ok(rep->status, o);
    cJSON_Delete(o);
    /* A 2xx that carries errors[] acknowledged nothing: it is a refusal like a 4xx. */
    if (ok) {
        app->metrics->ack_attempts[ACK_OK]++;
        log_info(&app->log, "ack", "%s: acknowledged hash %s (attempt %lld)", j->wa_id, j->hash, j->attempts);
        record(j, "ok", 0);
        return;
    }
    if (rep->status / 100 != 2 && transient(rep->status)) {
        retry(j);
        return;
    }
    ask_identity(app, j);
}

static void start(struct app *app, struct job *j)
{
    app->ack->in_flight++;
    if (app->cfg->api == API_CLOUD) {
        /* The Cloud API has no acknowledgement call: the hash is pinned on sends.  (A
         * record whose new hash is not known is never claimed on the Cloud API.) */
        snprintf(j->answer, sizeof j->answer, "recorded locally: the Cloud API has no acknowledgement call");
        app->metrics->ack_attempts[ACK_OK]++;
        record(j, "ok", 0);
        return;
    }
    if (!j->hash[0]) {
        snprintf(j->answer, sizeof j->answer, "WhatsApp refused a send for an identity change");
        ask_identity(app, j);
        return;
    }
    if (!lease_allows(app, j, "the PUT"))
        return;
    char path[200], body[400];
    snprintf(path, sizeof path, "/v1/contacts/%s/identity", j->wa_id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "hash", j->hash);
    if (!cJSON_PrintPreallocated(o, body, sizeof body, 0))
        body[0] = '\0';
    cJSON_Delete(o);
    if (upstream_request(app, EVHTTP_REQ_PUT, path, body, strlen(body), on_put, j) != 0) {
        snprintf(j->answer, sizeof j->answer, "out of memory");
        retry(j);
    }
}

/* ---- claiming ------------------------------------------------------------ */

static void claim(struct app *app);

static void on_claimed(struct app *app, redisReply *reply, void *arg)
{
    struct ack *a = app->ack;
    (void)arg;
    a->claiming = false;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    size_t n = reply->elements / JOB_N;
    for (size_t i = 0; i < n; i++) {
        redisReply **e = reply->element + i * JOB_N;
        if (!store_str(e[JOB_W]) || e[JOB_HASH]->type != REDIS_REPLY_STRING || !store_str(e[JOB_LEASE]) ||
            e[JOB_HASH]->len > OPS_HASH_MAX || e[JOB_W]->len >= RECIPIENT_MAX)
            continue;           /* not what claim returns: skip, the lease runs out */
        struct job *j = calloc(1, sizeof *j);
        if (!j)
            break;
        j->app = app;
        snprintf(j->wa_id, sizeof j->wa_id, "%s", e[JOB_W]->str);
        snprintf(j->hash, sizeof j->hash, "%s", e[JOB_HASH]->str);
        j->attempts = store_int(e[JOB_ATTEMPTS], 1);
        j->ts_ms = store_int(e[JOB_TS], 0);
        snprintf(j->who, sizeof j->who, "%s", store_str(e[JOB_WHO]) ? e[JOB_WHO]->str : "auto");
        snprintf(j->lease, sizeof j->lease, "%s", e[JOB_LEASE]->str);
        j->claimed_ms = app_mono_ms();
        start(app, j);
    }
    if (a->again || (long long)n > 0) {
        a->again = false;
        claim(app);
    }
}

static void claim(struct app *app)
{
    struct ack *a = app->ack;
    if (a->stopped || !store_ready(app))
        return;
    if (a->claiming) {
        a->again = true;
        return;
    }
    long long room = app->cfg->max_in_flight - a->in_flight;
    if (room <= 0)
        return;
    char lease[32], max[32];
    snprintf(lease, sizeof lease, "%ld", app->cfg->lease_s * 1000);
    snprintf(max, sizeof max, "%lld", room);
    const char *argv[] = { lease, max, app->cfg->api == API_CLOUD ? "cloud" : "onprem" };
    if (store_call(app, STORE_CLAIM, 3, argv, NULL, on_claimed, NULL) == 0)
        a->claiming = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    claim(arg);
}

void ack_kick(struct app *app)
{
    if (app->ack && !app->ack->stopped)
        event_active(app->ack->kick, EV_TIMEOUT, 1);
}

int ack_new(struct app *app, char *err, size_t errlen)
{
    struct ack *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->ack = a;
    a->rng = (unsigned)(app_wall_ms() ^ ((long long)getpid() << 16)) | 1u;
    a->poll = event_new(app->base, -1, EV_PERSIST, on_timer, app);
    a->kick = event_new(app->base, -1, 0, on_timer, app);
    a->wake = evtimer_new(app->base, on_timer, app);
    if (!a->poll || !a->kick || !a->wake) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct timeval tv = { 0, POLL_MS * 1000 };
    event_add(a->poll, &tv);
    store_on_due(app, ack_kick);
    return 0;
}

void ack_stop(struct app *app)
{
    if (!app->ack)
        return;
    app->ack->stopped = true;
    event_del(app->ack->poll);
    event_del(app->ack->wake);
}

long long ack_in_flight(const struct app *app)
{
    return app->ack ? app->ack->in_flight : 0;
}

void ack_free(struct app *app)
{
    struct ack *a = app->ack;
    if (!a)
        return;
    if (a->poll)
        event_free(a->poll);
    if (a->kick)
        event_free(a->kick);
    if (a->wake)
        event_free(a->wake);
    free(a);
    app->ack = NULL;
}
