/* server — the HTTP side: listeners, routing, authentication, answers.
 *
 * Each request gets a struct request that carries it through Redis and upstream
 * callbacks.  If the client goes away first, req becomes NULL and the answer is
 * dropped; the struct itself is freed only by request_finish (every request_reply_*
 * calls it), so callbacks never touch freed memory. */
#ifndef WAGUARD_SERVER_H
#define WAGUARD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "app.h"
#include "metrics.h"

enum role { ROLE_NONE, ROLE_API, ROLE_ADMIN };

struct request {
    struct app *app;
    struct evhttp_request *req;     /* NULL once the client went away */
    enum route route;
    long long start_ms;
    char caller[64];                /* the token's name, "anonymous" without tokens (a copy:
                                       a reload may free the token list meanwhile) */
    char arg[2][160];               /* path segments the route captured, decoded */
    void *data;                     /* the handler's own state, freed with free_data */
    void (*free_data)(void *data);
};

typedef void route_fn(struct request *r);

int server_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void server_free(struct app *app);
/* Closes the listeners (draining on shutdown). */
void server_stop_accepting(struct app *app);
/* Requests being handled now, and answers not yet written out. */
int server_in_flight(const struct app *app);
/* Applies the limits of a reloaded configuration. */
void server_reconfigure(struct app *app);

/* Checks the caller's bearer token for role; on failure answers 401/403 and returns -1. */
int request_authorize(struct request *r, enum role need) __attribute__((warn_unused_result));

/* The raw body (contiguous, owned by libevent, valid until the answer). */
const char *request_body(struct request *r, size_t *len);
/* A query parameter, decoded, copied into buf; NULL when absent. */
const char *request_query(struct request *r, const char *name, char *buf, size_t buflen);
const char *request_header(struct request *r, const char *name);
/* Marks the request as waiting for a callback (watches for the client going away). */
void request_hold(struct request *r);

/* Answers and finishes the request.  body is consumed (freed). */
void request_reply_json(struct request *r, int code, cJSON *body);
void request_reply_raw(struct request *r, int code, const char *ctype, const char *body, size_t len);
/* Answers the WABA error envelope {"errors":[{"code","title","details"}]}. */
void request_reply_error(struct request *r, int code, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Compares a presented secret with a known one in constant time. */
bool server_secret_equal(const char *presented, size_t plen, const char *known);

#endif
