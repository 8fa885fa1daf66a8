/* admin — the operators' routes: identities waiting (paged, searchable), one user with
 * its history and audit trail, acknowledging now, asking again for every failed one,
 * lifting a hold, the audit log, and an overview.  Users are named as the gate names
 * them (recipient.h): a wa_id, a +number, a dialled number or a user id; a name that
 * could be more than one known user is refused 409 with the ones it could be, never
 * guessed.  Reads take an api token; acts take an admin token (routes.c). */
#ifndef WAGUARD_ADMIN_H
#define WAGUARD_ADMIN_H

#include "request.h"

void admin_list(struct request *r);
void admin_get(struct request *r);
/* POST /v1/identities/{wa_id}/ack {"reason":"…"} (optional, audited) */
void admin_ack(struct request *r);
/* POST /v1/identities/retry {"expected":N}: every failed acknowledgement again, when N
 * are failed (the count the operator was shown) */
void admin_retry_all(struct request *r);
/* POST /v1/identities/{wa_id}/release {"reason":"…"[,"category":"…"]}: lifts the
 * account-takeover hold of the user's newest identity change (audited). */
void admin_release(struct request *r);
/* GET /v1/audit?cursor=&limit=&wa_id=&q= */
void admin_audit(struct request *r);
/* GET /v1/overview: the counts, Redis and WABA client health, the platform's identity
 * protection per number */
void admin_overview(struct request *r);

#endif
