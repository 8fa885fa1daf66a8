/* proxy — routes that forward to the WABA client and record what its answers say.
 *
 * /v1/messages is gated first: a denied send answers 423 with the WABA error envelope
 * and is never forwarded.  The answer of the WABA client is returned as it is (status
 * and body); 502 when it did not answer, 504 when it timed out.  Recording the answer
 * in Redis is best effort: a failure there is logged, never hidden from the caller's
 * answer. */
#ifndef WAGUARD_PROXY_H
#define WAGUARD_PROXY_H

#include <stdbool.h>

#include "server.h"

void proxy_messages(struct request *r);
void proxy_contacts(struct request *r);
void proxy_identity(struct request *r);
void proxy_block(struct request *r);
void proxy_blocklist(struct request *r);
void proxy_cloud_messages(struct request *r);
void proxy_cloud_block(struct request *r);

/* True when [proxy] forward_unknown may forward path: under /v1/ or a Cloud /vN.N/, plain
 * characters only (no %-escapes, no empty, "." or ".." segments), and no segment that
 * contains "messages" (every send goes through the gate, Meta's marketing_messages too;
 * On-Premises' PUT /v1/messages/{id}, a read receipt, is the one exception). */
bool proxy_forwardable(const char *path, int method);
/* Everything else under /v1/ and the Cloud /{version}/: forwarded unchanged with
 * waguard's credentials (never the caller's), bodies bounded by max_body_bytes both ways. */
void proxy_unknown(struct request *r);

#endif
