/* admin — the operators' routes: identities waiting, one identity with its history,
 * acknowledging now and lifting a hold.  All need an admin token. */
#ifndef WAGUARD_ADMIN_H
#define WAGUARD_ADMIN_H

#include "server.h"

void admin_list(struct request *r);
void admin_get(struct request *r);
void admin_ack(struct request *r);
/* POST /v1/identities/{wa_id}/release {"reason":"…"[,"category":"…"]}: lifts the
 * account-takeover hold of the user's newest identity change (audited). */
void admin_release(struct request *r);

#endif
