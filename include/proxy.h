/* proxy — routes that forward to the WABA client and record what its answers say
 * (forward.h sends them on).  The gated sends are send.h's.
 *
 * The WABA client's answer is returned as it is (status and body); 502 when it did not
 * answer, 504 when it timed out.  What an answer says is recorded only when it did what
 * was asked (envelope.h: 2xx and no error in it).  A contact check's mapping and a block
 * that Redis could not record answer 503 (retrying them is free and harmless: a lost
 * mapping would let the number's dialled form through); an identity lookup's record is
 * best effort, never hidden from the caller's answer. */
#ifndef WAGUARD_PROXY_H
#define WAGUARD_PROXY_H

#include <stdbool.h>

#include "request.h"

void proxy_contacts(struct request *r);
void proxy_identity(struct request *r);
void proxy_block(struct request *r);
void proxy_blocklist(struct request *r);
void proxy_cloud_block(struct request *r);

/* True when [proxy] forward_unknown may forward path: under /v1/ or a Cloud /vN.N/, plain
 * characters only (no %-escapes, no empty, "." or ".." segments), and no segment that
 * reaches a user: one that contains "messages" (every send goes through the gate; Meta's
 * marketing_messages is gated, any other …messages path refused until it is known; the
 * On-Premises read receipt, PUT /v1/messages/{id}, is the one exception) or "calls"
 * (Meta's Calling API rings the user). */
bool proxy_forwardable(const char *path, int method);
/* Everything else under /v1/ and the Cloud /{version}/: forwarded unchanged with
 * waguard's credentials (never the caller's), bodies bounded by max_body_bytes both ways;
 * a Graph batch request (a batch parameter) is refused: it could carry any send. */
void proxy_unknown(struct request *r);
/* A forwarded change of the WABA client's settings (admin): forwarded as proxy_unknown
 * does, then the identity key check and show_security_notifications are read again. */
void proxy_settings(struct request *r);
/* /{version}/{pnid}/calls: refused 400 (a call reaches the user around the gate). */
void proxy_refuse_calls(struct request *r);

#endif
