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
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "gate.h"
#include "idcheck.h"
#include "proxy.h"
#include "status.h"
#include "webhook.h"

#define MAX_LISTENERS 8
#define CONN_BUCKETS 1024

/* One client connection that has sent a request: counted against max_connections,
 * and the place its close is noticed (the request it is waiting on loses its req). */
struct conn {
    struct conn *next;               /* hash chain */
    struct server *sv;
    struct evhttp_connection *evcon;
    struct request *waiting;         /* the request being answered asynchronously */
    int unsent;                      /* its answers handed to libevent, not yet written */
};

struct server {
    struct evhttp *http;
    int replies_unsent;              /* answers handed to libevent, not yet written out */
    struct conn *conns[CONN_BUCKETS];
    long nconns;
    long long refused_logged_ms;     /* the last "refusing a connection" line */
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

/* Matches path against pattern, capturing '*' segments (percent-decoded) into r->arg. */
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
            char *dec = evhttp_uridecode(seg, 0, NULL);
            if (!dec)
                return false;
            snprintf(r->arg[ncap++], sizeof r->arg[0], "%s", dec);
            free(dec);
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

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct server *sv = c->sv;
    if (c->waiting)
        c->waiting->req = NULL;      /* the client went away: its answer is dropped */
    sv->replies_unsent -= c->unsent; /* answers that will never be written */
    struct conn **pp = &sv->conns[conn_bucket(evcon)];
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    sv->nconns--;
    free(c);
}

/* Registers the request's connection on its first request.  Returns -1 when the
 * connection is over max_connections (the caller answers 503 and closes it). */
static int conn_track(struct server *sv, struct request *r, long max)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    if (conn_find(sv, evcon))
        return 0;
    if (sv->nconns >= max)
        return -1;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->sv = sv;
    c->evcon = evcon;
    c->next = sv->conns[conn_bucket(evcon)];
    sv->conns[conn_bucket(evcon)] = c;
    sv->nconns++;
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    return 0;
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

    if (conn_track(app->server, r, app->cfg->max_connections) != 0) {
        if (app_mono_ms() - app->server->refused_logged_ms >= 1000) {    /* once a second at most */
            app->server->refused_logged_ms = app_mono_ms();
            log_warn(&app->log, "server", "refusing connections: %ld open, max_connections is %ld",
                     app->server->nconns, app->cfg->max_connections);
        }
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        request_reply_error(r, 503, "Too many connections", "max_connections (%ld) reached; retry later",
                            app->cfg->max_connections);
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
    if (path_known)
        request_reply_error(r, 405, "Method not allowed", "%s does not take this method", path);
    else
        request_reply_error(r, 404, "Not found", "no route %s", path);
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
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 511) != 0) {
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
    const char *listen = app->cfg->listen;
    if (strncmp(listen, "unix:", 5) == 0) {
        if (bind_unix(sv, listen + 5, err, errlen) != 0)
            return -1;
    } else {
        char host[256];
        int port;
        if (config_split_hostport(listen, host, sizeof host, &port) != 0) {
            snprintf(err, errlen, "bad listen address %s", listen);
            return -1;
        }
        sv->bound[0] = evhttp_bind_socket_with_handle(sv->http, host, (ev_uint16_t)port);
        if (!sv->bound[0]) {
            snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(errno));
            return -1;
        }
        sv->nbound = 1;
    }
    log_notice(&app->log, "server", "listening on %s", listen);
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
        evhttp_free(sv->http);
    free(sv);
    app->server = NULL;
}
