/* send — the gated sends: POST /v1/messages (On-Premises), POST /{version}/{pnid}/messages
 * and /messages (Cloud API, and providers' paths without the number), and
 * /{version}/{pnid}/marketing_messages (Meta's Marketing Messages API).
 *
 * A body is read exactly one way (jsonx.h) or refused 400: no query string (Graph reads
 * parameters from both), the recipient in "to" and/or (Cloud) "recipient" (a user id;
 * "to" wins at Meta, so both are gated and the strictest decides), the template named by
 * the field its type says (template.name, or hsm.element_name), matched against [hold]
 * without case or surrounding spaces.  A denied send answers 423 in the caller's envelope
 * with the decision, and never leaves.  An allowed Cloud send to /messages is pinned to
 * the acknowledged hash (recipient_identity_key_hash), so Meta itself refuses it if the
 * identity changed since; Meta documents no such field for marketing_messages, whose
 * bodies go as sent.  An authentication template (one-tap, zero-tap, copy-code) addressed
 * only by a user id is refused before it leaves, as Meta would (131062).  The answer is
 * returned as it came; a refusal for identity in it (480, 137000) closes the user's gate,
 * and a Cloud send's message id is remembered ([proxy] sent_ttl_s) so that a failed
 * status that names nobody still finds the user. */
#ifndef WAGUARD_SEND_H
#define WAGUARD_SEND_H

#include "request.h"

void send_onprem(struct request *r);
void send_cloud(struct request *r);
void send_cloud_marketing(struct request *r);

#endif
