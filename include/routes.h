/* routes — every route waguard serves, in one table: method, path pattern, who may call
 * it (role), the handler; plus the webhook at [webhook] path and the forwarding of
 * other WABA client and Graph paths ([proxy] forward_unknown).  main hands it to the
 * server (server.h), which knows no handler. */
#ifndef WAGUARD_ROUTES_H
#define WAGUARD_ROUTES_H

#include "server.h"

const struct router *routes_router(void);

#endif
