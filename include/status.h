/* status — /healthz (the process is alive), /readyz (Redis answers, and the WABA client's
 * identity protection is not known to be off) and /metrics. */
#ifndef WAGUARD_STATUS_H
#define WAGUARD_STATUS_H

#include "request.h"

void status_healthz(struct request *r);
void status_readyz(struct request *r);
void status_metrics(struct request *r);

#endif
