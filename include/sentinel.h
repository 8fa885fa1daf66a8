/* sentinel — finds the Redis primary through Redis Sentinel, on the app's event loop.
 *
 * hiredis 0.14 knows nothing of Sentinel; this is the few commands it takes:
 * SENTINEL get-master-addr-by-name asked of each sentinel in turn, and a second
 * connection SUBSCRIBEd to +switch-master that tells when the sentinels moved the
 * primary.  Sentinels are asked without AUTH and without TLS (hiredis 0.14 has no
 * TLS): keep them on a private network (docs/operations.md, "Redis Sentinel").  The store
 * (store.c) owns the one struct sentinel and checks ROLE on what it is given. */
#ifndef WAGUARD_SENTINEL_H
#define WAGUARD_SENTINEL_H

#include <stddef.h>

#include "app.h"

struct sentinel;

/* host: borrowed, valid during the call; NULL when no sentinel named a primary (the
 * reason is in sentinel_status()). */
typedef void sentinel_cb(struct app *app, const char *host, int port);

/* list: "host:port,host:port" ([redis] sentinels, validated by config.c); name: the
 * service ([redis] master_name).  Returns NULL with err set on failure. */
struct sentinel *sentinel_new(struct app *app, const char *list, const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void sentinel_free(struct sentinel *s);

/* Asks the sentinels in turn, starting with the last one that answered, each within
 * [redis] timeout_ms; done is called once, later (never inside this call).  A second
 * call while one is under way only replaces done. */
void sentinel_ask(struct sentinel *s, sentinel_cb *done);

/* Keeps a subscription to +switch-master on one sentinel (the next one when it drops,
 * after a second); moved is called with the new primary of our service each time. */
void sentinel_watch(struct sentinel *s, sentinel_cb *moved);

/* The last failure, for logs and /readyz. */
const char *sentinel_status(const struct sentinel *s);

#endif
