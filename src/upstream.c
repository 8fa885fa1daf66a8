/* upstream — see include/upstream.h
 *
 * Requests wait in a FIFO; pump() (always run from its own event, never inside a
 * libevent callback) hands them to free connection slots.  A slot whose connection
 * closed or failed is marked dead and replaced at its next use: an evhttp connection
 * cannot safely be freed inside its own callbacks, and a TLS one cannot reconnect. */
#include "upstream.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "metrics.h"
#include "text.h"

#define MAX_RESPONSE_BYTES (16L << 20)

struct gen;

struct slot {
    struct gen *gen;
    struct evhttp_connection *evcon;
    bool busy;
    bool dead;
};

/* The connections of one configuration.  A reload makes a new generation; the old one
 * is retired, its idle connections closed at once and its busy ones when their
 * request finishes (freed from pump(), never inside a connection's own callback). */
struct gen {
    struct gen *next;            /* in the retired list */
    struct slot *slots;
    int nslots;
    int busy;
    SSL_CTX *ssl;
    bool https;
    char host[256];
    int port;
    char hostport[300];          /* the Host header: host:port, an IPv6 host in brackets */
    char base_path[256];
};

/* What a configuration needs, built (and checked) before it replaces the running one. */
struct upstream_prep {
    struct gen *gen;
    char ident[1024];
};

struct ureq {
    TAILQ_ENTRY(ureq) link;     /* in the queue, or in the in-flight list */
    struct app *app;
    enum evhttp_cmd_type method;
    char *path;
    char *body;
    size_t len;
    char content_type[UPSTREAM_CONTENT_TYPE_MAX];     /* of the body; "" application/json */
    upstream_cb *cb;
    void *arg;
    bool is_login;
    bool retried_401;
    const char *error;          /* set by the error callback */
    long long enq_ms;           /* when it was queued: timeout_ms counts from here */
    long long start_ms;
    struct slot *slot;
    char token_used[512];
    char errbuf[256];           /* a TLS error's text, when that was the failure */
};

TAILQ_HEAD(ureq_queue, ureq);

struct upstream {
    struct app *app;
    struct gen *cur;             /* the running configuration's connections */
    struct gen *retired;         /* earlier ones with requests still in flight */
    struct ureq_queue queue;
    int queued;
    struct ureq_queue sent;     /* in flight on a connection */
    struct ureq_queue refused;  /* refused at enqueue: answered from pump() */
    int in_flight;
    struct event *pump_ev;
    struct event *sweep_ev;     /* expires requests that waited too long */
    int login_failures;          /* in a row: logins back off */
    long long login_retry_ms;    /* monotonic: no login before this */
    char login_why[256];
    /* auth = login */
    char *token;
    char *token_ident;           /* url, auth, user and password the token was got with */
    long long token_expires;     /* wall seconds */
    long long token_refresh_at;  /* wall seconds: log in again from here on */
    bool logging_in;
};

/* ---- settings ------------------------------------------------------------ */

static int parse_url(struct gen *up, const char *url, char *err, size_t errlen)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0) {
        up->https = true;
        p = url + 8;
    } else {
        up->https = false;
        p = url + 7;
    }
    const char *slash = strchr(p, '/');
    char hostport[300];
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof hostport) {
        snprintf(err, errlen, "upstream url %s: no host", url);
        return -1;
    }
    memcpy(hostport, p, n);
    hostport[n] = '\0';
    bool has_port = hostport[0] == '[' ? strstr(hostport, "]:") != NULL : strchr(hostport, ':') != NULL;
    if (has_port) {
        if (config_split_hostport(hostport, up->host, sizeof up->host, &up->port) != 0 || up->port == 0) {
            snprintf(err, errlen, "upstream url %s: bad host:port", url);
            return -1;
        }
    } else {
        size_t hl = strlen(hostport);
        if (hostport[0] == '[' && hl > 2) {
            memcpy(up->host, hostport + 1, hl - 2);
            up->host[hl - 2] = '\0';
        } else {
            memcpy(up->host, hostport, hl + 1);
        }
        up->port = up->https ? 443 : 80;
    }
    snprintf(up->hostport, sizeof up->hostport, strchr(up->host, ':') ? "[%s]:%d" : "%s:%d", up->host, up->port);
    snprintf(up->base_path, sizeof up->base_path, "%s", slash ? slash : "");
    size_t bl = strlen(up->base_path);
    if (bl && up->base_path[bl - 1] == '/')
        up->base_path[bl - 1] = '\0';
    return 0;
}

static SSL_CTX *make_ssl_ctx(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = cfg->ca_file && cfg->ca_file[0]
                 ? SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        snprintf(err, errlen, "upstream.ca_file %s: cannot load: %s",
                 cfg->ca_file && cfg->ca_file[0] ? cfg->ca_file : "(system store)", e);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- connections ------------------------------------------------------- */

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct slot *s = arg;
    (void)evcon;
    s->dead = true;
}

static void slot_drop(struct slot *s)
{
    if (s->evcon) {
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
        evhttp_connection_free(s->evcon);
        s->evcon = NULL;
    }
    s->dead = false;
}

static int slot_open(struct app *app, struct slot *s)
{
    const struct gen *up = s->gen;
    if (up->https) {
        SSL *ssl = SSL_new(up->ssl);
        if (!ssl)
            return -1;
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, up->host, &a4) == 1 || inet_pton(AF_INET6, up->host, &a6) == 1) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), up->host);
        } else {
            SSL_set_tlsext_host_name(ssl, up->host);
            SSL_set1_host(ssl, up->host);
        }
        struct bufferevent *bev = bufferevent_openssl_socket_new(
            app->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!bev) {
            SSL_free(ssl);
            return -1;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        s->evcon = evhttp_connection_base_bufferevent_new(app->base, NULL, bev, up->host, (unsigned short)up->port);
    } else {
        s->evcon = evhttp_connection_base_new(app->base, NULL, up->host, (unsigned short)up->port);
    }
    if (!s->evcon)
        return -1;
    evhttp_connection_set_retries(s->evcon, 0);
    evhttp_connection_set_max_body_size(s->evcon, MAX_RESPONSE_BYTES);
    evhttp_connection_set_closecb(s->evcon, on_conn_close, s);
    return 0;
}

/* ---- login ------------------------------------------------------------- */

static long long parse_expiry(const char *s)
{
    /* "YYYY-MM-DD HH:MM:SS+00:00" */
    struct tm tm = { 0 };
    const char *rest = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!rest)
        return -1;
    long long t = (long long)timegm(&tm);
    int sign = 0, hh = 0, mm = 0;
    if ((rest[0] == '+' || rest[0] == '-') && sscanf(rest + 1, "%2d:%2d", &hh, &mm) == 2)
        sign = rest[0] == '+' ? 1 : -1;
    return t - sign * (hh * 3600 + mm * 60);
}

static void pump_soon(struct upstream *up)
{
    event_active(up->pump_ev, EV_TIMEOUT, 1);
}

static bool token_fresh(const struct upstream *up)
{
    return up->token && app_wall_ms() / 1000 < up->token_refresh_at;
}

static void fail_waiting(struct upstream *up, const char *why);
static int enqueue(struct upstream *up, struct ureq *u, bool front);

static void on_login(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct upstream *up = app->upstream;
    (void)arg;
    up->logging_in = false;
    char why[512];
    if (rep->status / 100 == 2) {
        cJSON *o = cJSON_ParseWithLength(rep->body, rep->len);
        const cJSON *u0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "users"), 0);
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(u0, "token");
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(u0, "expires_after");
        if (cJSON_IsString(tok) && tok->valuestring[0]) {
            long long now = app_wall_ms() / 1000;
            long long expires = cJSON_IsString(exp) ? parse_expiry(exp->valuestring) : -1;
            if (expires <= now)
                expires = now + 3600;       /* no usable expiry: renew within the hour */
            long long life = expires - now, margin = life / 10 > 3600 ? 3600 : life / 10;
            free(up->token);
            up->token = strdup(tok->valuestring);
            up->token_expires = expires;
            up->token_refresh_at = expires - margin;
            log_info(&app->log, "upstream", "logged in to the WABA client as %s; token valid until %lld",
                     app->cfg->username, expires);
            up->login_failures = 0;
            up->login_retry_ms = 0;
            cJSON_Delete(o);
            pump_soon(up);
            return;
        }
        cJSON_Delete(o);
        snprintf(why, sizeof why, "login answered %d without users[0].token", rep->status);
    } else if (rep->status) {
        snprintf(why, sizeof why, "login refused with HTTP %d: %.200s", rep->status, rep->body);
    } else {
        snprintf(why, sizeof why, "login got no answer: %s", rep->error ? rep->error : "?");
    }
    up->login_failures++;
    long long backoff = 1000;
    for (int i = 1; i < up->login_failures && backoff < 60000; i++)
        backoff *= 2;
    if (backoff > 60000)
        backoff = 60000;
    up->login_retry_ms = app_mono_ms() + backoff;
    snprintf(up->login_why, sizeof up->login_why, "%.250s", why);
    log_error(&app->log, "upstream", "cannot log in to the WABA client as %s (%d failure(s) in a row; next "
              "try in %lld ms): %s", app->cfg->username, up->login_failures, backoff, why);
    fail_waiting(up, why);
}

static void start_login(struct upstream *up)
{
    struct app *app = up->app;
    struct ureq *u = calloc(1, sizeof *u);
    if (!u)
        return;
    u->app = app;
    u->method = EVHTTP_REQ_POST;
    u->path = strdup("/v1/users/login");
    u->cb = on_login;
    u->is_login = true;
    up->logging_in = true;
    if (enqueue(up, u, true) != 0)
        up->logging_in = false;
}

/* ---- requests ---------------------------------------------------------- */

static void ureq_free(struct ureq *u)
{
    free(u->path);
    free(u->body);
    free(u);
}

static void finish(struct upstream *up, struct ureq *u, const struct upstream_reply *rep)
{
    struct app *app = up->app;
    app->metrics->upstream_requests[rep->status >= 0 && rep->status < 600 ? rep->status : 0]++;
    if (u->start_ms)
        metrics_observe(&app->metrics->upstream_latency, (double)(app_mono_ms() - u->start_ms) / 1000.0);
    u->cb(app, rep, u->arg);
    ureq_free(u);
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    struct ureq *u = arg;
    switch (e) {
    case EVREQ_HTTP_TIMEOUT: u->error = "timed out"; break;
    case EVREQ_HTTP_EOF: u->error = "the connection was closed before an answer"; break;
    case EVREQ_HTTP_INVALID_HEADER: u->error = "invalid answer headers"; break;
    case EVREQ_HTTP_BUFFER_ERROR: u->error = "connection refused or broken"; break;
    case EVREQ_HTTP_REQUEST_CANCEL: u->error = "cancelled"; break;
    case EVREQ_HTTP_DATA_TOO_LONG: u->error = "the answer was too large"; break;
    default: u->error = "failed"; break;
    }
}

/* Why a TLS connection failed, from its bufferevent (libevent takes OpenSSL's error
 * queue for itself).  Returns false when TLS was not the reason. */
static bool tls_error(struct slot *s, char *buf, size_t len)
{
    struct bufferevent *bev = s->evcon ? evhttp_connection_get_bufferevent(s->evcon) : NULL;
    if (!bev)
        return false;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e, last = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0)
        last = e;
    if (vr != X509_V_OK) {
        snprintf(buf, len, "TLS: the WABA client's certificate was refused: %s", X509_verify_cert_error_string(vr));
        return true;
    }
    if (last) {
        char e2[200];
        ERR_error_string_n(last, e2, sizeof e2);
        snprintf(buf, len, "TLS: %s", e2);
        return true;
    }
    return false;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct ureq *u = arg;
    struct upstream *up = u->app->upstream;
    struct slot *s = u->slot;
    s->busy = false;
    s->gen->busy--;
    up->in_flight--;
    TAILQ_REMOVE(&up->sent, u, link);
    struct upstream_reply rep = { .body = "", .len = 0 };
    rep.status = req ? evhttp_request_get_response_code(req) : 0;
    if (rep.status == 0) {
        s->dead = true;       /* a fresh connection next time */
        /* libevent reports a connect that ran out of time without the error callback;
         * its timer runs on the loop's cached clock, so it may fire a little before our
         * own clock says the time is up (a refused connect fails at once instead). */
        long long t = u->app->cfg->timeout_ms, slack = t / 10 > 50 ? t / 10 : 50;
        if (slack > t / 2)
            slack = t / 2;
        if (!u->error && app_mono_ms() - u->enq_ms >= t - slack)
            u->error = "timed out";
        rep.error = u->error ? u->error : "could not connect, or the connection failed";
        if (s->gen->https && tls_error(s, u->errbuf, sizeof u->errbuf))
            rep.error = u->errbuf;
    } else {
        rep.content_type = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        /* A NUL after the body makes it a C string for the callbacks. */
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        rep.len = evbuffer_get_length(in);
        evbuffer_add(in, "", 1);
        rep.body = (const char *)evbuffer_pullup(in, -1);
    }
    pump_soon(up);

    /* A 401 with a token from login: the token is gone; log in again, once. */
    if (rep.status == 401 && u->app->cfg->auth == AUTH_LOGIN && !u->is_login && !u->retried_401) {
        if (up->token && strcmp(up->token, u->token_used) == 0) {
            log_notice(&u->app->log, "upstream", "the WABA client refused the token (401); logging in again");
            free(up->token);
            up->token = NULL;
        }
        u->retried_401 = true;
        u->slot = NULL;
        u->error = NULL;
        if (enqueue(up, u, true) == 0)
            return;
    }
    finish(up, u, &rep);
}

static void add_auth(struct upstream *up, struct ureq *u, struct evkeyvalq *h)
{
    const struct config *cfg = up->app->cfg;
    char buf[1024];
    if (u->is_login) {
        char plain[512];
        unsigned char b64[800];
        int n = snprintf(plain, sizeof plain, "%s:%s", cfg->username, cfg->password ? cfg->password : "");
        if (n < 0 || (size_t)n >= sizeof plain)
            n = 0;
        EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
        snprintf(buf, sizeof buf, "Basic %s", b64);
        evhttp_add_header(h, "Authorization", buf);
        return;
    }
    switch (cfg->auth) {
    case AUTH_NONE:
        break;
    case AUTH_BEARER:
        text_join(buf, sizeof buf, "Bearer ", cfg->upstream_token, (char *)NULL);
        evhttp_add_header(h, "Authorization", buf);
        break;
    case AUTH_LOGIN:
        text_copy(u->token_used, sizeof u->token_used, up->token ? up->token : "");
        text_join(buf, sizeof buf, "Bearer ", u->token_used, (char *)NULL);
        evhttp_add_header(h, "Authorization", buf);
        break;
    case AUTH_HEADER:
        evhttp_add_header(h, cfg->header_name, cfg->upstream_token);
        break;
    }
}

/* Sends u on slot s, with what is left of its time (timeout_ms from the enqueue). */
static int dispatch(struct upstream *up, struct ureq *u, struct slot *s, long long left_ms)
{
    const struct gen *g = s->gen;
    if (s->dead)
        slot_drop(s);
    if (!s->evcon && slot_open(up->app, s) != 0)
        return -1;
    struct timeval tv = { (time_t)(left_ms / 1000), (suseconds_t)(left_ms % 1000) * 1000 };
    evhttp_connection_set_timeout_tv(s->evcon, &tv);
    struct evhttp_request *req = evhttp_request_new(on_done, u);
    if (!req)
        return -1;
    evhttp_request_set_error_cb(req, on_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", g->hostport);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "User-Agent", "waguard/" WAGUARD_VERSION);
    add_auth(up, u, h);
    if (u->body || u->method == EVHTTP_REQ_POST || u->method == EVHTTP_REQ_PUT) {
        evhttp_add_header(h, "Content-Type", u->content_type[0] ? u->content_type : "application/json");
        if (u->len)
            evbuffer_add(evhttp_request_get_output_buffer(req), u->body, u->len);
        /* libevent adds Content-Length itself only to POST and PUT; a DELETE with a
         * body (Cloud unblock) without one would leave its bytes to the next request. */
        if (u->method != EVHTTP_REQ_POST && u->method != EVHTTP_REQ_PUT) {
            char cl[32];
            snprintf(cl, sizeof cl, "%zu", u->len);
            evhttp_add_header(h, "Content-Length", cl);
        }
    }
    /* the whole path and query, never cut (the forward bounds it: FORWARD_PATH_MAX) */
    size_t fl = strlen(g->base_path) + strlen(u->path) + 1;
    char *full = malloc(fl);
    if (!full) {
        evhttp_request_free(req);
        return -1;
    }
    text_join(full, fl, g->base_path, u->path, (char *)NULL);
    u->slot = s;
    s->busy = true;
    s->gen->busy++;
    up->in_flight++;
    TAILQ_INSERT_TAIL(&up->sent, u, link);
    if (!u->start_ms)
        u->start_ms = app_mono_ms();
    int made = evhttp_make_request(s->evcon, req, u->method, full);
    free(full);
    if (made != 0) {
        /* libevent freed req; the connection is suspect */
        s->busy = false;
        s->gen->busy--;
        s->dead = true;
        up->in_flight--;
        TAILQ_REMOVE(&up->sent, u, link);
        return -1;
    }
    return 0;
}

static void gen_free(struct gen *g)
{
    for (int i = 0; i < g->nslots; i++)
        slot_drop(&g->slots[i]);
    free(g->slots);
    if (g->ssl)
        SSL_CTX_free(g->ssl);
    free(g);
}

/* Retired generations whose last request has finished are freed here, outside any
 * connection's callback. */
static void free_retired(struct upstream *up)
{
    struct gen **pp = &up->retired;
    while (*pp) {
        struct gen *g = *pp;
        if (g->busy == 0) {
            *pp = g->next;
            gen_free(g);
        } else {
            pp = &g->next;
        }
    }
}

static void fail_now(struct upstream *up, struct ureq *u, const char *why)
{
    struct upstream_reply rep = { .status = 0, .body = "", .error = why };
    if (u->is_login)
        up->logging_in = false;
    finish(up, u, &rep);
}

/* Requests that have waited timeout_ms since they were queued fail: the time a caller
 * (an acknowledgement under a lease) waits is bounded by it, queue included. */
static void expire_queued(struct upstream *up)
{
    long long now = app_mono_ms(), limit = up->app->cfg->timeout_ms;
    struct ureq *u, *next;
    for (u = TAILQ_FIRST(&up->queue); u; u = next) {
        next = TAILQ_NEXT(u, link);
        if (now - u->enq_ms < limit)
            continue;
        TAILQ_REMOVE(&up->queue, u, link);
        up->queued--;
        snprintf(u->errbuf, sizeof u->errbuf, "timed out: waited %lld ms for a connection to the WABA client",
                 now - u->enq_ms);
        fail_now(up, u, u->errbuf);
    }
}

static void pump(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    struct app *app = up->app;
    (void)fd;
    (void)what;
    free_retired(up);
    struct ureq *u;
    while ((u = TAILQ_FIRST(&up->refused)) != NULL) {
        TAILQ_REMOVE(&up->refused, u, link);
        fail_now(up, u, u->errbuf);
    }
    expire_queued(up);
    while (!TAILQ_EMPTY(&up->queue)) {
        u = TAILQ_FIRST(&up->queue);
        if (!u->is_login && app->cfg->auth == AUTH_LOGIN && !token_fresh(up)) {
            long long wait = up->login_retry_ms - app_mono_ms();
            if (!up->logging_in && wait > 0) {
                /* Logins back off after failures: a locked WABA account helps no one. */
                TAILQ_REMOVE(&up->queue, u, link);
                up->queued--;
                snprintf(u->errbuf, sizeof u->errbuf, "not logged in (next login try in %lld ms): %.180s",
                         wait, up->login_why);
                fail_now(up, u, u->errbuf);
                continue;
            }
            if (!up->logging_in)
                start_login(up);
            if (TAILQ_FIRST(&up->queue) == u)
                return;     /* the login is in flight; the rest waits for it */
            continue;
        }
        struct slot *s = NULL;
        for (int i = 0; i < up->cur->nslots && !s; i++)
            if (!up->cur->slots[i].busy)
                s = &up->cur->slots[i];
        if (!s)
            return;
        TAILQ_REMOVE(&up->queue, u, link);
        up->queued--;
        long long left = app->cfg->timeout_ms - (app_mono_ms() - u->enq_ms);
        if (left <= app->cfg->timeout_ms / 10) {
            /* Too little time left to be answered: not sent at all, rather than sent
             * and reported as timed out (a caller retrying would send it twice). */
            fail_now(up, u, "timed out waiting for a connection to the WABA client (not sent)");
            continue;
        }
        if (dispatch(up, u, s, left) != 0)
            fail_now(up, u, "cannot open a connection");
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    (void)fd;
    (void)what;
    if (!TAILQ_EMPTY(&up->queue) || up->retired)
        pump_soon(up);
}

static int enqueue(struct upstream *up, struct ureq *u, bool front)
{
    if (!u->enq_ms)
        u->enq_ms = app_mono_ms();
    if (!u->is_login && up->queued >= up->app->cfg->queue_max) {
        snprintf(u->errbuf, sizeof u->errbuf, "the queue to the WABA client is full (%d waiting; "
                 "[upstream] queue_max)", up->queued);
        TAILQ_INSERT_TAIL(&up->refused, u, link);
    } else {
        if (front)
            TAILQ_INSERT_HEAD(&up->queue, u, link);
        else
            TAILQ_INSERT_TAIL(&up->queue, u, link);
        up->queued++;
    }
    pump_soon(up);
    return 0;
}

/* Every request waiting behind a failed login gets the login's failure. */
static void fail_waiting(struct upstream *up, const char *why)
{
    struct ureq_queue q;
    TAILQ_INIT(&q);
    TAILQ_CONCAT(&q, &up->queue, link);
    up->queued = 0;
    struct ureq *u;
    while ((u = TAILQ_FIRST(&q)) != NULL) {
        TAILQ_REMOVE(&q, u, link);
        struct upstream_reply rep = { .status = 0, .body = "", .error = why };
        finish(up, u, &rep);
    }
}

int upstream_request(struct app *app, enum evhttp_cmd_type method, const char *path,
                     const char *body, size_t len, upstream_cb *cb, void *arg)
{
    return upstream_request_typed(app, method, path, body, len, NULL, cb, arg);
}

int upstream_request_typed(struct app *app, enum evhttp_cmd_type method, const char *path,
                           const char *body, size_t len, const char *content_type, upstream_cb *cb, void *arg)
{
    struct upstream *up = app->upstream;
    struct ureq *u = calloc(1, sizeof *u);
    if (!u)
        return -1;
    if (content_type && strlen(content_type) < sizeof u->content_type)
        snprintf(u->content_type, sizeof u->content_type, "%s", content_type);
    u->app = app;
    u->method = method;
    u->path = strdup(path);
    if (body) {
        u->body = malloc(len + 1);
        if (u->body) {
            memcpy(u->body, body, len);
            u->body[len] = '\0';
        }
        u->len = len;
    }
    if (!u->path || (body && !u->body)) {
        ureq_free(u);
        return -1;
    }
    u->cb = cb;
    u->arg = arg;
    return enqueue(up, u, false);
}

/* ---- life -------------------------------------------------------------- */

int upstream_prepare(const struct config *cfg, struct upstream_prep **out, char *err, size_t errlen)
{
    struct upstream_prep *p = calloc(1, sizeof *p);
    struct gen *g = calloc(1, sizeof *g);
    if (!p || !g) {
        free(p);
        free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->gen = g;
    if (parse_url(g, cfg->upstream_url, err, errlen) != 0 ||
        (g->https && !(g->ssl = make_ssl_ctx(cfg, err, errlen)))) {
        upstream_prep_free(p);
        return -1;
    }
    g->slots = calloc((size_t)cfg->max_in_flight, sizeof *g->slots);
    if (!g->slots) {
        upstream_prep_free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->nslots = (int)cfg->max_in_flight;
    for (int i = 0; i < g->nslots; i++)
        g->slots[i].gen = g;
    snprintf(p->ident, sizeof p->ident, "%s|%d|%s|%s", cfg->upstream_url, (int)cfg->auth, cfg->username,
             cfg->password ? cfg->password : "");
    *out = p;
    return 0;
}

void upstream_prep_free(struct upstream_prep *p)
{
    if (!p)
        return;
    if (p->gen)
        gen_free(p->gen);
    free(p);
}

void upstream_apply(struct app *app, struct upstream_prep *p)
{
    struct upstream *up = app->upstream;
    struct gen *old = up->cur;
    up->cur = p->gen;
    p->gen = NULL;
    if (old) {
        /* Connections in use finish on the old settings; idle ones are closed now. */
        for (int i = 0; i < old->nslots; i++)
            if (!old->slots[i].busy)
                slot_drop(&old->slots[i]);
        if (old->busy)
            log_notice(&app->log, "upstream", "%d request(s) in flight finish on the old connections", old->busy);
        old->next = up->retired;
        up->retired = old;
        free_retired(up);
    }
    /* A login token stays good unless where or as whom we log in changed. */
    if (!up->token_ident || strcmp(up->token_ident, p->ident) != 0) {
        free(up->token);
        up->token = NULL;
        free(up->token_ident);
        up->token_ident = strdup(p->ident);
        up->login_failures = 0;
        up->login_retry_ms = 0;
    }
    upstream_prep_free(p);
    pump_soon(up);
}

int upstream_new(struct app *app, char *err, size_t errlen)
{
    struct upstream *up = calloc(1, sizeof *up);
    if (!up) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    up->app = app;
    TAILQ_INIT(&up->queue);
    TAILQ_INIT(&up->sent);
    TAILQ_INIT(&up->refused);
    app->upstream = up;
    up->pump_ev = event_new(app->base, -1, 0, pump, up);
    up->sweep_ev = event_new(app->base, -1, EV_PERSIST, on_sweep, up);
    struct upstream_prep *p;
    if (!up->pump_ev || !up->sweep_ev || upstream_prepare(app->cfg, &p, err, errlen) != 0)
        return -1;
    upstream_apply(app, p);
    struct timeval tv = { 0, 100 * 1000 };
    event_add(up->sweep_ev, &tv);
    return 0;
}

void upstream_free(struct app *app)
{
    struct upstream *up = app->upstream;
    if (!up)
        return;
    /* Connections first (libevent drops their requests without calling back), then
     * every request still waiting or in flight gets its answer: none. */
    for (struct gen *g = up->cur; g; g = g == up->cur ? up->retired : g->next)
        for (int i = 0; i < g->nslots; i++)
            slot_drop(&g->slots[i]);
    TAILQ_CONCAT(&up->sent, &up->queue, link);
    TAILQ_CONCAT(&up->sent, &up->refused, link);
    struct ureq *u;
    while ((u = TAILQ_FIRST(&up->sent)) != NULL) {
        TAILQ_REMOVE(&up->sent, u, link);
        struct upstream_reply rep = { .status = 0, .body = "", .error = "waguard is stopping" };
        finish(up, u, &rep);
    }
    if (up->cur)
        gen_free(up->cur);
    while (up->retired) {
        struct gen *g = up->retired;
        up->retired = g->next;
        gen_free(g);
    }
    if (up->pump_ev)
        event_free(up->pump_ev);
    if (up->sweep_ev)
        event_free(up->sweep_ev);
    free(up->token);
    free(up->token_ident);
    free(up);
    app->upstream = NULL;
}
