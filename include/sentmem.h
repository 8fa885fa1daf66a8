/* sentmem — what waguard remembers of a send it forwarded: the record it went to, the
 * business number and the pinned hash, by the message id the answer gave, for [proxy]
 * sent_ttl_s (a failed status may name nobody else: include/schema.h, SCHEMA_KEY_SENT);
 * and the send's numbers taken off the contact-check budget (SCHEMA_KEY_CHECKS).
 *
 * The common case calls no function: with [redis] min_replicas = 0 it is two plain
 * commands one after the other (store_pipeline, no transaction: the SET may be repeated
 * and neither needs the other's result), the memory's SET … EX and, when the budget
 * counts, EXISTS of the budget's set.  Only when that set exists (a number was
 * checked and not sent to) does apply's SENT operation follow, to take the send's numbers
 * off it (its rule stays apply's: src/lua/apply.lua).  With replicas to confirm, the whole
 * of it is apply's SENT operation (store_apply, then WAIT). */
#ifndef WAGUARD_SENTMEM_H
#define WAGUARD_SENTMEM_H

#include "app.h"
#include "store.h"

struct sentmem {
    const char *w;          /* the record the gate decided the send for */
    const char *mid;        /* the message id the answer gave; NULL: nothing to remember */
    const char *number;     /* the business number ("" for On-Premises' one) */
    const char *hash;       /* the identity hash the send was pinned to, or NULL */
    const char *spec;       /* the recipient's forms (recipient_spec); "" when the budget is off */
};

/* Records s (its strings are copied before the call returns).  cb, once, later, from the
 * loop: an array when it is recorded, an error reply (Redis refused a part of it), or
 * NULL (no answer); the same contract as store_apply.  -1: out of memory, nothing sent
 * and cb not called. */
int sentmem_record(struct app *app, const struct sentmem *s, store_cb *cb, void *arg)
    __attribute__((warn_unused_result));

#endif
