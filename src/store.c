/* store — see include/store.h
 *
 * Connection life: (with Sentinel: ask the sentinels for the primary, sentinel.c) →
 * connect → (AUTH, SELECT, ROLE, SCRIPT LOAD …, PING) → ready.  A refused AUTH or
 * SELECT, or a ROLE that is not master, is not ready: the connection is dropped and
 * made again later, and nothing is written meanwhile (a database that cannot be
 * selected is never replaced by database 0, a replica never stands in for the primary).  A lost connection is freed by hiredis after our disconnect callback; a
 * timer then connects again with a growing delay.  A health timer PINGs an idle
 * connection every second and drops one whose handshake, or whose oldest command, has
 * gone unanswered for [redis] timeout_ms, so a hung Redis answers 503 instead of
 * holding requests forever. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/sha.h>

#include "metrics.h"
#include "reply.h"
#include "resp.h"
#include "sentinel.h"
#include "text.h"

extern const char store_library[];

static const char *const fn_names[STORE_FN_COUNT] = {
#define STORE_NAME_(E, name, writes) [STORE_##E] = #name,
    SCHEMA_FUNCTIONS(STORE_NAME_)
#undef STORE_NAME_
};

struct call;

struct store {
    redisAsyncContext *ac;       /* NULL while disconnected */
    struct sentinel *sentinel;   /* owned; NULL without [redis] sentinels (host, port from url) */
    bool ready;                  /* connected and the handshake answered */
    char host[256];
    int port;                    /* 0: unix socket at host */
    int db;
    char *library;               /* "#!lua name=waguard_<v>" + the library (owned) */
    char fn[STORE_FN_COUNT][64]; /* the functions' names: wg_<v>_<name> */
    struct event *reconnect;
    struct event *health;
    long long backoff_ms;
    long long ping_sent_ms;      /* 0: no PING outstanding */
    long long connect_ms;        /* when this connection was started */
    int pending;                 /* commands sent, not yet answered */
    long long progress_ms;       /* the last answer, or when pending went from 0 to 1 */
    bool given_up;               /* this connection is not used (AUTH, SELECT, ROLE or the
                                    library refused, or dropped for a time-out) and the
                                    status says why */
    char status[256];
    bool ever_connected;
    bool closing;                /* store_free: no reconnecting */
    /* calls that could not be sent, answered NULL from the loop (never inside the call) */
    struct call *unsent, **unsent_tail;
    struct event *unsent_ev;
    /* store_apply's group commit: bodies given in this loop turn, sent as one call */
    struct event *flush;
    struct apply_item *items, **items_tail;
    int nitems;
    size_t nargs, nbytes;
    void (*due)(struct app *app);  /* acknowledgements became due (store_on_due) */
};

enum {
#define STORE_APPLY_(n) APPLY_##n,
    SCHEMA_APPLY_REPLY(STORE_APPLY_)
#undef STORE_APPLY_
    APPLY_N
};

#define APPLY_MAX_BODIES 64
#define APPLY_MAX_BYTES (512 * 1024)

/* One body waiting in the group commit: its operations (a copy: counted and logged once
 * Redis confirmed them) and who wants the answer. */
struct apply_item {
    struct apply_item *next;
    store_cb *cb;
    void *arg;
    const char *policy;          /* "auto" | "manual" */
    struct ops ops;
};

static void flush_batch(struct app *app);
static void on_flush(evutil_socket_t fd, short what, void *arg);
static void drop(struct app *app, const char *why);
static void on_unsent(evutil_socket_t fd, short what, void *arg);

struct call {
    struct app *app;
    store_cb *cb;
    void *arg;
    struct call *next;           /* on the unsent list */
    /* A function call keeps its command as it went on the wire (resp.h), to send it
     * again if Redis lost the library (FUNCTION FLUSH, a failover to a replica that
     * never had it). */
    char *cmd;                   /* owned; NULL: not a function call, or already sent again */
    size_t cmdlen;
    bool lines;                  /* apply's: the reply is a line a body (answer_bodies) */
};

static void call_free(struct call *c)
{
    free(c->cmd);
    free(c);
}

static int parse_url(struct store *st, const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
        const char *q = strstr(path, "?db=");
        size_t n = q ? (size_t)(q - path) : strlen(path);
        if (n == 0 || n >= sizeof st->host) {
            snprintf(err, errlen, "redis url %s: bad socket path", url);
            return -1;
        }
        memcpy(st->host, path, n);
        st->host[n] = '\0';
        st->port = 0;
        st->db = q ? atoi(q + 4) : 0;
        return 0;
    }
    const char *p = url + strlen("redis://");
    const char *slash = strchr(p, '/');
    char hostport[256];
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof hostport) {
        snprintf(err, errlen, "redis url %s: no host", url);
        return -1;
    }
    memcpy(hostport, p, n);
    hostport[n] = '\0';
    if (!strchr(hostport, ':') || hostport[0] == '[') {
        if (config_split_hostport(hostport, st->host, sizeof st->host, &st->port) != 0) {
            memcpy(st->host, hostport, n + 1);
            st->port = 6379;
        }
    } else if (config_split_hostport(hostport, st->host, sizeof st->host, &st->port) != 0) {
        snprintf(err, errlen, "redis url %s: bad host:port", url);
        return -1;
    }
    st->db = slash ? atoi(slash + 1) : 0;
    return 0;
}

static void set_status(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_status(struct store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->status, sizeof st->status, fmt, ap);
    va_end(ap);
}

static void schedule_reconnect(struct app *app)
{
    struct store *st = app->store;
    struct timeval tv = { st->backoff_ms / 1000, (st->backoff_ms % 1000) * 1000 };
    event_add(st->reconnect, &tv);
    st->backoff_ms = st->backoff_ms * 2 > 5000 ? 5000 : st->backoff_ms * 2;
}

static void sent_one(struct store *st)
{
    if (st->pending++ == 0)
        st->progress_ms = app_mono_ms();
}

/* A READONLY answer: the whole reply, or one of its elements, or (apply answers a line
 * a body: lines) a refused body's line. */
static bool says_readonly(const redisReply *r, bool lines)
{
    if (r->type == REDIS_REPLY_ERROR)
        return strstr(r->str, "READONLY") != NULL;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_ERROR && strstr(r->element[i]->str, "READONLY"))
                return true;
    /* apply's lines: counts are digits, so the word can only be in a refused body's line */
    if (lines && r->type == REDIS_REPLY_STRING && r->str)
        return strstr(r->str, "READONLY") != NULL;
    return false;
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct call *c = priv;
    struct app *app = c->app;
    redisReply *reply = r;
    if (reply && app->store->pending > 0) {
        app->store->pending--;
        app->store->progress_ms = app_mono_ms();
    }
    if (reply && reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "Function not found") &&
        c->cmd && app->store->ac) {
        /* Redis lost the library: load it again, and send this call whole once more. */
        log_warn(&app->log, "store", "Redis does not have waguard's functions (flushed, or a failover to a "
                 "server that never had them); loading them again");
        redisAsyncCommand(app->store->ac, NULL, NULL, "FUNCTION LOAD %s", app->store->library);
        char *cmd = c->cmd;
        c->cmd = NULL;
        int rc = redisAsyncFormattedCommand(ac, on_reply, c, cmd, c->cmdlen);
        free(cmd);                       /* hiredis copied it */
        if (rc == REDIS_OK) {
            sent_one(app->store);
            return;
        }
    }
    if (!reply) {
        app->store->ready = false;
        app->metrics->redis_errors++;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        app->metrics->redis_errors++;
        log_warn(&app->log, "store", "Redis answered an error: %s", reply->str);
    }
    if (reply && app->store->ac && app->store->ready && says_readonly(reply, c->lines)) {
        /* We are talking to a replica (a failover happened): connect again (with
         * Sentinel: to the primary the sentinels name now). */
        log_warn(&app->log, "store", "Redis at %s:%d answered READONLY: it is a replica now; connecting again",
                 app->store->host, app->store->port);
        app->store->ready = false;
        redisAsyncDisconnect(app->store->ac);
    }
    if (c->cb)
        c->cb(app, reply, c->arg);
    call_free(c);
}

/* AUTH and SELECT: a refusal makes the whole handshake fail (on_handshake). */
static void on_handshake_step(struct app *app, redisReply *reply, void *arg)
{
    struct store *st = app->store;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        st->given_up = true;
        set_status(st, "Redis refused %s: %s", (const char *)arg, reply ? reply->str : "connection lost");
    }
}

static void on_role(struct app *app, redisReply *reply, void *arg)
{
    struct store *st = app->store;
    (void)arg;
    if (!reply) {
        on_handshake_step(app, reply, "ROLE");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        /* A user without the right to ROLE: only Sentinel needs the answer. */
        if (st->sentinel)
            on_handshake_step(app, reply, "ROLE");
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
               reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "master") != 0) {
        st->given_up = true;
        set_status(st, "Redis at %s:%d is not the primary (ROLE %s)", st->host, st->port,
                   reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                   reply->element[0]->type == REDIS_REPLY_STRING ? reply->element[0]->str : "?");
    }
}

static void on_handshake(struct app *app, redisReply *reply, void *arg)
{
    struct store *st = app->store;
    (void)arg;
    if (st->given_up && reply && reply->type != REDIS_REPLY_ERROR) {
        log_error(&app->log, "store", "%s; not using this connection, connecting again", st->status);
        if (st->ac)
            redisAsyncDisconnect(st->ac);    /* on_disconnect schedules the next try */
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        set_status(st, "Redis refused the handshake: %s", reply ? reply->str : "connection lost");
        log_error(&app->log, "store", "%s; connecting again", st->status);
        if (reply && st->ac)
            redisAsyncDisconnect(st->ac);    /* on_disconnect schedules the next try */
        return;
    }
    st->ready = true;
    st->backoff_ms = 100;
    set_status(st, "ok");
    if (st->ever_connected)
        app->metrics->redis_reconnects++;
    st->ever_connected = true;
    log_notice(&app->log, "store", "connected to Redis at %s%s%d", st->host,
               st->port ? ":" : " db ", st->port ? st->port : st->db);
}

/* FUNCTION LOAD REPLACE: any error is a refusal (no Redis 7, no right to load). */
static void on_library_loaded(struct app *app, redisReply *reply, void *arg)
{
    struct store *st = app->store;
    (void)arg;
    if (!reply || reply->type != REDIS_REPLY_ERROR)
        return;
    st->given_up = true;
    set_status(st, "Redis refused waguard's functions (FUNCTION LOAD; Redis 7.0 or later is needed, and the "
               "right to load functions): %s", reply->str);
}

static int send_argv(struct app *app, store_cb *cb, void *arg, int argc, const char **argv, const size_t *lens)
{
    struct store *st = app->store;
    struct call *c = malloc(sizeof *c);
    if (!c)
        return -1;
    *c = (struct call){ .app = app, .cb = cb, .arg = arg };
    if (redisAsyncCommandArgv(st->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return -1;
    }
    sent_one(st);
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct app *app = ac->data;
    struct store *st = app->store;
    if (status != REDIS_OK) {
        set_status(st, "cannot connect to Redis: %s", ac->errstr);
        log_warn(&app->log, "store", "%s; trying again in %lld ms", st->status, st->backoff_ms);
        st->ac = NULL;          /* hiredis frees it after this callback */
        schedule_reconnect(app);
        return;
    }
    /* Handshake, pipelined: the PING answers last. */
    st->given_up = false;
    if (app->cfg->redis_password) {
        const char *a[] = { "AUTH", app->cfg->redis_password };
        if (send_argv(app, on_handshake_step, "AUTH", 2, a, NULL) != 0)
            return;
    }
    if (st->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", st->db);
        const char *a[] = { "SELECT", db };
        if (send_argv(app, on_handshake_step, "SELECT", 2, a, NULL) != 0)
            return;
    }
    /* The primary, not a replica (the sentinels' answer may be stale, a url may name a
     * replica): a replica is not used. */
    const char *role[] = { "ROLE" };
    if (send_argv(app, on_role, NULL, 1, role, NULL) != 0)
        return;
    /* REPLACE: the library is named after its own SHA-1, so one of that name is this very
     * code; another waguard on the same Redis loaded it first is no error to count or log */
    const char *lib[] = { "FUNCTION", "LOAD", "REPLACE", st->library };
    if (send_argv(app, on_library_loaded, NULL, 4, lib, NULL) != 0)
        return;
    const char *ping[] = { "PING" };
    (void)send_argv(app, on_handshake, NULL, 1, ping, NULL);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct app *app = ac->data;
    struct store *st = app->store;
    st->ac = NULL;
    st->ready = false;
    st->ping_sent_ms = 0;
    st->pending = 0;
    if (!st->given_up)
        set_status(st, "lost the connection to Redis: %s", status == REDIS_OK ? "closed" : ac->errstr);
    if (st->closing)
        return;
    log_warn(&app->log, "store", "%s; reconnecting", st->status);
    schedule_reconnect(app);
}

static void connect_now(struct app *app)
{
    struct store *st = app->store;
    redisAsyncContext *ac = st->port ? redisAsyncConnect(st->host, st->port)
                                     : redisAsyncConnectUnix(st->host);
    if (!ac || ac->err) {
        set_status(st, "cannot connect to Redis: %s", ac ? ac->errstr : "out of memory");
        log_warn(&app->log, "store", "%s", st->status);
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(app);
        return;
    }
    ac->data = app;
    /* replies made in a block or two each, not two allocations an element (reply.h) */
    ac->c.reader->fn = reply_functions();
    redisLibeventAttach(ac, app->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    st->ac = ac;
    st->connect_ms = app_mono_ms();
    st->pending = 0;
    set_status(st, "connecting to Redis");
}

/* The sentinels named the primary (host), or none did. */
static void on_primary_found(struct app *app, const char *host, int port)
{
    struct store *st = app->store;
    if (!st || st->closing || st->ac)
        return;
    if (!host) {
        set_status(st, "no sentinel named the primary: %s", sentinel_status(st->sentinel));
        log_warn(&app->log, "store", "%s; asking again in %lld ms", st->status, st->backoff_ms);
        schedule_reconnect(app);
        return;
    }
    snprintf(st->host, sizeof st->host, "%s", host);
    st->port = port;
    connect_now(app);
}

/* The sentinels moved the primary: leave the old one now (what it has not answered
 * is answered 503) and connect to the new one. */
static void on_primary_moved(struct app *app, const char *host, int port)
{
    struct store *st = app->store;
    if (!st || st->closing)
        return;
    if (st->ac && port == st->port && strcmp(host, st->host) == 0)
        return;                  /* there already (a READONLY answer got us there first) */
    snprintf(st->host, sizeof st->host, "%s", host);
    st->port = port;
    st->backoff_ms = 1;
    if (st->ac) {
        char why[320];
        snprintf(why, sizeof why, "the sentinels moved the primary to %s:%d", host, port);
        drop(app, why);          /* reconnects after backoff_ms */
    } else {
        event_del(st->reconnect);
        schedule_reconnect(app);
    }
}

/* A new connection: to the url's address, or to the primary the sentinels name. */
static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    (void)fd;
    (void)what;
    if (app->store->sentinel) {
        set_status(app->store, "asking the sentinels for the primary '%s'", app->cfg->redis_master_name);
        sentinel_ask(app->store->sentinel, on_primary_found);
    } else {
        connect_now(app);
    }
}

static void on_pong(struct app *app, redisReply *reply, void *arg)
{
    (void)app;
    (void)reply;
    (void)arg;
}

/* Drops the connection (from a timer, never inside a hiredis callback): pending
 * callbacks get NULL, and a new connection is made after the backoff. */
static void drop(struct app *app, const char *why)
{
    struct store *st = app->store;
    redisAsyncContext *ac = st->ac;
    if (!ac)
        return;
    bool connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    log_error(&app->log, "store", "%s; dropping the connection", why);
    st->ready = false;
    set_status(st, "%s", why);
    st->given_up = true;               /* on_disconnect keeps this status */
    redisAsyncFree(ac);                 /* callbacks get NULL; on_disconnect reconnects */
    if (!connected) {
        /* hiredis calls no disconnect callback for a connection that never connected */
        st->ac = NULL;
        st->pending = 0;
        schedule_reconnect(app);
    }
}

static void on_health_timer(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    struct store *st = app->store;
    (void)fd;
    (void)what;
    if (!st->ac)
        return;
    long long now = app_mono_ms(), limit = app->cfg->redis_timeout_ms;
    char why[160];
    if (!st->ready && now - st->connect_ms > limit) {
        snprintf(why, sizeof why, "Redis did not complete the connection and handshake within %lld ms", limit);
        drop(app, why);
        return;
    }
    if (st->pending > 0 && now - st->progress_ms > limit) {
        snprintf(why, sizeof why, "Redis has not answered for %lld ms (%d command(s) waiting)",
                 now - st->progress_ms, st->pending);
        drop(app, why);
        return;
    }
    if (st->ready && st->pending == 0 && now - st->ping_sent_ms >= 1000) {
        const char *ping[] = { "PING" };
        if (send_argv(app, on_pong, NULL, 1, ping, NULL) == 0)
            st->ping_sent_ms = now;
    }
}

int store_new(struct app *app, char *err, size_t errlen)
{
    struct store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (parse_url(st, app->cfg->redis_url, err, errlen) != 0) {
        free(st);
        return -1;
    }
    if (app->cfg->redis_sentinels[0]) {
        /* The url's host and port give way to the sentinels' answer; its db stays. */
        st->sentinel = sentinel_new(app, app->cfg->redis_sentinels, app->cfg->redis_master_name, err, errlen);
        if (!st->sentinel) {
            free(st);
            return -1;
        }
        st->host[0] = '\0';
        st->port = 1;
    }
    /* The library is named after its own SHA-1, so that two versions never clash. */
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)store_library, strlen(store_library), md);
    char v[13];
    for (int i = 0; i < 6; i++)
        snprintf(v + 2 * i, 3, "%02x", md[i]);
    size_t n = strlen(store_library) + 128;
    st->library = malloc(n);
    if (!st->library) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(st->library, n, "#!lua name=waguard_%s\nlocal WG_PREFIX = 'wg_%s_'\n%s", v, v, store_library);
    for (int f = 0; f < STORE_FN_COUNT; f++)
        snprintf(st->fn[f], sizeof st->fn[f], "wg_%s_%s", v, fn_names[f]);
    st->backoff_ms = 100;
    st->items_tail = &st->items;
    st->unsent_tail = &st->unsent;
    app->store = st;
    st->unsent_ev = event_new(app->base, -1, 0, on_unsent, app);
    st->flush = event_new(app->base, -1, 0, on_flush, app);
    st->reconnect = evtimer_new(app->base, on_reconnect_timer, app);
    st->health = event_new(app->base, -1, EV_PERSIST, on_health_timer, app);
    struct timeval tick = { 0, 100 * 1000 };
    event_add(st->health, &tick);
    if (st->sentinel) {
        sentinel_watch(st->sentinel, on_primary_moved);
        on_reconnect_timer(-1, 0, app);
    } else {
        connect_now(app);
    }
    return 0;
}

void store_free(struct app *app)
{
    struct store *st = app->store;
    if (!st)
        return;
    st->closing = true;
    flush_batch(app);            /* not ready any more: every queued body gets NULL */
    if (st->ac) {
        /* hiredis 0.14 cannot unset the disconnect callback: it sees closing. */
        redisAsyncContext *ac = st->ac;
        st->ac = NULL;
        redisAsyncFree(ac);
    }
    on_unsent(-1, 0, app);       /* what could not be sent still hears NULL */
    sentinel_free(st->sentinel);
    if (st->health)
        event_free(st->health);
    event_free(st->reconnect);
    event_free(st->flush);
    event_free(st->unsent_ev);
    free(st->library);
    free(st);
    app->store = NULL;
}

bool store_ready(const struct app *app)
{
    return app->store && app->store->ac && app->store->ready;
}

const char *store_status(const struct app *app)
{
    return app->store ? app->store->status : "not started";
}

/* ---- calls -------------------------------------------------------------------------- */

/* A call that cannot go to Redis is answered NULL from the loop, later. */
static void unsent(struct app *app, struct call *c)
{
    struct store *st = app->store;
    c->next = NULL;
    *st->unsent_tail = c;
    st->unsent_tail = &c->next;
    if (!st->closing)
        event_active(st->unsent_ev, EV_TIMEOUT, 1);
}

static void on_unsent(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    struct store *st = app->store;
    (void)fd;
    (void)what;
    struct call *c = st->unsent;
    st->unsent = NULL;
    st->unsent_tail = &st->unsent;
    while (c) {
        struct call *next = c->next;
        app->metrics->redis_errors++;
        if (c->cb)
            c->cb(app, NULL, c->arg);
        call_free(c);
        c = next;
    }
}

int store_call(struct app *app, enum store_fn fn, int argc, const char **argv, const size_t *argvlen,
               store_cb *cb, void *arg)
{
    if (!app->store || app->store->closing)
        return -1;               /* stopping (store_free): nobody will answer */
    struct store *st = app->store;
    char maxlen[24];
    text_int(maxlen, sizeof maxlen, app->cfg->events_maxlen);
    /* FCALL name 0 prefix maxlen args… */
    const char *fixed[] = { "FCALL", st->fn[fn], "0", app->cfg->key_prefix, maxlen };
    enum { FIXED = sizeof fixed / sizeof fixed[0] };
    size_t fixedlen[FIXED];
    size_t size = resp_count_size(FIXED + (size_t)argc);
    for (size_t i = 0; i < FIXED; i++)
        size += resp_arg_size(fixedlen[i] = strlen(fixed[i]));
    for (int i = 0; i < argc; i++)
        size += resp_arg_size(argvlen ? argvlen[i] : strlen(argv[i]));
    struct call *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    *c = (struct call){ .app = app, .cb = cb, .arg = arg, .lines = fn == STORE_APPLY, .cmdlen = size };
    if (!(c->cmd = malloc(size + 1))) {      /* and the NUL hiredis reads up to (resp.h) */
        free(c);
        return -1;
    }
    char *p = resp_put_count(c->cmd, FIXED + (size_t)argc);
    for (size_t i = 0; i < FIXED; i++)
        p = resp_put_arg(p, fixed[i], fixedlen[i]);
    for (int i = 0; i < argc; i++)
        p = resp_put_arg(p, argv[i], argvlen ? argvlen[i] : strlen(argv[i]));
    resp_put_end(p);
    if (!store_ready(app) || redisAsyncFormattedCommand(st->ac, on_reply, c, c->cmd, c->cmdlen) != REDIS_OK) {
        unsent(app, c);
        return 0;
    }
    sent_one(st);
    return 0;
}

int store_command(struct app *app, store_cb *cb, void *arg, const char *fmt, ...)
{
    if (!app->store || app->store->closing)
        return -1;               /* stopping (store_free): nobody will answer */
    struct store *st = app->store;
    struct call *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    *c = (struct call){ .app = app, .cb = cb, .arg = arg };
    int rc = REDIS_ERR;
    if (store_ready(app)) {
        va_list ap;
        va_start(ap, fmt);
        rc = redisvAsyncCommand(st->ac, on_reply, c, fmt, ap);
        va_end(ap);
    }
    if (rc != REDIS_OK) {
        unsent(app, c);
        return 0;
    }
    sent_one(st);
    return 0;
}

int store_plain(struct app *app, int ncmds, const int *argc, const char *const *const *argv, store_cb *cb, void *arg)
{
    if (!app->store || app->store->closing)
        return -1;               /* stopping (store_free): nobody will answer */
    struct store *st = app->store;
    struct call *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    *c = (struct call){ .app = app, .cb = cb, .arg = arg };
    /* The queued commands answer QUEUED (no callback); EXEC answers them all, or an
     * error (EXECABORT) when one could not be queued; a connection lost in between calls
     * EXEC's callback with NULL. */
    /* MULTI, EXEC and DISCARD go as they are on the wire: nothing to format */
    static const char multi[] = "*1\r\n$5\r\nMULTI\r\n", exec[] = "*1\r\n$4\r\nEXEC\r\n",
                      discard[] = "*1\r\n$7\r\nDISCARD\r\n";
    bool ok = store_ready(app) && redisAsyncFormattedCommand(st->ac, NULL, NULL, multi, sizeof multi - 1) == REDIS_OK;
    for (int i = 0; ok && i < ncmds; i++) {
        char small[1024], *cmd = small;
        size_t n = resp_format(small, sizeof small, (size_t)argc[i], argv[i], NULL);
        if (n >= sizeof small && (!(cmd = malloc(n + 1)) || resp_format(cmd, n + 1, (size_t)argc[i], argv[i], NULL) != n))
            ok = false;
        else
            ok = redisAsyncFormattedCommand(st->ac, NULL, NULL, cmd, n) == REDIS_OK;
        if (cmd != small)
            free(cmd);
    }
    if (!ok || redisAsyncFormattedCommand(st->ac, on_reply, c, exec, sizeof exec - 1) != REDIS_OK) {
        /* a MULTI left open on a live connection would swallow the next commands */
        if (store_ready(app) && st->ac)
            redisAsyncFormattedCommand(st->ac, NULL, NULL, discard, sizeof discard - 1);
        unsent(app, c);
        return 0;
    }
    sent_one(st);
    return 0;
}

/* The commands of one store_pipeline, answered one by one: the caller hears once, at the
 * last, of the first failure or else of the last reply. */
struct pipeline {
    store_cb *cb;
    void *arg;
    int left;                    /* replies still to come */
    bool lost;                   /* one got no answer */
    bool failed;                 /* one was refused: err holds Redis's words */
    char err[256];
};

static void on_piped(struct app *app, redisReply *reply, void *arg)
{
    struct pipeline *pl = arg;
    if (!reply) {
        pl->lost = true;
    } else if (reply->type == REDIS_REPLY_ERROR && !pl->failed) {
        pl->failed = true;
        text_copy(pl->err, sizeof pl->err, reply->str ? reply->str : "ERR");
    }
    if (--pl->left > 0)
        return;
    if (pl->lost) {
        pl->cb(app, NULL, pl->arg);
    } else if (pl->failed) {
        /* the first refusal, in Redis's words */
        redisReply e = { .type = REDIS_REPLY_ERROR, .str = pl->err, .len = strlen(pl->err) };
        pl->cb(app, &e, pl->arg);
    } else {
        pl->cb(app, reply, pl->arg);
    }
    free(pl);
}

int store_pipeline(struct app *app, int ncmds, const int *argc, const char *const *const *argv, store_cb *cb,
                   void *arg)
{
    if (!app->store || app->store->closing)
        return -1;               /* stopping (store_free): nobody will answer */
    struct store *st = app->store;
    if (ncmds < 1)
        return -1;
    struct pipeline *pl = malloc(sizeof *pl);
    struct call *calls[STORE_PIPELINE_MAX];
    int n = 0;
    if (!pl || ncmds > STORE_PIPELINE_MAX)
        goto oom;
    for (; n < ncmds; n++)
        if (!(calls[n] = calloc(1, sizeof *calls[n])))
            goto oom;
    *pl = (struct pipeline){ .cb = cb, .arg = arg, .left = ncmds };
    /* every command is answered once: by Redis, or, when it could not be sent, from the
     * loop (unsent); either way through on_piped */
    for (int i = 0; i < ncmds; i++) {
        *calls[i] = (struct call){ .app = app, .cb = on_piped, .arg = pl };
        char small[1024], *cmd = small;
        size_t len = resp_format(small, sizeof small, (size_t)argc[i], argv[i], NULL);
        bool ok = store_ready(app);
        if (ok && len >= sizeof small && (!(cmd = malloc(len + 1)) ||
                                         resp_format(cmd, len + 1, (size_t)argc[i], argv[i], NULL) != len))
            ok = false;
        ok = ok && redisAsyncFormattedCommand(st->ac, on_reply, calls[i], cmd, len) == REDIS_OK;
        if (cmd != small)
            free(cmd);
        if (ok)
            sent_one(st);
        else
            unsent(app, calls[i]);
    }
    return 0;
oom:
    while (n > 0)
        free(calls[--n]);
    free(pl);
    return -1;
}

const char *store_failure(const struct app *app, const redisReply *reply, size_t min)
{
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= min)
        return NULL;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        return reply->str;
    if (reply)
        return "Redis answered something waguard's functions never answer";
    return store_status(app)[0] && strcmp(store_status(app), "ok") != 0 ? store_status(app)
                                                                      : "Redis did not answer";
}

long long store_int(const redisReply *e, long long def)
{
    if (!e)
        return def;
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    if (e->type == REDIS_REPLY_STRING && e->len > 0 && e->len < 20) {
        char *end;
        long long v = strtoll(e->str, &end, 10);
        if (*end == '\0')
            return v;
    }
    return def;
}

const char *store_str(const redisReply *e)
{
    return e && e->type == REDIS_REPLY_STRING && e->len > 0 ? e->str : NULL;
}

/* ---- group commit of apply ------------------------------------------------------------ */

/* What a confirmed body recorded: counted, and the operations an operator wants to see
 * logged. */
static void account(struct app *app, const struct apply_item *it, const redisReply *r)
{
    struct metrics *m = app->metrics;
    for (int k = 0; k < OP_KIND_COUNT; k++)
        m->items[k] += (unsigned long long)it->ops.of_kind[k];
    enum op_kind kind;
    const char *f[OPS_FIELDS_MAX];
    for (size_t at = ops_next(&it->ops, 0, &kind, f); at; at = ops_next(&it->ops, at, &kind, f)) {
        if (kind == OP_IDENTITY)
            log_info(&app->log, "store", "identity observed for %s: hash %s (%s)", f[0], f[2], f[4]);
        else if (kind == OP_DEAD)
            log_warn(&app->log, "store", "dead letter: %s", f[0]);
        else if (kind == OP_UNUSABLE)
            log_warn(&app->log, "store", "identity change for %s could not be used (%s): the gate is closed "
                     "until the new hash is known", f[0], f[2]);
        else if (kind == OP_REFUSED)
            log_warn(&app->log, "store", "WhatsApp refused a send to %s for identity (%s)", f[0][0] ? f[0] : f[2], f[3]);
    }
    long long dup = store_int(r->element[APPLY_DUPLICATES], 0), late = store_int(r->element[APPLY_LATE], 0),
              future = store_int(r->element[APPLY_FUTURE], 0), unplaced = store_int(r->element[APPLY_UNPLACED], 0);
    m->duplicates += (unsigned long long)dup;
    m->late += (unsigned long long)late;
    m->future += (unsigned long long)future;
    m->refusals_unplaced += (unsigned long long)unplaced;
    if (future)
        log_warn(&app->log, "store", "%lld identity time(s) later than Redis's clock: recorded at the time "
                 "received instead (check the WABA host's clock)", future);
    if (late)
        log_notice(&app->log, "store", "%lld identity notification(s) older than the recorded one ignored", late);
    if (unplaced)
        log_warn(&app->log, "store", "%lld refusal(s) for identity (480, 137000) named no user waguard could find "
                 "(no recipient, and a message id it did not send): counted in "
                 "waguard_identity_refusals_unplaced_total", unplaced);
    if (store_int(r->element[APPLY_QUEUED], 0) > 0 && app->store->due)
        app->store->due(app);
}

static void item_free(struct apply_item *it)
{
    ops_free(&it->ops);
    free(it);
}

/* One body's line of apply's answer (apply.lua: its APPLY_N counts separated by spaces,
 * or '!' and the error Redis gave it), at line[0, len), as the reply the body's callback
 * reads: an array of APPLY_N integers in row (its elements in vals), or an error (its
 * text copied to err).  Returns the reply, or NULL when the line is not what apply
 * answers. */
static redisReply *body_reply(const char *line, size_t len, redisReply *row, redisReply *vals,
                              redisReply **elems, char *err, size_t errlen)
{
    if (len > 0 && line[0] == '!') {
        size_t m = len - 1 < errlen - 1 ? len - 1 : errlen - 1;
        memcpy(err, line + 1, m);
        err[m] = '\0';
        *row = (redisReply){ .type = REDIS_REPLY_ERROR, .str = err, .len = m };
        return row;
    }
    const char *p = line, *end = line + len;
    for (int j = 0; j < APPLY_N; j++) {
        if (j > 0 && (p >= end || *p++ != ' '))
            return NULL;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        long long v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > 1000000000LL)
                return NULL;
            v = v * 10 + (*p++ - '0');
        }
        vals[j] = (redisReply){ .type = REDIS_REPLY_INTEGER, .integer = v };
        elems[j] = &vals[j];
    }
    if (p != end)
        return NULL;
    *row = (redisReply){ .type = REDIS_REPLY_ARRAY, .elements = APPLY_N, .element = elems };
    return row;
}

/* Answers every body of a sent batch from the reply: its own line, or the error or
 * NULL that the whole call got. */
static void answer_bodies(struct app *app, redisReply *reply, void *arg)
{
    struct apply_item *it = arg;
    bool lines = reply && reply->type == REDIS_REPLY_STRING;
    const char *at = lines ? reply->str : NULL, *end = lines ? reply->str + reply->len : NULL;
    size_t n = 0, nl = lines ? 1 : 0;
    for (struct apply_item *i = it; i; i = i->next)
        n++;
    for (const char *q = at; q && q < end; q++)
        nl += *q == '\n';
    bool split = lines && nl == n;
    while (it) {
        struct apply_item *next = it->next;
        redisReply row, vals[APPLY_N], *elems[APPLY_N], *mine = NULL;
        char err[512];
        if (split) {
            const char *eol = memchr(at, '\n', (size_t)(end - at));
            if (!eol)
                eol = end;
            mine = body_reply(at, (size_t)(eol - at), &row, vals, elems, err, sizeof err);
            at = eol < end ? eol + 1 : end;
        } else if (reply && reply->type == REDIS_REPLY_ERROR) {
            mine = reply;
        }
        if (mine && mine->type == REDIS_REPLY_ARRAY)
            account(app, it, mine);
        it->cb(app, mine, it->arg);
        item_free(it);
        it = next;
    }
}

/* ---- [redis] min_replicas: WAIT after the batch ------------------------- */

/* A batch whose answer waits for WAIT: the reply is copied (hiredis frees its own after
 * the callback) and handed to the bodies once WAIT has answered. */
struct waited {
    struct apply_item *items;    /* owned until answered */
    redisReply *reply;           /* owned copy; NULL while unanswered or when lost */
    bool applied;                /* apply answered */
    bool wait_answered;          /* a WAIT answered before apply (apply was sent again) */
};

static redisReply *reply_dup(const redisReply *r)
{
    redisReply *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->type = r->type;
    c->integer = r->integer;
    if (r->str) {
        c->str = malloc(r->len + 1);
        if (!c->str) {
            free(c);
            return NULL;
        }
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        c->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        c->element = calloc(r->elements, sizeof *c->element);
        if (!c->element) {
            freeReplyObject(c);
            return NULL;
        }
        c->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++)
            if (!(c->element[i] = reply_dup(r->element[i]))) {
                freeReplyObject(c);
                return NULL;
            }
    }
    return c;
}

/* Answers the bodies: apply's reply when replicas >= min_replicas, else a NOREPLICAS
 * error (answered 503: the WABA client sends it again). */
static void waited_finish(struct app *app, struct waited *w, long long replicas)
{
    redisReply *r = w->reply;
    long need = app->cfg->redis_min_replicas;
    if (r && r->type == REDIS_REPLY_STRING && replicas < need) {
        char msg[200];
        snprintf(msg, sizeof msg, "NOREPLICAS the write reached %lld of the %ld replica(s) [redis] min_replicas "
                 "asks for within %ld ms", replicas < 0 ? 0 : replicas, need, app->cfg->redis_timeout_ms / 2);
        app->metrics->redis_errors++;
        log_warn(&app->log, "store", "%s: answering 503", msg + 11);
        redisReply e = { .type = REDIS_REPLY_ERROR, .str = msg, .len = strlen(msg) };
        answer_bodies(app, &e, w->items);
    } else {
        answer_bodies(app, r, w->items);
    }
    freeReplyObject(r);
    free(w);
}

static int send_wait(struct app *app, struct waited *w);

static void on_wait_reply(struct app *app, redisReply *reply, void *arg)
{
    struct waited *w = arg;
    long long n = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    if (!w->applied) {
        w->wait_answered = true;         /* apply was sent again after it: WAIT again */
        return;
    }
    waited_finish(app, w, n);
}

static void on_apply_reply(struct app *app, redisReply *reply, void *arg)
{
    struct waited *w = arg;
    w->applied = true;
    w->reply = reply ? reply_dup(reply) : NULL;
    bool ok = w->reply && w->reply->type == REDIS_REPLY_STRING;     /* apply's lines */
    if (w->wait_answered && ok && send_wait(app, w) != 0) {
        freeReplyObject(w->reply);
        w->reply = NULL;                 /* not confirmed */
        waited_finish(app, w, -1);
    } else if (w->wait_answered && !ok) {
        waited_finish(app, w, -1);
    }
}

/* WAIT min_replicas, half of timeout_ms, so that the health timer never drops a
 * connection for a WAIT that Redis is still allowed to take. */
static int send_wait(struct app *app, struct waited *w)
{
    w->wait_answered = false;
    long ms = app->cfg->redis_timeout_ms / 2;
    return store_command(app, on_wait_reply, w, "WAIT %ld %ld", app->cfg->redis_min_replicas, ms > 0 ? ms : 1);
}

static void flush_batch(struct app *app)
{
    struct store *st = app->store;
    if (!st->nitems)
        return;
    struct apply_item *items = st->items;
    int nb = st->nitems;
    size_t nargs = st->nargs;
    st->items = NULL;
    st->items_tail = &st->items;
    st->nitems = 0;
    st->nargs = st->nbytes = 0;
    /* first_seen, api, the sent-message memory, the bodies: each its policy, its count
     * and its operations */
    size_t argc = 4 + nargs;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    char (*counts)[16] = calloc((size_t)nb, sizeof *counts);
    char nbodies[16], ttl[24];
    int rc = -1;
    if (argv && lens && counts) {
        text_int(nbodies, sizeof nbodies, nb);
        text_int(ttl, sizeof ttl, app->cfg->sent_ttl_s);
        size_t a = 0;
        argv[a++] = app->cfg->first_seen == FIRST_SEEN_TRUST ? "trust" : "hold";
        argv[a++] = app->cfg->api == API_CLOUD ? "cloud" : "onprem";
        argv[a++] = ttl;
        argv[a++] = nbodies;
        int b = 0;
        for (struct apply_item *it = items; it; it = it->next, b++) {
            text_int(counts[b], sizeof counts[b], it->ops.count);
            argv[a++] = it->policy;
            argv[a++] = counts[b];
            for (size_t i = 0; i < it->ops.n; i++)
                argv[a] = ops_arg(&it->ops, i, &lens[a]), a++;
        }
        for (size_t i = 0; i < argc; i++)
            if (!lens[i])
                lens[i] = strlen(argv[i]);
        if (app->cfg->redis_min_replicas > 0) {
            /* WAIT right behind apply on the same connection: Redis answers in order, and
             * one WAIT covers every body of the batch. */
            struct waited *w = calloc(1, sizeof *w);
            if (w) {
                w->items = items;
                rc = store_call(app, STORE_APPLY, (int)argc, argv, lens, on_apply_reply, w);
                if (rc != 0)
                    free(w);
                else if (send_wait(app, w) != 0)
                    w->wait_answered = true;     /* apply's answer then sends it */
            }
        } else {
            rc = store_call(app, STORE_APPLY, (int)argc, argv, lens, answer_bodies, items);
        }
    }
    free(argv);
    free(lens);
    free(counts);
    if (rc != 0) {
        /* out of memory: every body hears NULL, from the loop */
        for (struct apply_item *it = items, *next; it; it = next) {
            next = it->next;
            it->next = NULL;
            struct call *c = calloc(1, sizeof *c);
            if (!c) {
                it->cb(app, NULL, it->arg);      /* the last resort */
                item_free(it);
                continue;
            }
            *c = (struct call){ .app = app, .cb = answer_bodies, .arg = it };
            unsent(app, c);
        }
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_batch(arg);
}

static bool ops_copy(struct ops *dst, const struct ops *src)
{
    *dst = *src;
    dst->buf = malloc(src->cap ? src->cap : 1);
    dst->off = malloc((src->offcap ? src->offcap : 1) * sizeof *dst->off);
    if (!dst->buf || !dst->off) {
        free(dst->buf);
        free(dst->off);
        return false;
    }
    memcpy(dst->buf, src->buf, src->len);
    memcpy(dst->off, src->off, src->n * sizeof *src->off);
    return true;
}

int store_apply(struct app *app, const struct ops *ops, bool force_auto, store_cb *cb, void *arg)
{
    if (!app->store || app->store->closing)
        return -1;               /* stopping (store_free): nobody will answer */
    struct store *st = app->store;
    struct apply_item *it = calloc(1, sizeof *it);
    if (!it)
        return -1;
    it->cb = cb;
    it->arg = arg;
    it->policy = (force_auto || app->cfg->ack == ACK_AUTO) ? "auto" : "manual";
    if (ops->oom || !ops_copy(&it->ops, ops)) {
        /* nothing half-done: the body hears NULL (answered 503) */
        struct call *c = calloc(1, sizeof *c);
        if (!c) {
            free(it);
            return -1;
        }
        ops_init(&it->ops);
        *c = (struct call){ .app = app, .cb = answer_bodies, .arg = it };
        unsent(app, c);
        return 0;
    }
    /* A full batch goes first. */
    if (st->nitems >= APPLY_MAX_BODIES || st->nbytes >= APPLY_MAX_BYTES)
        flush_batch(app);
    *st->items_tail = it;
    st->items_tail = &it->next;
    st->nargs += 2 + ops->n;
    st->nbytes += ops->len;
    if (++st->nitems == 1)
        event_active(st->flush, EV_TIMEOUT, 1);      /* after the rest of this loop turn */
    return 0;
}

void store_on_due(struct app *app, void (*due)(struct app *app))
{
    app->store->due = due;
}
