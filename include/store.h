/* store — Redis, the only state, through hiredis's async API on the app's event loop.
 *
 * The store keeps one connection, reconnecting with backoff when it drops, and runs
 * the scripts in src/lua/ (EVALSHA, falling back to EVAL when Redis has not seen one).
 * A reply lives only inside its callback; a NULL reply means Redis did not answer (the
 * connection is down or went down): the caller must treat the write as not confirmed.
 *
 * Where it connects: [redis] url, or with [redis] sentinels the primary that the sentinels
 * name (sentinel.h); every connection checks ROLE and is used only on a primary, and a
 * READONLY answer, or the sentinels' +switch-master, makes it connect again.  With
 * [redis] min_replicas, store_apply's bodies are confirmed only after WAIT. */
#ifndef WAGUARD_STORE_H
#define WAGUARD_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "app.h"

enum store_script {
    SCRIPT_APPLY, SCRIPT_GATE, SCRIPT_CLAIM, SCRIPT_ACK_RESULT, SCRIPT_ENQUEUE,
    SCRIPT_LIST, SCRIPT_GET, SCRIPT_STATS, SCRIPT_RELEASE, SCRIPT_BLOCKSYNC, SCRIPT_BUDGET, SCRIPT_COUNT
};

/* reply: borrowed, valid during the call only; NULL when Redis did not answer.
 * An error reply (REDIS_REPLY_ERROR) is passed through as well. */
typedef void store_cb(struct app *app, redisReply *reply, void *arg);

int store_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void store_free(struct app *app);

/* True while connected and answering. */
bool store_ready(const struct app *app);
/* Why the store is not ready, for /readyz and logs. */
const char *store_status(const struct app *app);

/* Runs a script with the prefix and the clock prepended to args.  Returns 0 when sent
 * (cb will be called exactly once), -1 when Redis is not connected (cb is not called). */
int store_eval(struct app *app, enum store_script s, int argc, const char **argv,
               const size_t *argvlen, store_cb *cb, void *arg) __attribute__((warn_unused_result));

/* Applies operations (JSON, see webhook_parse.h) with the running policies; with
 * force_auto the acknowledgement is queued whatever [identity] ack says (a newer
 * identity learnt while acknowledging).  Bodies queued in one loop turn go to Redis
 * as one call (group commit); cb gets this body's own element of the answer.  With
 * [redis] min_replicas = N, a WAIT N follows the call on the same connection and cb
 * gets the answer only once N replicas have it, else an error reply "NOREPLICAS …"
 * (the write is on the primary but not confirmed: answer 503).  Same contract as
 * store_eval: 0 and cb called once, later, or -1 and cb never called. */
int store_apply(struct app *app, const char *ops_json, bool force_auto, store_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* A plain command (PING, XADD …); same contract as store_eval. */
int store_command(struct app *app, store_cb *cb, void *arg, const char *fmt, ...)
    __attribute__((warn_unused_result));

#endif
