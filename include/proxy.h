/* proxy — routes that forward to the WABA client and record what its answers say.
 *
 * /v1/messages is gated first: a denied send answers 423 with the WABA error envelope
 * and is never forwarded.  The answer of the WABA client is returned as it is (status
 * and body); 502 when it did not answer, 504 when it timed out.  Recording the answer
 * in Redis is best effort: a failure there is logged, never hidden from the caller's
 * answer. */
#ifndef WAGUARD_PROXY_H
#define WAGUARD_PROXY_H

#include "server.h"

void proxy_messages(struct request *r);
void proxy_contacts(struct request *r);
void proxy_identity(struct request *r);
void proxy_block(struct request *r);
void proxy_blocklist(struct request *r);
void proxy_cloud_messages(struct request *r);
void proxy_cloud_block(struct request *r);

#endif
