/* admin — the operators' routes: identities waiting, one identity with its history,
 * and acknowledging now.  All need an admin token. */
#ifndef WAGUARD_ADMIN_H
#define WAGUARD_ADMIN_H

#include "server.h"

void admin_list(struct request *r);
void admin_get(struct request *r);
void admin_ack(struct request *r);

#endif
