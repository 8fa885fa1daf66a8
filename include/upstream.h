/* upstream — the client of the WABA client's /v1 API (or a hosted API with the same
 * surface), on libevent's evhttp client.
 *
 * http:// and https:// (libevent_openssl; the peer is verified against [upstream]
 * ca_file or the system store, with a host-name or IP check), kept-alive connections
 * (max_in_flight of them, requests beyond that wait in order, at most queue_max),
 * timeout_ms per request counted from when it was queued,
 * and the auth modes of [upstream] auth.  With auth = login one login is in flight at
 * a time; the token is renewed before it expires and once after a 401. */
#ifndef WAGUARD_UPSTREAM_H
#define WAGUARD_UPSTREAM_H

#include <stddef.h>

#include <event2/http.h>

#include "app.h"

/* The longest Content-Type a request sent on may carry, NUL included. */
#define UPSTREAM_CONTENT_TYPE_MAX 128

struct upstream_reply {
    int status;              /* HTTP status; 0 when there was no answer */
    const char *body;        /* borrowed, NUL-terminated, valid during the callback */
    size_t len;
    const char *error;       /* why there was no answer (status 0), else NULL */
    const char *content_type; /* the answer's Content-Type, borrowed; NULL when none */
};

typedef void upstream_cb(struct app *app, const struct upstream_reply *rep, void *arg);

int upstream_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void upstream_free(struct app *app);
/* A reload builds first, then swaps: upstream_prepare() builds everything cfg needs
 * (URL, TLS context from ca_file, connection slots) without touching the running
 * client, and fails with err when cfg cannot work; upstream_apply() then cannot fail:
 * it takes p (consumed), closes idle connections and lets busy ones finish on the old
 * settings, which are freed once their last request is done.  upstream_prep_free()
 * drops a prepared set that is not applied (--check-config, a refused reload). */
struct upstream_prep;
int upstream_prepare(const struct config *cfg, struct upstream_prep **p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void upstream_apply(struct app *app, struct upstream_prep *p);
void upstream_prep_free(struct upstream_prep *p);

/* Queues a request; path includes any query.  body may be NULL.  cb is called exactly
 * once, always from the event loop (never from inside this call), within
 * [upstream] timeout_ms of this call (waiting in the queue counts), or at once with an
 * error when [upstream] queue_max requests already wait or logins are backing off.
 * Returns 0, or -1 when out of memory. */
int upstream_request(struct app *app, enum evhttp_cmd_type method, const char *path,
                     const char *body, size_t len, upstream_cb *cb, void *arg)
    __attribute__((warn_unused_result));
/* The same with the body's Content-Type (NULL: application/json): forwarded media. */
int upstream_request_typed(struct app *app, enum evhttp_cmd_type method, const char *path,
                           const char *body, size_t len, const char *content_type, upstream_cb *cb, void *arg)
    __attribute__((warn_unused_result));

#endif
