/*
 * bench-upstream-stub — a minimal WABA client (On-Premises /v1) for the benchmark.
 *
 * The least an upstream can do, so that waguard's send proxy is measured and not the
 * Python simulator (tests/waba_sim.py), which would be the bottleneck.  Answers from
 * memory, nothing stored, no checks beyond the route:
 *
 *   POST /v1/users/login                 200 {"users":[{"token":…,"expires_after":…}]}
 *   POST /v1/messages                    201 {"messages":[{"id":"gBEG…"}],"meta":…}
 *   PUT  /v1/contacts/{wa_id}/identity   200 {}   (waguard's acknowledgements succeed)
 *   GET  /v1/contacts/blocklist          200 an empty page (waguard's blocklist sync)
 *   GET  /v1/health                      200
 *   anything else                        404 in the WABA error envelope
 *
 * Not for production.  Prints the number of requests per route when it stops.
 *
 * Build: cc -std=c11 -O2 -Wall -Wextra -Werror bench/upstream_stub.c \
 *          $(pkg-config --cflags --libs libevent)
 * Usage: bench-upstream-stub [--host 127.0.0.1] [--port 0]
 *        Prints "stub listening on http://HOST:PORT" once bound.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#define MAX_BODY (1024 * 1024)

enum stub_route { R_LOGIN, R_MESSAGES, R_IDENTITY, R_BLOCKLIST, R_HEALTH, R_OTHER, R_COUNT };
static const char *const route_names[R_COUNT] = {
    "login", "messages", "identity_put", "blocklist", "health", "other",
};

struct stub {
    struct event_base *base;
    struct evhttp *http;
    unsigned long counts[R_COUNT];
    unsigned long next_id; /* message ids handed out */
};

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *body, size_t len)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add(out, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, code, reason, NULL);
}

#define REPLY_LIT(req, code, reason, lit) reply((req), (code), (reason), (lit), sizeof(lit) - 1)

static const char meta[] = "\"meta\":{\"api_status\":\"stable\",\"version\":\"2.41.3\"}";

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The path (the uri's first plen bytes) is exactly `path`. */
static int is(const char *uri, size_t plen, const char *path)
{
    return plen == strlen(path) && strncmp(uri, path, plen) == 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct stub *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    size_t plen = strcspn(uri, "?");
    char buf[256];
    int n;

    if (cmd == EVHTTP_REQ_POST && is(uri, plen, "/v1/users/login")) {
        s->counts[R_LOGIN]++;
        n = snprintf(buf, sizeof buf,
                     "{\"users\":[{\"token\":\"bench-stub-token\","
                     "\"expires_after\":\"2099-01-01 00:00:00+00:00\"}],%s}", meta);
        reply(req, 200, "OK", buf, (size_t)n);
    } else if (cmd == EVHTTP_REQ_POST && is(uri, plen, "/v1/messages")) {
        s->counts[R_MESSAGES]++;
        n = snprintf(buf, sizeof buf,
                     "{\"messages\":[{\"id\":\"gBEGkYiEB1VXAglK1ZE%010lu\"}],%s}",
                     ++s->next_id, meta);
        reply(req, 201, "Created", buf, (size_t)n);
    } else if (cmd == EVHTTP_REQ_PUT && starts(uri, "/v1/contacts/") && plen > 22 &&
               strncmp(uri + plen - 9, "/identity", 9) == 0) {
        s->counts[R_IDENTITY]++;
        REPLY_LIT(req, 200, "OK", "{}");
    } else if (cmd == EVHTTP_REQ_GET && is(uri, plen, "/v1/contacts/blocklist")) {
        s->counts[R_BLOCKLIST]++;
        n = snprintf(buf, sizeof buf,
                     "{\"contacts\":[],\"pagination\":{\"limit\":100,\"offset\":0,"
                     "\"total\":0},%s}", meta);
        reply(req, 200, "OK", buf, (size_t)n);
    } else if (cmd == EVHTTP_REQ_GET && is(uri, plen, "/v1/health")) {
        s->counts[R_HEALTH]++;
        REPLY_LIT(req, 200, "OK", "{\"health\":{\"gateway_status\":\"connected\"}}");
    } else {
        s->counts[R_OTHER]++;
        REPLY_LIT(req, 404, "Not Found",
                  "{\"errors\":[{\"code\":1006,\"title\":\"Resource not found\","
                  "\"details\":\"bench stub: no such route\"}]}");
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct stub *s = arg;
    (void)sig;
    (void)what;
    event_base_loopbreak(s->base);
}

static int parse_port(const char *str, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(str, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'h') {
            host = optarg;
        } else if (c == 'p' && parse_port(optarg, &port) == 0) {
            continue;
        } else {
            fprintf(stderr, "usage: bench-upstream-stub [--host H] [--port N]\n");
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    struct stub s = {0};
    s.base = event_base_new();
    s.http = s.base != NULL ? evhttp_new(s.base) : NULL;
    if (s.http == NULL) {
        fprintf(stderr, "stub: cannot create the event base or the HTTP server\n");
        return 1;
    }
    evhttp_set_max_body_size(s.http, MAX_BODY);
    evhttp_set_allowed_methods(s.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT);
    evhttp_set_gencb(s.http, on_request, &s);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(s.http, host, (ev_uint16_t)port);
    if (bound == NULL) {
        fprintf(stderr, "stub: cannot bind %s:%d\n", host, port);
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) == 0 &&
        ss.ss_family == AF_INET)
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("stub listening on http://%s:%d\n", host, port);
    fflush(stdout);

    struct event *sigterm = evsignal_new(s.base, SIGTERM, on_signal, &s);
    struct event *sigint = evsignal_new(s.base, SIGINT, on_signal, &s);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);

    event_base_dispatch(s.base);

    fprintf(stderr, "stub: stopping;");
    for (int i = 0; i < R_COUNT; i++)
        fprintf(stderr, " %s=%lu", route_names[i], s.counts[i]);
    fprintf(stderr, "\n");
    event_free(sigterm);
    event_free(sigint);
    evhttp_free(s.http);
    event_base_free(s.base);
    return 0;
}
