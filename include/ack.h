/* ack — the worker that acknowledges identity changes to the WABA client.
 *
 * Work lives in Redis (<prefix>:ack:queue, a sorted set of wa_ids by due time),
 * queued in the same atomic step that records the change.  The worker claims due
 * items with a lease (so one worker at a time holds each, and a dead worker's items
 * are taken over when the lease runs out), PUTs {"hash": H} to
 * /v1/contacts/{wa_id}/identity and writes the outcome back with a compare-and-set
 * on the newest hash: 2xx acknowledges (the gate opens), 5xx/time-out/no answer
 * retries with exponential backoff and jitter, other 4xx reconcile with a GET of the
 * WABA client's identity or park the work as failed. */
#ifndef WAGUARD_ACK_H
#define WAGUARD_ACK_H

#include <stddef.h>

#include "app.h"

int ack_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void ack_free(struct app *app);
/* New work may be due: claim at once rather than at the next poll. */
void ack_kick(struct app *app);
/* Stops claiming; work in flight finishes. */
void ack_stop(struct app *app);
/* Acknowledgements this instance is sending now. */
long long ack_in_flight(const struct app *app);

/* The delay before attempt n+1 (n >= 1): base * 2^(n-1), capped at max, with jitter
 * that keeps it between half and all of that.  r is a random 32-bit value. */
long long ack_backoff_ms(long long base_ms, long long max_ms, long long attempts, unsigned r);

#endif
