/* status — /healthz (the process is alive), /readyz (Redis answers) and /metrics. */
#ifndef WAGUARD_STATUS_H
#define WAGUARD_STATUS_H

#include "server.h"

void status_healthz(struct request *r);
void status_readyz(struct request *r);
void status_metrics(struct request *r);

#endif
