/* request — the toolkit every route handler uses: what a request says (body, query,
 * headers, the caller's token), and the answers (JSON, raw, the error envelopes).
 *
 * A struct request carries one HTTP request through Redis and upstream callbacks.  It
 * is made by the server (server.h), which authorizes the caller by the route's role and
 * watches the connection before the handler runs: if the client goes away first, req
 * becomes NULL and the answer is dropped, but the struct stays until an answer is given,
 * so callbacks never touch freed memory.  Every handler answers exactly once, with one of
 * request_reply_*; that frees the request and its data. */
#ifndef WAGUARD_REQUEST_H
#define WAGUARD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "app.h"
#include "metrics.h"

/* Who may call a route.  ROLE_ACK: an api token, or only an admin token when [identity]
 * ack = manual (acknowledging is then an operator's decision). */
enum role { ROLE_NONE, ROLE_API, ROLE_ADMIN, ROLE_ACK };

struct request;

/* How the server follows a request: answering() just before an answer is handed to
 * libevent, finished() when the request is done (ctx: the server's). */
struct request_hooks {
    void (*answering)(struct request *r, struct evhttp_request *req, void *ctx);
    void (*finished)(struct request *r, void *ctx);
    void *ctx;
};

struct request {
    struct app *app;
    struct evhttp_request *req;     /* NULL once the client went away */
    const struct request_hooks *hooks;
    enum route route;               /* what the metrics count it as */
    long long start_ms;
    char caller[64];                /* the token's name, "anonymous" without tokens (a copy:
                                       a reload may free the token list meanwhile) */
    enum role caller_role;          /* what the caller's token is (ROLE_NONE: none needed) */
    bool graph;                     /* a Cloud (Graph) route: waguard's errors in Graph's envelope */
    bool query_too_long;            /* a query value did not fit (request_query) */
    struct evkeyvalq *query;        /* the query's parameters, read at the first request_query
                                       and kept for the others (owned) */
    bool query_unreadable;          /* the query could not be read: every parameter is absent */
    char arg[2][160];               /* path segments the route captured, decoded */
    void *data;                     /* the handler's own state, freed with free_data */
    void (*free_data)(void *data);
};

typedef void route_fn(struct request *r);

/* A request for req (owned by libevent).  NULL when out of memory. */
struct request *request_new(struct app *app, struct evhttp_request *req, const struct request_hooks *hooks);

/* Checks the caller's bearer token for role; on failure answers 401 or 403 and returns -1. */
int request_authorize(struct request *r, enum role need) __attribute__((warn_unused_result));

/* The raw body (contiguous, owned by libevent, valid until the answer). */
const char *request_body(struct request *r, size_t *len);
/* A query parameter, decoded, copied into buf; NULL when absent.  A value that does not
 * fit buf reads as "" and sets request.query_too_long (the routes answer 400), never as
 * a shorter value. */
const char *request_query(struct request *r, const char *name, char *buf, size_t buflen);
/* The raw query string, or NULL. */
const char *request_query_string(struct request *r);
const char *request_header(struct request *r, const char *name);
/* The token of "Authorization: Bearer <token>", or NULL. */
const char *request_bearer(struct request *r);
/* Adds a header to the answer (before it is given). */
void request_add_header(struct request *r, const char *name, const char *value);

/* Answers and finishes the request.  body is consumed (freed). */
void request_reply_json(struct request *r, int code, cJSON *body);
void request_reply_raw(struct request *r, int code, const char *ctype, const char *body, size_t len);
/* waguard's own error, in the envelope the route's callers speak: the WABA client's
 * {"errors":[{"code","title","details"}]}, or Graph's on a Cloud route (code 100 for a
 * bad request, as Graph's "Invalid parameter"; else the HTTP status). */
void request_reply_error(struct request *r, int code, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The store could not do it (why: store_failure()): 503, the answer every route gives. */
void request_reply_unavailable(struct request *r, const char *why);
/* A trace id for this request (Graph's fbtrace_id, and the log). */
void request_trace(const struct request *r, char *buf, size_t len);

#endif
