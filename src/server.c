/* server — see include/server.h */
#include "server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "gate.h"
#include "http_edge.h"
#include "idcheck.h"
#include "proxy.h"
#include "status.h"
#include "webhook.h"

#define MAX_LISTENERS 8
#define LISTEN_BACKLOG 1024
/* Connections accepted beyond max_connections while none is waiting to be closed in their
 * place (every one busy answering, or just accepted): each is answered 503 on its request.
 * Past this many the listeners pause, so a burst never runs into the descriptor limit. */
#define REFUSE_MARGIN 16
#define CONN_BUCKETS 1024

/* Where a client connection is in its current request.  Connections are counted from
 * accept; a connection in CONN_HEAD or CONN_BODY has not yet sent a complete request and
 * sits on the server's waiting list, oldest first, closed once timeout_s has passed since
 * it began waiting, or earlier to make room for a new one beyond max_connections. */
enum conn_state {
    CONN_HEAD,     /* waiting for a request head: held back from libevent until it is complete and checked */
    CONN_BODY,     /* its head passed (or could not be inspected): libevent reads the body */
    CONN_BUSY,     /* the request is being answered */
};

/* One client connection, from accept to close. */
struct conn {
    struct conn *next;               /* hash chain, by evcon */
    struct conn *wprev, *wnext;      /* the waiting list */
    struct conn *pending_next;       /* accepted, not yet set up */
    struct server *sv;
    struct bufferevent *bev;         /* the connection's, made by on_accept, owned by libevent */
    struct evhttp_connection *evcon; /* NULL until set up */
    struct evbuffer_cb_entry *watch; /* our callback on the input buffer (owned by it) */
    enum conn_state state;
    bool linked;                     /* on the waiting list */
    bool refused;                    /* over max_connections: its request is answered 503 */
    bool rewriting;                  /* we are changing the input buffer ourselves */
    long long since_ms;              /* when it began waiting for its current request */
    size_t scanned;                  /* bytes of the head scanned without finding its end */
    int reject_code;                 /* its head broke a rule: answer this, then close */
    char reject_why[192];
    struct request *waiting;         /* the request being answered asynchronously */
    int unsent;                      /* its answers handed to libevent, not yet written */
};

struct server {
    struct app *app;
    struct evhttp *http;
    int replies_unsent;              /* answers handed to libevent, not yet written out */
    struct conn *conns[CONN_BUCKETS];
    long nconns;                     /* open connections, counted from accept */
    struct conn *pending, *pending_tail; /* accepted in this loop turn, set up by setup_ev, in order */
    bool paused;                     /* the listeners are disabled: max_connections + REFUSE_MARGIN open */
    struct conn *whead, *wtail;      /* the waiting list, oldest first */
    struct event *setup_ev, *deadline_ev;
    long long refused_logged_ms;     /* the last "refusing a connection" line */
    long long slow_logged_ms;        /* the last "closed slow connections" line */
    unsigned long slow_closed;       /* closed for slowness since that line */
    struct evhttp_bound_socket *bound[MAX_LISTENERS];
    int nbound;
    int in_flight;
    char unix_path[108];
};

/* ---- routing ----------------------------------------------------------- */

struct route_def {
    int methods;            /* EVHTTP_REQ_* mask */
    const char *pattern;    /* '*' matches one path segment and is captured */
    enum route route;
    route_fn *fn;
};

static const struct route_def routes[] = {
    { EVHTTP_REQ_GET, "/healthz", ROUTE_HEALTHZ, status_healthz },
    { EVHTTP_REQ_GET, "/readyz", ROUTE_READYZ, status_readyz },
    { EVHTTP_REQ_GET, "/metrics", ROUTE_METRICS, status_metrics },
    { EVHTTP_REQ_GET, "/v1/gate/*", ROUTE_GATE, gate_get },
    { EVHTTP_REQ_POST, "/v1/gate", ROUTE_GATE_BATCH, gate_batch },
    { EVHTTP_REQ_GET, "/v1/identities", ROUTE_IDENTITIES, admin_list },
    { EVHTTP_REQ_GET, "/v1/identities/*", ROUTE_IDENTITY, admin_get },
    { EVHTTP_REQ_POST, "/v1/identities/*/ack", ROUTE_IDENTITY_ACK, admin_ack },
    { EVHTTP_REQ_POST, "/v1/identities/*/release", ROUTE_IDENTITY_RELEASE, admin_release },
    { EVHTTP_REQ_POST, "/identity-change/check", ROUTE_IDENTITY_CHANGE_CHECK, idcheck_check },
    { EVHTTP_REQ_POST, "/identity-change/retrieve-date", ROUTE_IDENTITY_CHANGE_CHECK, idcheck_retrieve_date },
    { EVHTTP_REQ_POST, "/v1/messages", ROUTE_MESSAGES, proxy_messages },
    { EVHTTP_REQ_POST, "/v1/contacts", ROUTE_CONTACTS, proxy_contacts },
    { EVHTTP_REQ_GET, "/v1/contacts/blocklist", ROUTE_BLOCKLIST, proxy_blocklist },
    { EVHTTP_REQ_GET | EVHTTP_REQ_PUT, "/v1/contacts/*/identity", ROUTE_IDENTITY_PROXY, proxy_identity },
    { EVHTTP_REQ_POST, "/v1/contacts/*/block", ROUTE_BLOCK, proxy_block },
    { EVHTTP_REQ_POST, "/v1/contacts/*/unblock", ROUTE_BLOCK, proxy_block },
    { EVHTTP_REQ_POST, "/v1/contacts/*/report", ROUTE_BLOCK, proxy_block },
    { EVHTTP_REQ_POST, "/messages", ROUTE_CLOUD_MESSAGES, proxy_cloud_messages },
    { EVHTTP_REQ_POST, "/*/*/messages", ROUTE_CLOUD_MESSAGES, proxy_cloud_messages },
    { EVHTTP_REQ_POST | EVHTTP_REQ_DELETE | EVHTTP_REQ_GET, "/block_users", ROUTE_CLOUD_BLOCK, proxy_cloud_block },
    { EVHTTP_REQ_POST | EVHTTP_REQ_DELETE | EVHTTP_REQ_GET, "/*/*/block_users", ROUTE_CLOUD_BLOCK, proxy_cloud_block },
};

/* Matches path against pattern, capturing '*' segments (percent-decoded) into r->arg.
 * A segment that does not decode whole into r->arg does not match. */
static bool match(const char *pattern, const char *path, struct request *r)
{
    int ncap = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '*') {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || ncap >= 2)
                return false;
            char seg[512];
            if (n >= sizeof seg)
                return false;
            memcpy(seg, s, n);
            seg[n] = '\0';
            size_t dlen = 0;
            char *dec = evhttp_uridecode(seg, 0, &dlen);
            if (!dec)
                return false;
            /* Never a shorter id than the one sent: not past a decoded NUL (http_edge refuses
             * those first), nor cut to fit. */
            bool whole = strlen(dec) == dlen && dlen < sizeof r->arg[0];
            if (whole)
                memcpy(r->arg[ncap++], dec, dlen + 1);
            free(dec);
            if (!whole)
                return false;
            s += n;
            p++;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && (*s == '\0' || (s[0] == '/' && s[1] == '\0'));
}

/* ---- connections --------------------------------------------------------
 *
 * libevent 2.1 tells a server nothing between accept and a complete request, and has no
 * hook on a request before its body is read (evhttp_set_newreqcb came in 2.2; a server
 * request's evhttp_request_set_header_cb cannot be reached).  Two public hooks give us
 * both: evhttp_set_bevcb lets us make each accepted connection's bufferevent (so we count
 * from accept), and a callback on that bufferevent's input buffer sees every byte before
 * libevent's parser does.  While a request head is incomplete, the read low-watermark
 * keeps libevent from parsing it; once it is complete, http_edge checks it as sent.  A
 * head that breaks a rule never reaches libevent: it is replaced by a fixed request that
 * carries no body, whose dispatch answers the JSON error (400, 413 or 503) and closes. */

/* What a rejected head is replaced by.  Its content is never routed: the connection's
 * reject_code decides the answer. */
static const char reject_request[] = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";

static size_t conn_bucket(const struct evhttp_connection *evcon)
{
    return ((size_t)evcon >> 4) % CONN_BUCKETS;
}

static struct conn *conn_find(struct server *sv, const struct evhttp_connection *evcon)
{
    for (struct conn *c = sv->conns[conn_bucket(evcon)]; c; c = c->next)
        if (c->evcon == evcon)
            return c;
    return NULL;
}

static void deadline_arm(struct server *sv)
{
    if (!sv->whead || evtimer_pending(sv->deadline_ev, NULL))
        return;
    long long left = sv->whead->since_ms + sv->app->cfg->timeout_s * 1000 - app_mono_ms();
    if (left < 0)
        left = 0;
    struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000 + 1000 };
    evtimer_add(sv->deadline_ev, &tv);
}

static void wait_unlink(struct conn *c)
{
    struct server *sv = c->sv;
    if (!c->linked)
        return;
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        sv->whead = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    else
        sv->wtail = c->wprev;
    c->wprev = c->wnext = NULL;
    c->linked = false;
}

/* The connection begins waiting for a request (after accept, or after an answer). */
static void conn_wait(struct conn *c)
{
    struct server *sv = c->sv;
    wait_unlink(c);
    c->state = CONN_HEAD;
    c->scanned = 0;
    c->since_ms = app_mono_ms();
    c->wprev = sv->wtail;
    if (sv->wtail)
        sv->wtail->wnext = c;
    else
        sv->whead = c;
    sv->wtail = c;
    c->linked = true;
    deadline_arm(sv);
}

static void listeners_pause(struct server *sv, bool pause)
{
    if (sv->paused == pause)
        return;
    sv->paused = pause;
    for (int i = 0; i < sv->nbound; i++) {
        struct evconnlistener *l = evhttp_bound_socket_get_listener(sv->bound[i]);
        if (pause)
            evconnlistener_disable(l);
        else
            evconnlistener_enable(l);
    }
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct server *sv = c->sv;
    if (c->waiting)
        c->waiting->req = NULL;      /* the client went away: its answer is dropped */
    sv->replies_unsent -= c->unsent; /* answers that will never be written */
    wait_unlink(c);
    if (c->watch)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
    struct conn **pp = &sv->conns[conn_bucket(evcon)];
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    sv->nconns--;
    free(c);
    if (sv->paused && sv->nconns < sv->app->cfg->max_connections + REFUSE_MARGIN)
        listeners_pause(sv, false);
}

/* Closes a connection that has not sent a complete request (c is freed). */
static void conn_drop(struct conn *c)
{
    evhttp_connection_free(c->evcon);
}

/* Replaces what the client sent with reject_request, so that libevent never parses the
 * head that broke a rule (nor a body after it) and dispatch answers code. */
static void conn_reject(struct conn *c, struct evbuffer *in, int code, const char *why)
{
    c->reject_code = code;
    snprintf(c->reject_why, sizeof c->reject_why, "%s", why);
    c->rewriting = true;
    evbuffer_drain(in, evbuffer_get_length(in));
    /* prepend: bufferevent freezes the end of its input buffer outside its own reads */
    if (evbuffer_prepend(in, reject_request, sizeof reject_request - 1) != 0)
        log_error(&c->sv->app->log, "server", "cannot queue the %d answer of a refused request", code);
    c->rewriting = false;
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    c->state = CONN_BODY;
}

/* Looks at the head waiting in the input buffer.  hold: libevent can still be kept from
 * reading an incomplete head (false when it will read what is buffered regardless). */
static void conn_inspect(struct conn *c, bool hold)
{
    const struct config *cfg = c->sv->app->cfg;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    size_t cap = (size_t)cfg->max_header_bytes;
    size_t n = len < cap + 1 ? len : cap + 1;
    size_t end = 0;
    const char *p = NULL;
    struct evbuffer_iovec v;
    /* A head within the buffer's first chunk is read in place; otherwise made contiguous. */
    if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1) {
        if (v.iov_len >= n)
            p = v.iov_base;
        else if ((end = http_edge_head_end(v.iov_base, v.iov_len, 0)) != 0)
            p = v.iov_base;
    }
    if (!p)
        p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    if (!p)
        return;
    if (!end)
        end = http_edge_head_end(p, n, c->scanned);
    char why[192];
    if (!end || end > cap) {
        if (n > cap || end > cap) {
            snprintf(why, sizeof why, "the request head is larger than max_header_bytes (%zu bytes)", cap);
            conn_reject(c, in, 400, why);
        } else if (hold) {
            c->scanned = n;
            bufferevent_setwatermark(c->bev, EV_READ, len + 1, 0);
        } else {
            c->state = CONN_BODY;    /* pipelined and incomplete: dispatch checks what libevent parsed */
        }
        return;
    }
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    int code = http_edge_check_head(p, end, (size_t)cfg->max_body_bytes, why, sizeof why);
    if (!code && c->refused) {
        code = 503;
        snprintf(why, sizeof why, "max_connections (%ld) reached; retry later", cfg->max_connections);
    }
    if (code) {
        conn_reject(c, in, code, why);
        return;
    }
    c->state = CONN_BODY;
}

/* The input buffer changed: bytes arrived (or libevent consumed some). */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    (void)buf;
    if (c->state == CONN_HEAD && info->n_added && !c->rewriting)
        conn_inspect(c, true);
}

/* Room for the connection c just accepted: beyond max_connections, the connections waiting
 * longest for a complete request are closed first; if none is waiting, c is refused (its
 * request answered 503), and past REFUSE_MARGIN more the listeners pause. */
static void make_room(struct server *sv, struct conn *c)
{
    long max = sv->app->cfg->max_connections;
    while (sv->nconns > max && sv->whead) {
        sv->slow_closed++;
        conn_drop(sv->whead);
    }
    if (sv->nconns <= max)
        return;
    c->refused = true;
    if (sv->nconns >= max + REFUSE_MARGIN)
        listeners_pause(sv, true);
    if (app_mono_ms() - sv->refused_logged_ms >= 1000) {    /* once a second at most */
        sv->refused_logged_ms = app_mono_ms();
        log_warn(&sv->app->log, "server", "refusing connections: %ld open and none waiting for a request, "
                 "max_connections is %ld", sv->nconns, max);
    }
}

/* evhttp_set_bevcb: a connection was accepted; its bufferevent is ours to make.  The
 * connection itself does not exist yet: on_setup finishes the record in the same loop turn. */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    struct server *sv = arg;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;                 /* libevent makes its own; dispatch refuses the request */
    c->bev = bufferevent_socket_new(base, -1, 0);   /* the options libevent itself uses */
    if (!c->bev) {
        free(c);
        return NULL;
    }
    c->sv = sv;
    c->state = CONN_HEAD;
    bufferevent_incref(c->bev);      /* held until on_setup, in case libevent fails first */
    if (sv->pending_tail)
        sv->pending_tail->pending_next = c;
    else
        sv->pending = c;
    sv->pending_tail = c;
    sv->nconns++;
    /* Before the next accept of this burst, so that the descriptors stay bounded. */
    make_room(sv, c);
    event_active(sv->setup_ev, EV_TIMEOUT, 0);
    return c->bev;
}

static void on_setup(evutil_socket_t fd, short what, void *arg)
{
    struct server *sv = arg;
    (void)fd;
    (void)what;
    struct conn *c;
    while ((c = sv->pending) != NULL) {
        sv->pending = c->pending_next;
        if (!sv->pending)
            sv->pending_tail = NULL;
        bufferevent_data_cb readcb = NULL;
        void *cbarg = NULL;
        bufferevent_getcb(c->bev, &readcb, NULL, NULL, &cbarg);
        if (!readcb || !cbarg) {     /* libevent gave up on it already (bufferevent_free clears these) */
            bufferevent_decref(c->bev);
            sv->nconns--;
            free(c);
            continue;
        }
        /* libevent's callbacks on a server connection's bufferevent carry the connection. */
        c->evcon = cbarg;
        size_t b = conn_bucket(c->evcon);
        c->next = sv->conns[b];
        sv->conns[b] = c;
        evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
        c->watch = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
        bufferevent_decref(c->bev);
        conn_wait(c);
    }
    /* Every one of them can be closed to make room now: accept on. */
    if (sv->whead || sv->nconns < sv->app->cfg->max_connections + REFUSE_MARGIN)
        listeners_pause(sv, false);
}

/* Closes the connections that have waited timeout_s for a complete request. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct server *sv = arg;
    (void)fd;
    (void)what;
    long long now = app_mono_ms(), limit = sv->app->cfg->timeout_s * 1000;
    while (sv->whead && now - sv->whead->since_ms >= limit) {
        sv->slow_closed++;
        conn_drop(sv->whead);
    }
    if (sv->slow_closed && now - sv->slow_logged_ms >= 10000) {
        sv->slow_logged_ms = now;
        log_notice(&sv->app->log, "server", "closed %lu connection(s) that sent no complete request within "
                   "timeout_s (%lds) or were the oldest such when max_connections (%ld) was reached",
                   sv->slow_closed, sv->app->cfg->timeout_s, sv->app->cfg->max_connections);
        sv->slow_closed = 0;
    }
    deadline_arm(sv);
}

void request_hold(struct request *r)
{
    if (!r->req)
        return;
    struct conn *c = conn_find(r->app->server, evhttp_request_get_connection(r->req));
    if (c)
        c->waiting = r;
}

static void request_finish(struct request *r, int code)
{
    struct app *app = r->app;
    if (code >= 100 && code < 600)
        app->metrics->requests[r->route][code]++;
    metrics_observe(&app->metrics->latency[r->route], (double)(app_mono_ms() - r->start_ms) / 1000.0);
    if (r->free_data)
        r->free_data(r->data);
    app->server->in_flight--;
    free(r);
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 423: return "Locked";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return NULL;     /* libevent's own */
    }
}

/* libevent calls this once an answer is written, before it may close the connection. */
static void on_reply_sent(struct evhttp_request *req, void *arg)
{
    struct conn *c = arg;
    (void)req;
    c->unsent--;
    c->sv->replies_unsent--;
    /* The next request may follow on this connection (libevent closes it otherwise).  One
     * already buffered (pipelined) is read by libevent at once, so it cannot be held back. */
    conn_wait(c);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        conn_inspect(c, false);
}

static void send_and_finish(struct request *r, int code, const char *ctype, struct evbuffer *buf)
{
    if (r->req) {
        struct evhttp_request *req = r->req;
        struct conn *c = conn_find(r->app->server, evhttp_request_get_connection(req));
        if (c && c->waiting == r)
            c->waiting = NULL;
        if (c) {
            /* Counted until written, so that a drain never exits before the client has it. */
            c->unsent++;
            r->app->server->replies_unsent++;
            evhttp_request_set_on_complete_cb(req, on_reply_sent, c);
        }
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", ctype);
        if (r->app->stopping)
            evhttp_add_header(h, "Connection", "close");
        evhttp_send_reply(req, code, reason_phrase(code), buf);
    }
    request_finish(r, code);
}

void request_reply_raw(struct request *r, int code, const char *ctype, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf && len)
        evbuffer_add(buf, body, len);
    send_and_finish(r, code, ctype, buf);
    if (buf)
        evbuffer_free(buf);
}

void request_reply_json(struct request *r, int code, cJSON *body)
{
    char *s = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!s) {
        static const char oom[] = "{\"errors\":[{\"code\":500,\"title\":\"Internal error\",\"details\":\"out of memory\"}]}";
        request_reply_raw(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n';     /* cJSON's buffer is one longer than the text; a newline reads well in curl */
    request_reply_raw(r, code, "application/json", s, n + 1);
    cJSON_free(s);
}

void request_reply_error(struct request *r, int code, const char *title, const char *fmt, ...)
{
    char details[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON *errs = cJSON_AddArrayToObject(o, "errors");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "code", code);
    cJSON_AddStringToObject(e, "title", title);
    cJSON_AddStringToObject(e, "details", details);
    cJSON_AddItemToArray(errs, e);
    request_reply_json(r, code, o);
}

const char *request_body(struct request *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    *len = evbuffer_get_length(in);
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(in, -1);
}

const char *request_header(struct request *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

const char *request_query(struct request *r, const char *name, char *buf, size_t buflen)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    if (!q)
        return NULL;
    struct evkeyvalq params;
    if (evhttp_parse_query_str(q, &params) != 0)
        return NULL;
    const char *v = evhttp_find_header(&params, name);
    const char *res = NULL;
    if (v) {
        snprintf(buf, buflen, "%s", v);
        res = buf;
    }
    evhttp_clear_headers(&params);
    return res;
}

/* ---- authentication ---------------------------------------------------- */

bool server_secret_equal(const char *presented, size_t plen, const char *known)
{
    /* Hashing both sides first makes the comparison independent of their lengths. */
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)presented, plen, a);
    SHA256((const unsigned char *)known, strlen(known), b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

static const struct token *find_token(const struct token_list *tl, const char *tok, size_t len)
{
    const struct token *found = NULL;
    for (size_t i = 0; i < tl->n; i++)      /* no early exit: every token is compared */
        if (server_secret_equal(tok, len, tl->v[i].value))
            found = &tl->v[i];
    return found;
}

int request_authorize(struct request *r, enum role need)
{
    const struct config *cfg = r->app->cfg;
    const struct token_list *own = need == ROLE_ADMIN ? &cfg->admin_tokens : &cfg->api_tokens;
    if (need == ROLE_NONE || own->n == 0) {
        snprintf(r->caller, sizeof r->caller, "anonymous");
        return 0;
    }
    const char *auth = request_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        request_reply_error(r, 401, "Unauthorized", "this route needs Authorization: Bearer <%s token>",
                            need == ROLE_ADMIN ? "admin" : "api");
        return -1;
    }
    const char *tok = auth + 7;
    size_t len = strlen(tok);
    const struct token *t = find_token(&cfg->admin_tokens, tok, len);
    if (!t && need == ROLE_API)
        t = find_token(&cfg->api_tokens, tok, len);
    if (t) {
        snprintf(r->caller, sizeof r->caller, "%s", t->name);
        return 0;
    }
    bool other_role = (need == ROLE_ADMIN && find_token(&cfg->api_tokens, tok, len)) ||
                      (cfg->webhook_token && server_secret_equal(tok, len, cfg->webhook_token));
    if (other_role)
        request_reply_error(r, 403, "Forbidden", "this token is not allowed on %s routes",
                            need == ROLE_ADMIN ? "admin" : "api");
    else
        request_reply_error(r, 401, "Unauthorized", "unknown token");
    return -1;
}

/* ---- dispatch ---------------------------------------------------------- */

static void dispatch(struct evhttp_request *req, void *arg)
{
    struct app *app = arg;
    struct request *r = calloc(1, sizeof *r);
    if (!r) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    r->app = app;
    r->req = req;
    r->route = ROUTE_OTHER;
    r->start_ms = app_mono_ms();
    snprintf(r->caller, sizeof r->caller, "anonymous");
    app->server->in_flight++;

    struct conn *c = conn_find(app->server, evhttp_request_get_connection(req));
    if (!c) {                        /* on_accept could not make its record: out of memory */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        request_reply_error(r, 503, "Too many connections", "out of memory; retry later");
        return;
    }
    wait_unlink(c);
    c->state = CONN_BUSY;
    int code = c->reject_code;
    char why[192];
    if (code) {
        snprintf(why, sizeof why, "%s", c->reject_why);
    } else {
        /* What libevent parsed, checked again: a pipelined head was not seen whole before. */
        code = http_edge_check_path(evhttp_request_get_uri(req), why, sizeof why);
        if (!code)
            code = http_edge_check_headers(evhttp_request_get_input_headers(req),
                                           (size_t)app->cfg->max_body_bytes, why, sizeof why);
    }
    if (code) {
        log_debug(&app->log, "server", "refused a request with %d: %s", code, why);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        request_reply_error(r, code, code == 413 ? "Payload too large" :
                            code == 503 ? "Too many connections" : "Bad request", "%s", why);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || !*path)
        path = "/";
    int method = (int)evhttp_request_get_command(req);

    if (strcmp(path, app->cfg->webhook_path) == 0) {
        if (method == EVHTTP_REQ_POST) {
            r->route = ROUTE_WEBHOOK;
            webhook_post(r);
        } else if (method == EVHTTP_REQ_GET) {
            r->route = ROUTE_WEBHOOK_VERIFY;
            webhook_verify(r);
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, POST");
            request_reply_error(r, 405, "Method not allowed", "%s takes GET or POST", path);
        }
        return;
    }
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!match(routes[i].pattern, path, r))
            continue;
        path_known = true;
        if (!(routes[i].methods & method))
            continue;
        r->route = routes[i].route;
        routes[i].fn(r);
        return;
    }
    if (path_known) {
        request_reply_error(r, 405, "Method not allowed", "%s does not take this method", path);
    } else if (app->cfg->forward_unknown && proxy_forwardable(path, method)) {
        r->route = ROUTE_FORWARDED;
        proxy_unknown(r);
    } else {
        request_reply_error(r, 404, "Not found", "no route %s%s", path,
                            app->cfg->forward_unknown ? "" : " ([proxy] forward_unknown is off)");
    }
}

/* ---- listeners --------------------------------------------------------- */

static bool socket_is_local(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return false;
    if (ss.ss_family == AF_UNIX)
        return true;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
    return false;
}

static bool credentials_configured(const struct config *cfg)
{
    return (cfg->webhook_token || cfg->hmac_secret) && cfg->api_tokens.n && cfg->admin_tokens.n;
}

static int bind_unix(struct server *sv, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    chmod(path, 0660);
    sv->bound[sv->nbound] = evhttp_accept_socket_with_handle(sv->http, fd);
    if (!sv->bound[sv->nbound]) {
        snprintf(err, errlen, "cannot accept on unix:%s", path);
        close(fd);
        return -1;
    }
    sv->nbound++;
    snprintf(sv->unix_path, sizeof sv->unix_path, "%s", path);
    return 0;
}

void server_reconfigure(struct app *app)
{
    struct server *sv = app->server;
    const struct config *cfg = app->cfg;
    evhttp_set_max_body_size(sv->http, cfg->max_body_bytes);
    evhttp_set_max_headers_size(sv->http, cfg->max_header_bytes);
    evhttp_set_timeout(sv->http, (int)cfg->timeout_s);
}

int server_new(struct app *app, char *err, size_t errlen)
{
    struct server *sv = calloc(1, sizeof *sv);
    if (!sv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->server = sv;
    sv->http = evhttp_new(app->base);
    if (!sv->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        return -1;
    }
    evhttp_set_allowed_methods(sv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                               EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(sv->http, dispatch, app);
    sv->app = app;
    sv->setup_ev = event_new(app->base, -1, 0, on_setup, sv);
    sv->deadline_ev = evtimer_new(app->base, on_deadline, sv);
    if (!sv->setup_ev || !sv->deadline_ev) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    evhttp_set_bevcb(sv->http, on_accept, sv);
    server_reconfigure(app);

    /* Socket activation: systemd passes the listening sockets.  The loopback rule of
     * the configuration applies to them too. */
    int n = sd_listen_fds(1);
    if (n > 0) {
        for (int i = 0; i < n && sv->nbound < MAX_LISTENERS; i++) {
            if (!socket_is_local(SD_LISTEN_FDS_START + i) && !credentials_configured(app->cfg)) {
                snprintf(err, errlen, "systemd passed a socket (fd %d) that is not on a loopback address, "
                         "so the webhook and the API need tokens ([webhook] token_file or hmac_secret_file, "
                         "[api] tokens_file and admin_tokens_file)", SD_LISTEN_FDS_START + i);
                return -1;
            }
            evutil_make_socket_nonblocking(SD_LISTEN_FDS_START + i);
            sv->bound[sv->nbound] = evhttp_accept_socket_with_handle(sv->http, SD_LISTEN_FDS_START + i);
            if (!sv->bound[sv->nbound]) {
                snprintf(err, errlen, "cannot accept on the socket systemd passed (fd %d)", SD_LISTEN_FDS_START + i);
                return -1;
            }
            sv->nbound++;
        }
        log_notice(&app->log, "server", "listening on %d socket(s) passed by systemd", n);
        return 0;
    }
    const char *where = app->cfg->listen;
    if (strncmp(where, "unix:", 5) == 0) {
        if (bind_unix(sv, where + 5, err, errlen) != 0)
            return -1;
    } else {
        char host[256];
        int port;
        if (config_split_hostport(where, host, sizeof host, &port) != 0) {
            snprintf(err, errlen, "bad listen address %s", where);
            return -1;
        }
        sv->bound[0] = evhttp_bind_socket_with_handle(sv->http, host, (ev_uint16_t)port);
        if (!sv->bound[0]) {
            snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(errno));
            return -1;
        }
        sv->nbound = 1;
        /* libevent listens with a backlog of 128; a burst of connections (a flood of slow
         * ones included) then drops SYNs and a normal client waits a second to retry.
         * Listening again only changes the backlog. */
        if (listen(evhttp_bound_socket_get_fd(sv->bound[0]), LISTEN_BACKLOG) != 0)
            log_warn(&app->log, "server", "cannot raise the listen backlog to %d: %s", LISTEN_BACKLOG,
                     strerror(errno));
    }
    log_notice(&app->log, "server", "listening on %s", where);
    return 0;
}

void server_stop_accepting(struct app *app)
{
    struct server *sv = app->server;
    if (!sv)
        return;
    for (int i = 0; i < sv->nbound; i++)
        evhttp_del_accept_socket(sv->http, sv->bound[i]);
    sv->nbound = 0;
    if (sv->unix_path[0]) {
        unlink(sv->unix_path);
        sv->unix_path[0] = '\0';
    }
}

int server_in_flight(const struct app *app)
{
    return app->server ? app->server->in_flight + app->server->replies_unsent : 0;
}

void server_free(struct app *app)
{
    struct server *sv = app->server;
    if (!sv)
        return;
    server_stop_accepting(app);
    if (sv->http)
        evhttp_free(sv->http);       /* every connection: on_conn_close frees its record */
    struct conn *c;
    while ((c = sv->pending) != NULL) {
        sv->pending = c->pending_next;
        bufferevent_decref(c->bev);
        free(c);
    }
    sv->pending_tail = NULL;
    if (sv->setup_ev)
        event_free(sv->setup_ev);
    if (sv->deadline_ev)
        event_free(sv->deadline_ev);
    free(sv);
    app->server = NULL;
}
