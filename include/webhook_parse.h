/* webhook_parse — a webhook body into the operations the store applies.
 *
 * The envelope (On-Premises: top-level contacts/messages/statuses/errors; Cloud API:
 * the same arrays inside entry[].changes[].value) is kept apart from the item handlers,
 * so both platforms share them.  Each understood item becomes one or more operations,
 * JSON objects built by ops.h (see there for every kind).
 * The parser never fails on an item: what it cannot understand becomes "dead". */
#ifndef WAGUARD_WEBHOOK_PARSE_H
#define WAGUARD_WEBHOOK_PARSE_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct webhook_batch {
    cJSON *ops;           /* array of operations (owned; webhook_batch_free releases it) */
    int items;            /* items understood */
    int dead;             /* items kept as dead letters */
    int identities;       /* identity observations among the operations */
};

/* Parses body.  Returns 0 with *out filled, or -1 with why set when the body is not
 * a JSON object (the only reason a whole body is refused). */
int webhook_parse(const char *body, size_t len, const char *home_cc,
                  struct webhook_batch *out, const char **why) __attribute__((warn_unused_result));

void webhook_batch_free(struct webhook_batch *b);

#endif
