/* webhook — POST (ingest) and GET (Cloud API verification) on [webhook] path.
 * Ingest reads top to bottom: authenticate → parse (webhook_parse) → store (one atomic
 * script) → answer 200 only once Redis confirmed, 503 otherwise. */
#ifndef WAGUARD_WEBHOOK_H
#define WAGUARD_WEBHOOK_H

#include "server.h"
#include "store.h"

void webhook_post(struct request *r);
void webhook_verify(struct request *r);

/* Sends operations (see webhook_parse.h) to the apply script; cb answers the request.
 * ops is only read (the caller keeps it).  Returns -1 when Redis is not connected
 * (nothing answered: the caller answers). */
int webhook_apply(struct request *r, const cJSON *ops, store_cb *cb) __attribute__((warn_unused_result));

/* Checks X-Hub-Signature-256 ("sha256=<hex>") over body with secret. */
bool webhook_signature_ok(const char *header, const char *body, size_t len, const char *secret);

#endif
