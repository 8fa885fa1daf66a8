/* store — Redis, the only state, through hiredis's async API on the app's event loop.
 *
 * The store keeps one connection, reconnecting with backoff when it drops, and calls the
 * functions of one library (src/lua/, loaded with FUNCTION LOAD at every connection;
 * Redis 7.0 or later).  The library is named after its own SHA-1 (waguard_<12 hex>), so
 * that two versions of waguard can share one Redis during an upgrade; a Redis that lost
 * it (FUNCTION FLUSH, a failover to a replica that never had it) gets it again and the
 * call is sent again.
 *
 * Every call's callback runs exactly once and always later, from the event loop, never
 * inside the call that asked: a reply lives only inside its callback (its elements are
 * made in its top's blocks, reply.h: never keep or free one alone); a NULL reply means
 * Redis did not answer (the connection is down, went down, or the call could not be
 * made): the caller treats the write as not confirmed.
 *
 * Where it connects: [redis] url, or with [redis] sentinels the primary that the
 * sentinels name (sentinel.h); every connection checks ROLE and is used only on a
 * primary, and a READONLY answer, or the sentinels' +switch-master, makes it connect
 * again.  With [redis] min_replicas, store_apply's bodies are confirmed only after WAIT. */
#ifndef WAGUARD_STORE_H
#define WAGUARD_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "app.h"
#include "ops.h"
#include "schema.h"

enum store_fn {
#define STORE_FN_(E, name, writes) STORE_##E,
    SCHEMA_FUNCTIONS(STORE_FN_)
#undef STORE_FN_
    STORE_FN_COUNT
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

/* Calls function fn with argv after the two arguments every function takes first (the
 * key prefix and the events stream's cap).  argvlen NULL: the strings' lengths.  cb is
 * called exactly once, later.  Returns 0, or -1 when out of memory or after store_free
 * (a callback run while waguard stops: an acknowledgement's outcome is then left to its
 * lease); cb is never called then. */
int store_call(struct app *app, enum store_fn fn, int argc, const char **argv, const size_t *argvlen,
               store_cb *cb, void *arg) __attribute__((warn_unused_result));

/* A plain command (PING, TIME …); the same contract as store_call. */
int store_command(struct app *app, store_cb *cb, void *arg, const char *fmt, ...)
    __attribute__((warn_unused_result));

/* Plain commands as one transaction (MULTI, the commands, EXEC): Redis runs them
 * together, as it runs a function.  Command i is argc[i] strings argv[i] (copied before
 * the call returns).  cb gets EXEC's answer (an array of the commands' replies, any of
 * them an error), an error reply, or NULL; the same contract as store_call.  Nothing here
 * is confirmed to replicas: reads, and writes only with [redis] min_replicas = 0 (with
 * replicas to confirm, a write goes through store_apply). */
int store_plain(struct app *app, int ncmds, const int *argc, const char *const *const *argv, store_cb *cb,
                void *arg) __attribute__((warn_unused_result));

/* Plain commands one after the other on the connection, not a transaction: for commands
 * that need no other's result and no isolation from other clients' (a write that may be
 * repeated, a read of a flag).  At most STORE_PIPELINE_MAX; command i is argc[i] strings
 * argv[i] (copied before the call returns).  cb, once, after the last reply: the last
 * command's reply; an error reply with Redis's words when any command was refused (the
 * others still ran); or NULL when any got no answer.  Otherwise the same contract as
 * store_plain (no replica confirms it). */
#define STORE_PIPELINE_MAX 8
int store_pipeline(struct app *app, int ncmds, const int *argc, const char *const *const *argv, store_cb *cb,
                   void *arg) __attribute__((warn_unused_result));

/* Applies one body's operations with the running policies; with force_auto the
 * acknowledgement is queued whatever [identity] ack says (a newer identity the worker
 * learnt).  Bodies given in one loop turn go to Redis as one call (group commit); cb gets
 * this body's counts (an array of APPLY_REPLY integers, read from its line of apply's
 * answer and valid during cb only), an error reply, or NULL.
 * The operations are counted in the metrics and the ones an operator wants to see
 * (identities, refusals, dead letters) logged when Redis confirms them.  With [redis]
 * min_replicas = N, a WAIT N follows the call on the same connection and cb gets the
 * answer only once N replicas have it, else an error reply "NOREPLICAS …" (the write is
 * on the primary but not confirmed: answer 503).  ops is only read; a void one (oom) is
 * answered NULL.  Same contract as store_call. */
int store_apply(struct app *app, const struct ops *ops, bool force_auto, store_cb *cb, void *arg)
    __attribute__((warn_unused_result));

/* due is called when an apply made acknowledgements due (the worker claims at once
 * rather than at its next poll). */
void store_on_due(struct app *app, void (*due)(struct app *app));

/* Why a reply is not what a function answers: NULL when it is an array (of at least min
 * elements), else the text to answer 503 with (Redis's error, or why it is down). */
const char *store_failure(const struct app *app, const redisReply *reply, size_t min);

/* A reply element as a number (integer, or a string of digits); def when neither. */
long long store_int(const redisReply *e, long long def);
/* A reply element as a string: NULL when it is nil or empty. */
const char *store_str(const redisReply *e);

#endif
