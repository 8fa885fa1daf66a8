/*
 * bench-ceiling — the "ceiling probe" for the waguard benchmark.
 *
 * The least work a libevent + hiredis + cJSON daemon can do for the two hot
 * routes, so that waguard's figures can be read against it:
 *
 *   POST /webhook          read the body, parse it with cJSON, ONE async Redis
 *                          write (HSET of a few bytes on the sender's key),
 *                          answer 200 from the Redis callback.
 *   GET  /v1/gate/{wa_id}  ONE async HMGET, answer 200 with a small JSON
 *                          from the Redis callback.
 *   POST /v1/messages      the gated forward, the send proxy's reference (with
 *                          --upstream-port): parse the body with cJSON, ONE async
 *                          HMGET of the recipient's key, then forward the body on a
 *                          keep-alive connection to the upstream (the benchmark's
 *                          bench/upstream_stub.c) and answer its status and body.
 *                          --upstream-conns connections (64, as waguard's
 *                          max_in_flight in the benchmark), requests wait in order
 *                          for a free one.  Refuses (423) only a recipient whose key
 *                          says id_ack 0: the cost of a decision, not its rules.
 *
 * No auth, no dedup, no identity logic, no metrics.  Not for production.
 *
 * Build: cc -std=c11 -O2 -Wall -Wextra -Werror bench/ceiling.c \
 *          $(pkg-config --cflags --libs libevent libcjson hiredis)
 * Usage: bench-ceiling [--host 127.0.0.1] [--port 0] [--redis-host 127.0.0.1]
 *                      [--redis-port 6379 | --redis-socket PATH]
 *                      [--upstream-port N [--upstream-conns 64]]
 *        Prints "ceiling listening on http://HOST:PORT" once bound.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <cJSON.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libevent.h>

#define KEY_PREFIX "ceiling"
#define MAX_BODY (1024 * 1024)
#define MAX_ID 64

struct req_ctx;

/* One keep-alive connection to the upstream (the gated forward). */
struct slot {
    struct evhttp_connection *evcon;
    struct req_ctx *ctx; /* the request it carries, NULL when free */
};

struct probe {
    struct event_base *base;
    struct evhttp *http;
    redisAsyncContext *redis; /* NULL once disconnected */
    unsigned long requests;
    int upstream_port;        /* 0: no POST /v1/messages */
    struct slot *slots;
    int nslots;
    struct req_ctx *waiting, **waiting_tail; /* forwards waiting for a free slot */
};

enum route { ROUTE_WEBHOOK, ROUTE_GATE, ROUTE_SEND };

/* One per request, carried through the Redis callback (and the forward). */
struct req_ctx {
    struct probe *probe;
    struct evhttp_request *req; /* NULL when the client went away first */
    struct evhttp_connection *conn;
    enum route route;
    char wa_id[MAX_ID];
    struct evbuffer *body;      /* ROUTE_SEND: the body to forward (owned) */
    char *auth;                 /* ROUTE_SEND: the Authorization header, or NULL (owned) */
    struct req_ctx *next;       /* in probe->waiting */
};

static void ctx_free(struct req_ctx *ctx)
{
    if (ctx->body != NULL)
        evbuffer_free(ctx->body);
    free(ctx->auth);
    free(ctx);
}

static void reply_json(struct evhttp_request *req, int code, const char *reason,
                       const char *body, size_t len)
{
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(out, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void reply_error(struct evhttp_request *req, int code, const char *reason)
{
    char buf[160];
    int n = snprintf(buf, sizeof buf,
                     "{\"errors\":[{\"code\":%d,\"title\":\"%s\"}]}", code, reason);
    reply_json(req, code, reason, buf, (size_t)n);
}

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    struct req_ctx *ctx = arg;
    (void)conn;
    ctx->req = NULL; /* libevent frees the request with the connection */
    ctx->conn = NULL;
}

/* The context of a request that goes on to Redis; NULL once the request is answered here:
 * 503 without a Redis connection, 500 without memory. */
static struct req_ctx *ctx_new(struct probe *p, struct evhttp_request *req, enum route r)
{
    if (p->redis == NULL) {
        reply_error(req, 503, "Service Unavailable");
        return NULL;
    }
    struct req_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        reply_error(req, 500, "Internal Server Error");
        return NULL;
    }
    ctx->probe = p;
    ctx->req = req;
    ctx->route = r;
    ctx->conn = evhttp_request_get_connection(req);
    if (ctx->conn != NULL)
        evhttp_connection_set_closecb(ctx->conn, on_conn_close, ctx);
    return ctx;
}

/* Detach the context from its connection; returns the request or NULL. */
static struct evhttp_request *ctx_take(struct req_ctx *ctx)
{
    if (ctx->conn != NULL)
        evhttp_connection_set_closecb(ctx->conn, NULL, NULL);
    return ctx->req;
}

static void forward(struct req_ctx *ctx);

static void on_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct req_ctx *ctx = privdata;
    redisReply *reply = r;
    struct evhttp_request *req = ctx_take(ctx);
    (void)ac;

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        reply_error(req, 503, "Service Unavailable");
        goto out;
    }
    if (ctx->route == ROUTE_SEND) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
            reply->element[2]->type == REDIS_REPLY_STRING && reply->element[2]->str[0] == '0') {
            reply_error(req, 423, "Locked");
            goto out;
        }
        forward(ctx);
        return;
    }
    if (ctx->route == ROUTE_WEBHOOK) {
        static const char ok[] = "{\"ok\":true,\"items\":1,\"duplicates\":0}";
        reply_json(req, 200, "OK", ok, sizeof ok - 1);
    } else {
        char buf[384];
        const char *hash = NULL;
        long long ts = 0;
        int ack = 0;
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
            if (reply->element[0]->type == REDIS_REPLY_STRING)
                hash = reply->element[0]->str;
            if (reply->element[1]->type == REDIS_REPLY_STRING)
                ts = strtoll(reply->element[1]->str, NULL, 10) / 1000; /* ms -> s */
            if (reply->element[2]->type == REDIS_REPLY_STRING)
                ack = reply->element[2]->str[0] == '1';
        }
        int n;
        if (hash != NULL && strlen(hash) < 128)
            n = snprintf(buf, sizeof buf,
                         "{\"wa_id\":\"%s\",\"allowed\":true,\"reasons\":[],"
                         "\"identity\":{\"hash\":\"%s\",\"created_timestamp\":%lld,"
                         "\"acknowledged\":%s}}",
                         ctx->wa_id, hash, ts, ack ? "true" : "false");
        else
            n = snprintf(buf, sizeof buf,
                         "{\"wa_id\":\"%s\",\"allowed\":true,\"reasons\":[],"
                         "\"identity\":null}",
                         ctx->wa_id);
        reply_json(req, 200, "OK", buf, (size_t)n);
    }
out:
    ctx_free(ctx);
}

/* Copy a wa_id-ish string (digits, '+', '.', letters) into dst; 0 on success. */
static int copy_id(char *dst, size_t cap, const char *src, size_t len)
{
    if (len == 0 || len >= cap)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
              (c >= 'a' && c <= 'z') || c == '+' || c == '.'))
            return -1;
        dst[i] = c;
    }
    dst[len] = '\0';
    return 0;
}

static const char *find_sender(const cJSON *root)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    const cJSON *m = cJSON_IsArray(msgs) ? cJSON_GetArrayItem(msgs, 0) : NULL;
    const cJSON *from = m != NULL ? cJSON_GetObjectItemCaseSensitive(m, "from") : NULL;
    if (cJSON_IsString(from))
        return from->valuestring;
    const cJSON *sts = cJSON_GetObjectItemCaseSensitive(root, "statuses");
    const cJSON *s = cJSON_IsArray(sts) ? cJSON_GetArrayItem(sts, 0) : NULL;
    const cJSON *rid = s != NULL ? cJSON_GetObjectItemCaseSensitive(s, "recipient_id") : NULL;
    if (cJSON_IsString(rid))
        return rid->valuestring;
    return NULL;
}

static void handle_webhook(struct probe *p, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > MAX_BODY) {
        reply_error(req, 413, "Payload Too Large");
        return;
    }
    const char *body = (const char *)evbuffer_pullup(in, -1);
    cJSON *root = body != NULL ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        reply_error(req, 400, "Bad Request");
        return;
    }
    char who[MAX_ID] = "unknown";
    const char *from = find_sender(root);
    if (from != NULL && copy_id(who, sizeof who, from, strlen(from)) != 0)
        strcpy(who, "unknown");
    cJSON_Delete(root);

    struct req_ctx *ctx = ctx_new(p, req, ROUTE_WEBHOOK);
    if (ctx == NULL)
        return;
    char ts[24];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    if (redisAsyncCommand(p->redis, on_redis_reply, ctx,
                          "HSET " KEY_PREFIX ":user:{%s} last_in %s", who, ts) != REDIS_OK) {
        reply_error(ctx_take(ctx), 503, "Service Unavailable");
        ctx_free(ctx);
    }
}

static void handle_gate(struct probe *p, struct evhttp_request *req, const char *path)
{
    const char *id = path + strlen("/v1/gate/");
    if (*id == '+')
        id++; /* "+CC..." is the international form of the same wa_id */
    size_t len = strcspn(id, "?/");
    char wa_id[MAX_ID];
    if (copy_id(wa_id, sizeof wa_id, id, len) != 0) {
        reply_error(req, 400, "Bad Request");
        return;
    }
    struct req_ctx *ctx = ctx_new(p, req, ROUTE_GATE);
    if (ctx == NULL)
        return;
    memcpy(ctx->wa_id, wa_id, len + 1);
    if (redisAsyncCommand(p->redis, on_redis_reply, ctx,
                          "HMGET " KEY_PREFIX ":user:{%s} id_hash id_ts id_ack",
                          wa_id) != REDIS_OK) {
        reply_error(ctx_take(ctx), 503, "Service Unavailable");
        ctx_free(ctx);
    }
}


/* ---- the gated forward: POST /v1/messages to the upstream ---------------- */

static int slot_open(struct probe *p, struct slot *s)
{
    s->evcon = evhttp_connection_base_new(p->base, NULL, "127.0.0.1", (ev_uint16_t)p->upstream_port);
    if (s->evcon == NULL)
        return -1;
    evhttp_connection_set_retries(s->evcon, 0);
    return 0;
}

static void start_forward(struct slot *s, struct req_ctx *ctx);

/* The upstream answered (or failed: ureq NULL): relay it, then give the slot to the next. */
static void on_upstream(struct evhttp_request *ureq, void *arg)
{
    struct slot *s = arg;
    struct req_ctx *ctx = s->ctx;
    struct probe *p = ctx->probe;
    s->ctx = NULL;
    struct evhttp_request *req = ctx_take(ctx);
    if (req != NULL) {
        int code = ureq != NULL ? evhttp_request_get_response_code(ureq) : 0;
        if (code <= 0) {
            reply_error(req, 502, "Bad Gateway");
        } else {
            struct evbuffer *in = evhttp_request_get_input_buffer(ureq);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
            evhttp_send_reply(req, code, evhttp_request_get_response_code_line(ureq), in);
        }
    }
    ctx_free(ctx);
    struct req_ctx *next = p->waiting;
    if (next != NULL) {
        p->waiting = next->next;
        if (p->waiting == NULL)
            p->waiting_tail = &p->waiting;
        start_forward(s, next);
    }
}

static void start_forward(struct slot *s, struct req_ctx *ctx)
{
    struct evhttp_request *ureq = evhttp_request_new(on_upstream, s);
    if (ureq == NULL || (s->evcon == NULL && slot_open(ctx->probe, s) != 0)) {
        if (ureq != NULL)
            evhttp_request_free(ureq);
        reply_error(ctx_take(ctx), 502, "Bad Gateway");
        ctx_free(ctx);
        return;
    }
    s->ctx = ctx;
    struct evkeyvalq *h = evhttp_request_get_output_headers(ureq);
    evhttp_add_header(h, "Host", "127.0.0.1");
    evhttp_add_header(h, "Content-Type", "application/json");
    if (ctx->auth != NULL)
        evhttp_add_header(h, "Authorization", ctx->auth);
    evbuffer_add_buffer(evhttp_request_get_output_buffer(ureq), ctx->body);
    if (evhttp_make_request(s->evcon, ureq, EVHTTP_REQ_POST, "/v1/messages") != 0) {
        /* libevent freed ureq and called nothing; the connection is suspect */
        s->ctx = NULL;
        evhttp_connection_free(s->evcon);
        s->evcon = NULL;
        reply_error(ctx_take(ctx), 502, "Bad Gateway");
        ctx_free(ctx);
    }
}

/* A free slot takes the request; without one it waits, in order. */
static void forward(struct req_ctx *ctx)
{
    struct probe *p = ctx->probe;
    for (int i = 0; i < p->nslots; i++)
        if (p->slots[i].ctx == NULL) {
            start_forward(&p->slots[i], ctx);
            return;
        }
    ctx->next = NULL;
    *p->waiting_tail = ctx;
    p->waiting_tail = &ctx->next;
}

static void handle_send(struct probe *p, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    cJSON *root = body != NULL ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(root, "to");
    char wa_id[MAX_ID];
    if (!cJSON_IsString(to) ||
        copy_id(wa_id, sizeof wa_id, to->valuestring + (to->valuestring[0] == '+'),
                strlen(to->valuestring + (to->valuestring[0] == '+'))) != 0) {
        cJSON_Delete(root);
        reply_error(req, 400, "Bad Request");
        return;
    }
    cJSON_Delete(root);
    struct req_ctx *ctx = ctx_new(p, req, ROUTE_SEND);
    if (ctx == NULL)
        return;
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    ctx->body = evbuffer_new();
    ctx->auth = auth != NULL ? strdup(auth) : NULL;
    if (ctx->body == NULL || (auth != NULL && ctx->auth == NULL) || evbuffer_add_buffer(ctx->body, in) != 0) {
        reply_error(ctx_take(ctx), 500, "Internal Server Error");
        ctx_free(ctx);
        return;
    }
    memcpy(ctx->wa_id, wa_id, strlen(wa_id) + 1);
    if (redisAsyncCommand(p->redis, on_redis_reply, ctx,
                          "HMGET " KEY_PREFIX ":user:{%s} id_hash last_in id_ack", wa_id) != REDIS_OK) {
        reply_error(ctx_take(ctx), 503, "Service Unavailable");
        ctx_free(ctx);
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    p->requests++;

    if (cmd == EVHTTP_REQ_POST && strncmp(uri, "/webhook", 8) == 0 &&
        (uri[8] == '\0' || uri[8] == '?'))
        handle_webhook(p, req);
    else if (cmd == EVHTTP_REQ_GET && strncmp(uri, "/v1/gate/", 9) == 0)
        handle_gate(p, req, uri);
    else if (cmd == EVHTTP_REQ_POST && p->upstream_port > 0 && strcmp(uri, "/v1/messages") == 0)
        handle_send(p, req);
    else if (cmd == EVHTTP_REQ_GET && (strcmp(uri, "/healthz") == 0 || strcmp(uri, "/readyz") == 0))
        reply_json(req, 200, "OK", "{\"ok\":true}", 11);
    else
        reply_error(req, 404, "Not Found");
}

static void on_redis_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        fprintf(stderr, "ceiling: redis connect: %s\n", ac->errstr);
        struct probe *p = ac->data;
        p->redis = NULL;
        event_base_loopbreak(p->base);
    }
}

static void on_redis_disconnect(const redisAsyncContext *ac, int status)
{
    struct probe *p = ac->data;
    if (status != REDIS_OK)
        fprintf(stderr, "ceiling: redis disconnected: %s\n", ac->errstr);
    p->redis = NULL; /* hiredis frees the context after this returns */
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct probe *p = arg;
    (void)sig;
    (void)what;
    event_base_loopbreak(p->base);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-ceiling [--host H] [--port N] [--redis-host H] "
               "[--redis-port N | --redis-socket PATH] [--upstream-port N [--upstream-conns N]]\n");
}

static int parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *rhost = "127.0.0.1", *rsock = NULL;
    int port = 0, rport = 6379, uport = 0, uconns = 64;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"redis-host", required_argument, NULL, 'H'},
        {"redis-port", required_argument, NULL, 'P'},
        {"redis-socket", required_argument, NULL, 'S'},
        {"upstream-port", required_argument, NULL, 'u'},
        {"upstream-conns", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, '?'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': host = optarg; break;
        case 'H': rhost = optarg; break;
        case 'S': rsock = optarg; break;
        case 'p': case 'P': case 'u': case 'n': {
            int *to = c == 'p' ? &port : c == 'P' ? &rport : c == 'u' ? &uport : &uconns;
            if (parse_port(optarg, to) != 0 || (c == 'n' && uconns < 1)) {
                usage(stderr);
                return 2;
            }
            break;
        }
        default:
            usage(stderr);
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    struct probe p = {0};
    p.base = event_base_new();
    if (p.base == NULL) {
        fprintf(stderr, "ceiling: event_base_new failed\n");
        return 1;
    }
    p.waiting_tail = &p.waiting;
    p.upstream_port = uport;
    if (uport > 0) {
        p.nslots = uconns;
        p.slots = calloc((size_t)uconns, sizeof *p.slots);
        if (p.slots == NULL) {
            fprintf(stderr, "ceiling: out of memory\n");
            return 1;
        }
    }

    p.redis = rsock != NULL ? redisAsyncConnectUnix(rsock) : redisAsyncConnect(rhost, rport);
    if (p.redis == NULL || p.redis->err) {
        fprintf(stderr, "ceiling: redis: %s\n", p.redis ? p.redis->errstr : "out of memory");
        return 1;
    }
    p.redis->data = &p;
    redisLibeventAttach(p.redis, p.base);
    redisAsyncSetConnectCallback(p.redis, on_redis_connect);
    redisAsyncSetDisconnectCallback(p.redis, on_redis_disconnect);

    p.http = evhttp_new(p.base);
    if (p.http == NULL) {
        fprintf(stderr, "ceiling: evhttp_new failed\n");
        return 1;
    }
    evhttp_set_max_body_size(p.http, MAX_BODY);
    evhttp_set_allowed_methods(p.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_gencb(p.http, on_request, &p);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(p.http, host, (ev_uint16_t)port);
    if (bound == NULL) {
        fprintf(stderr, "ceiling: cannot bind %s:%d\n", host, port);
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bound);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("ceiling listening on http://%s:%d\n", host, port);
    fflush(stdout);

    struct event *sigterm = evsignal_new(p.base, SIGTERM, on_signal, &p);
    struct event *sigint = evsignal_new(p.base, SIGINT, on_signal, &p);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);

    event_base_dispatch(p.base);

    fprintf(stderr, "ceiling: stopping after %lu requests\n", p.requests);
    event_free(sigterm);
    event_free(sigint);
    evhttp_free(p.http);
    for (int i = 0; i < p.nslots; i++)
        if (p.slots[i].evcon != NULL)
            evhttp_connection_free(p.slots[i].evcon);
    free(p.slots);
    if (p.redis != NULL)
        redisAsyncFree(p.redis);
    event_base_free(p.base);
    return 0;
}
