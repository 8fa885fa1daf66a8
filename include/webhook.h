/* webhook — POST (ingest) and GET (Cloud API verification) on [webhook] path.
 * Ingest reads top to bottom: authenticate → parse (webhook_parse) → store (one atomic
 * call, store_apply) → answer 200 only once Redis confirmed, 503 otherwise.
 *
 * Credentials: with [webhook] hmac_secret_file (Meta's app secret) every body must carry
 * Meta's valid X-Hub-Signature-256 over its raw bytes, and a token never stands in for
 * it; with only token_file, the bearer token; with neither, nothing (loopback only,
 * config.c). */
#ifndef WAGUARD_WEBHOOK_H
#define WAGUARD_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "request.h"
#include "secret.h"

void webhook_post(struct request *r);
void webhook_verify(struct request *r);

/* Checks X-Hub-Signature-256 ("sha256=<hex>") over body with the app secret's key (made
 * ready when the configuration was read: config.h hmac_key), in constant time. */
bool webhook_signature_ok(const char *header, const char *body, size_t len, const struct secret_mac *key);

#endif
