/* gate_http — the gate's routes: GET /v1/gate/{wa_id} (one decision) and POST /v1/gate
 * (many), answered 200 when allowed and 423 when denied, the same shape either way. */
#ifndef WAGUARD_GATE_HTTP_H
#define WAGUARD_GATE_HTTP_H

#include "request.h"

void gate_http_get(struct request *r);
void gate_http_batch(struct request *r);

/* The [hold] category a caller names (?category=, a batch's "category"): NULL and 0 when
 * none is named; -1 after answering 400 when it is not one [hold] configures (an unknown
 * category is refused, never decided as if it held nothing). */
int gate_http_category(struct request *r, const char *name, const struct hold_category **out)
    __attribute__((warn_unused_result));

#endif
