/* webhook_parse — a webhook body into the operations the store applies.
 *
 * The envelope (On-Premises: top-level contacts/messages/statuses/errors; Cloud API: the
 * same arrays inside entry[].changes[].value, and the user_id_update field) is kept apart
 * from the item handlers, so both platforms share them.  Each understood item becomes one
 * or more operations (ops.h).  The parser never fails on an item: what it cannot
 * understand becomes a dead letter, and when that item says a user's identity changed
 * (or a send to them was refused for identity) the user's gate closes all the same. */
#ifndef WAGUARD_WEBHOOK_PARSE_H
#define WAGUARD_WEBHOOK_PARSE_H

#include <stddef.h>

#include "ops.h"

struct webhook_batch {
    struct ops ops;       /* the operations (webhook_batch_free releases them) */
    int items;            /* items understood */
    int dead;             /* dead letters written: the items that could not be understood, at
                             most 100 a body, then one saying how many more there were */
    int identities;       /* identity observations among the operations */
};

/* Parses body.  Returns 0 with *out filled (out->ops.oom when memory ran out: nothing of
 * it may be applied), or -1 with why (a sentence for the sender) when the body is not one
 * JSON object: not JSON, not an object, or more than one value (the only reasons a whole
 * body is refused).  An object holding a key twice is a dead letter, with the rest
 * applied (jsonx.h); a Cloud envelope whose entry is not an array is one too. */
int webhook_parse(const char *body, size_t len, const char *home_cc,
                  struct webhook_batch *out, char *why, size_t whylen) __attribute__((warn_unused_result));

void webhook_batch_free(struct webhook_batch *b);

#endif
