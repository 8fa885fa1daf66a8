/* sentinel — see include/sentinel.h
 *
 * Two kinds of connection, each a hiredis async context of its own:
 *   the query: made for one question (SENTINEL get-master-addr-by-name), closed after
 *     the answer; a sentinel that refuses, does not know the service or does not answer
 *     within [redis] timeout_ms is skipped for the next one;
 *   the watch: SUBSCRIBE +switch-master, kept open; when it drops it is made again to
 *     the next sentinel a second later.
 * hiredis calls the reply callback with NULL for every command still waiting when a
 * context goes away (a failed connect included); a context is compared with the one
 * we hold, so that a callback of a context we gave up is ignored. */
#include "sentinel.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

struct sentinel {
    struct app *app;
    int n;
    char host[CONFIG_MAX_SENTINELS][256];
    int port[CONFIG_MAX_SENTINELS];
    char name[256];
    char status[320];
    /* the query */
    redisAsyncContext *q;        /* NULL when no question is under way */
    int qi;                      /* the sentinel asked (the next one to ask when idle) */
    int tried;                   /* sentinels tried in this round */
    sentinel_cb *done;
    struct event *qtimer;        /* the answer's deadline */
    struct event *qnext;         /* deferred: ask the next sentinel, or report */
    bool found;
    char found_host[256];
    int found_port;
    /* the watch */
    redisAsyncContext *sub;      /* NULL while not subscribed */
    int si;
    sentinel_cb *moved;
    struct event *subtimer;      /* subscribe again */
};

static void set_status(struct sentinel *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_status(struct sentinel *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->status, sizeof s->status, fmt, ap);
    va_end(ap);
}

static redisAsyncContext *open_ctx(struct sentinel *s, int i, redisDisconnectCallback *on_gone)
{
    redisAsyncContext *ac = redisAsyncConnect(s->host[i], s->port[i]);
    if (!ac || ac->err) {
        set_status(s, "cannot connect to sentinel %s:%d: %s", s->host[i], s->port[i],
                   ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisLibeventAttach(ac, s->app->base);
    redisAsyncSetDisconnectCallback(ac, on_gone);
    return ac;
}

/* ---- the query --------------------------------------------------------- */

static void q_gone(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;
    (void)status;
    if (s->q == ac)
        s->q = NULL;
}

/* The answer of sentinel qi, or NULL: report it, or move on to the next sentinel. */
static void q_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct sentinel *s = priv;
    redisReply *reply = r;
    if (s->q != ac)
        return;                  /* a query we gave up (timed out) */
    s->q = NULL;
    event_del(s->qtimer);
    const char *h = s->host[s->qi];
    int p = s->port[s->qi];
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[0]->len < sizeof s->found_host && atoi(reply->element[1]->str) > 0) {
        s->found = true;
        memcpy(s->found_host, reply->element[0]->str, reply->element[0]->len + 1);
        s->found_port = atoi(reply->element[1]->str);
    } else if (!reply) {
        set_status(s, "sentinel %s:%d did not answer: %s", h, p, ac->errstr[0] ? ac->errstr : "connection lost");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        set_status(s, "sentinel %s:%d refused: %s", h, p, reply->str);
    } else {
        set_status(s, "sentinel %s:%d does not know the primary '%s' (check [redis] master_name)", h, p, s->name);
    }
    if (reply)
        redisAsyncDisconnect(ac);        /* after this callback */
    if (!s->found) {
        s->tried++;
        s->qi = (s->qi + 1) % s->n;
    }
    event_active(s->qnext, EV_TIMEOUT, 1);
}

static void q_start(struct sentinel *s)
{
    while (s->tried < s->n) {
        int i = s->qi;
        redisAsyncContext *ac = open_ctx(s, i, q_gone);
        if (ac && redisAsyncCommand(ac, q_on_reply, s, "SENTINEL get-master-addr-by-name %s", s->name) == REDIS_OK) {
            s->q = ac;
            long long ms = s->app->cfg->redis_timeout_ms;
            struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
            event_add(s->qtimer, &tv);
            return;
        }
        if (ac)
            redisAsyncFree(ac);
        s->tried++;
        s->qi = (s->qi + 1) % s->n;
    }
    /* Every sentinel tried: report, later. */
    event_active(s->qnext, EV_TIMEOUT, 1);
}

static void q_on_next(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;
    (void)fd;
    (void)what;
    if (s->q)
        return;
    if (!s->found && s->tried < s->n) {
        q_start(s);
        return;
    }
    sentinel_cb *done = s->done;
    s->done = NULL;
    if (s->found) {
        s->found = false;
        if (done)
            done(s->app, s->found_host, s->found_port);
    } else if (done) {
        done(s->app, NULL, 0);
    }
}

static void q_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;
    (void)fd;
    (void)what;
    redisAsyncContext *ac = s->q;
    if (!ac)
        return;
    set_status(s, "sentinel %s:%d did not answer within %ld ms", s->host[s->qi], s->port[s->qi],
               s->app->cfg->redis_timeout_ms);
    s->q = NULL;                 /* its callbacks, called by the free, are ignored */
    redisAsyncFree(ac);
    s->tried++;
    s->qi = (s->qi + 1) % s->n;
    event_active(s->qnext, EV_TIMEOUT, 1);
}

void sentinel_ask(struct sentinel *s, sentinel_cb *done)
{
    s->done = done;
    if (s->q || event_pending(s->qnext, EV_TIMEOUT, NULL))
        return;                  /* under way */
    s->tried = 0;
    s->found = false;
    q_start(s);
}

/* ---- the watch --------------------------------------------------------- */

static void sub_again(struct sentinel *s)
{
    s->sub = NULL;
    s->si = (s->si + 1) % s->n;
    struct timeval tv = { 1, 0 };
    event_add(s->subtimer, &tv);
}

static void sub_gone(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;
    (void)status;
    if (s->sub == ac && !s->app->stopping) {
        log_warn(&s->app->log, "sentinel", "lost the +switch-master subscription to %s:%d; subscribing again",
                 s->host[s->si], s->port[s->si]);
        sub_again(s);
    }
}

/* "+switch-master" messages: "<name> <old ip> <old port> <new ip> <new port>". */
static void sub_on_message(redisAsyncContext *ac, void *r, void *priv)
{
    struct sentinel *s = priv;
    redisReply *reply = r;
    if (s->sub != ac)
        return;
    if (!reply) {
        sub_again(s);            /* the connection failed or went */
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "subscribe") == 0) {
        log_info(&s->app->log, "sentinel", "watching +switch-master on sentinel %s:%d",
                 s->host[s->si], s->port[s->si]);
        return;
    }
    if (strcmp(reply->element[0]->str, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    char name[256], oldh[256], newh[256];
    int oldp, newp;
    if (sscanf(reply->element[2]->str, "%255s %255s %d %255s %d", name, oldh, &oldp, newh, &newp) != 5 ||
        strcmp(name, s->name) != 0)
        return;
    log_notice(&s->app->log, "sentinel", "the sentinels moved the primary '%s' from %s:%d to %s:%d",
               name, oldh, oldp, newh, newp);
    if (s->moved)
        s->moved(s->app, newh, newp);
}

static void sub_start(struct sentinel *s)
{
    redisAsyncContext *ac = open_ctx(s, s->si, sub_gone);
    if (!ac || redisAsyncCommand(ac, sub_on_message, s, "SUBSCRIBE +switch-master") != REDIS_OK) {
        if (ac)
            redisAsyncFree(ac);
        log_warn(&s->app->log, "sentinel", "%s; trying the next sentinel in 1 s", s->status);
        sub_again(s);
        return;
    }
    s->sub = ac;
}

static void sub_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub_start(arg);
}

void sentinel_watch(struct sentinel *s, sentinel_cb *moved)
{
    s->moved = moved;
    if (!s->sub && !event_pending(s->subtimer, EV_TIMEOUT, NULL))
        sub_start(s);
}

/* ---- life -------------------------------------------------------------- */

struct sentinel *sentinel_new(struct app *app, const char *list, const char *name, char *err, size_t errlen)
{
    struct sentinel *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->app = app;
    snprintf(s->name, sizeof s->name, "%s", name);
    for (const char *p = list; *p && s->n < CONFIG_MAX_SENTINELS;) {
        size_t len = strcspn(p, ",");
        char one[300];
        const char *b = p, *e = p + len;
        while (b < e && *b == ' ')
            b++;
        while (e > b && e[-1] == ' ')
            e--;
        snprintf(one, sizeof one, "%.*s", (int)(e - b), b);
        if (config_split_hostport(one, s->host[s->n], sizeof s->host[0], &s->port[s->n]) != 0) {
            snprintf(err, errlen, "[redis] sentinels: '%s' is not host:port", one);
            free(s);
            return NULL;
        }
        s->n++;
        p += len;
        if (*p == ',')
            p++;
    }
    if (s->n == 0) {
        snprintf(err, errlen, "[redis] sentinels names no sentinel");
        free(s);
        return NULL;
    }
    s->qtimer = evtimer_new(app->base, q_on_timeout, s);
    s->qnext = event_new(app->base, -1, 0, q_on_next, s);
    s->subtimer = evtimer_new(app->base, sub_on_timer, s);
    if (!s->qtimer || !s->qnext || !s->subtimer) {
        snprintf(err, errlen, "out of memory");
        sentinel_free(s);
        return NULL;
    }
    set_status(s, "asking the sentinels for the primary '%s'", s->name);
    return s;
}

void sentinel_free(struct sentinel *s)
{
    if (!s)
        return;
    if (s->q) {
        redisAsyncContext *ac = s->q;
        s->q = NULL;
        redisAsyncFree(ac);
    }
    if (s->sub) {
        redisAsyncContext *ac = s->sub;
        s->sub = NULL;
        redisAsyncFree(ac);
    }
    if (s->qtimer)
        event_free(s->qtimer);
    if (s->qnext)
        event_free(s->qnext);
    if (s->subtimer)
        event_free(s->subtimer);
    free(s);
}

const char *sentinel_status(const struct sentinel *s)
{
    return s->status;
}
