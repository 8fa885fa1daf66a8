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
#include <systemd/sd-daemon.h>

#include "http_edge.h"

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
    bool head_checked;               /* the head libevent reads next passed conn_inspect whole,
                                        while libevent was held back from it */
    int reject_code;                 /* its head broke a rule: answer this, then close */
    bool reject_graph;               /* ... in Graph's envelope: the head named a Cloud path */
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
    const struct router *router;     /* the routes (routes.c), given by main */
    struct request_hooks hooks;
};

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
    c->head_checked = false;
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
static void conn_reject(struct conn *c, struct evbuffer *in, const char *head, size_t n, int code, const char *why)
{
    /* the target of the request line, as far as it can be read: whose envelope to answer in */
    char target[256] = "";
    const char *sp = memchr(head, ' ', n < 64 ? n : 64);
    if (sp) {
        size_t i = 0;
        for (const char *t = sp + 1; t < head + n && *t != ' ' && *t != '\r' && *t != '\n' && i + 1 < sizeof target; t++)
            target[i++] = *t;
        target[i] = '\0';
    }
    c->reject_graph = c->sv->router->graph_path(c->sv->app->cfg, target);
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
            conn_reject(c, in, p, n, 400, why);
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
        conn_reject(c, in, p, end, code, why);
        return;
    }
    /* held back until now, libevent reads exactly these bytes as the next head */
    c->head_checked = hold;
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

/* ---- following a request (request.h's hooks) ------------------------------------ */

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

static void on_answering(struct request *r, struct evhttp_request *req, void *ctx)
{
    struct server *sv = ctx;
    struct conn *c = conn_find(sv, evhttp_request_get_connection(req));
    if (!c)
        return;
    if (c->waiting == r)
        c->waiting = NULL;
    /* Counted until written, so that a drain never exits before the client has it. */
    c->unsent++;
    sv->replies_unsent++;
    evhttp_request_set_on_complete_cb(req, on_reply_sent, c);
}

static void on_finished(struct request *r, void *ctx)
{
    struct server *sv = ctx;
    (void)r;
    sv->in_flight--;
}

/* "GET, POST" for a methods mask. */
static void allow_list(int methods, char *buf, size_t len)
{
    static const struct { int m; const char *name; } names[] = {
        { EVHTTP_REQ_GET, "GET" }, { EVHTTP_REQ_HEAD, "HEAD" }, { EVHTTP_REQ_POST, "POST" },
        { EVHTTP_REQ_PUT, "PUT" }, { EVHTTP_REQ_PATCH, "PATCH" }, { EVHTTP_REQ_DELETE, "DELETE" },
        { EVHTTP_REQ_OPTIONS, "OPTIONS" },
    };
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (methods & names[i].m)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "", names[i].name);
}

/* ---- dispatch ---------------------------------------------------------- */

static void dispatch(struct evhttp_request *req, void *arg)
{
    struct app *app = arg;
    struct server *sv = app->server;
    struct request *r = request_new(app, req, &sv->hooks);
    if (!r) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    sv->in_flight++;

    struct conn *c = conn_find(sv, evhttp_request_get_connection(req));
    if (!c) {                        /* on_accept could not make its record: out of memory */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        request_reply_error(r, 503, "Too many connections", "out of memory; retry later");
        return;
    }
    wait_unlink(c);
    c->state = CONN_BUSY;
    bool checked = c->head_checked;
    c->head_checked = false;
    int code = c->reject_code;
    char why[192];
    if (code) {
        snprintf(why, sizeof why, "%s", c->reject_why);
    } else if (!checked) {
        /* What libevent parsed, checked: a pipelined head was not seen whole before (one
         * that was, with libevent held back from it, is not checked twice). */
        code = http_edge_check_path(evhttp_request_get_uri(req), why, sizeof why);
        if (!code)
            code = http_edge_check_headers(evhttp_request_get_input_headers(req),
                                           (size_t)app->cfg->max_body_bytes, why, sizeof why);
    }
    if (code) {
        log_debug(&app->log, "server", "refused a request with %d: %s", code, why);
        r->graph = c->reject_code ? c->reject_graph : sv->router->graph_path(app->cfg, evhttp_request_get_uri(req));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        request_reply_error(r, code, code == 413 ? "Payload too large" : code == 503 ? "Too many connections"
                            : code == 501 ? "Not implemented" : "Bad request", "%s", why);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || !*path)
        path = "/";
    int method = (int)evhttp_request_get_command(req);
    int path_methods = 0;
    const struct route_def *rt = sv->router->resolve(app->cfg, path, method, r->arg, &path_methods);
    if (!rt) {
        r->graph = sv->router->graph_path(app->cfg, path);
        if (path_methods) {
            char allow[96];
            allow_list(path_methods, allow, sizeof allow);
            request_add_header(r, "Allow", allow);
            request_reply_error(r, 405, "Method not allowed", "%s takes %s", path, allow);
        } else {
            request_reply_error(r, 404, "Not found", "no route %s%s", path,
                                app->cfg->forward_unknown ? "" : " ([proxy] forward_unknown is off)");
        }
        return;
    }
    r->route = rt->metric;
    r->graph = rt->graph;
    /* Watched from here: if the client goes away, the handler's answer is dropped. */
    c->waiting = r;
    if (request_authorize(r, rt->role) != 0)
        return;
    rt->fn(r);
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

int server_new(struct app *app, const struct router *router, char *err, size_t errlen)
{
    struct server *sv = calloc(1, sizeof *sv);
    if (!sv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->server = sv;
    sv->router = router;
    sv->hooks = (struct request_hooks){ .answering = on_answering, .finished = on_finished, .ctx = sv };
    sv->http = evhttp_new(app->base);
    if (!sv->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        return -1;
    }
    /* Every method libevent knows reaches dispatch, which answers in JSON what no route
     * takes (405 with Allow, or 404); a method libevent does not know is refused by
     * http_edge (501) before libevent's own HTML answer could be given. */
    evhttp_set_allowed_methods(sv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                               EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
                               EVHTTP_REQ_PATCH);
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
