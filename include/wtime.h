/* wtime — what a timestamp from WhatsApp or the WABA client means, decided once.
 *
 * The platforms give times as seconds (message and status "timestamp") or
 * milliseconds (an identity's "created_timestamp"), as numbers or as numeric strings,
 * and a mix-up between the two happens.  Every time waguard reads goes through
 * wtime_parse(), which decides the unit by magnitude: below 10^11 it is seconds (10^11 s
 * is the year 5138), otherwise milliseconds.  The other half of the rule lives where
 * Redis's clock is (src/lua/base.lua, FUTURE_MS): an identity time later than that
 * clock plus a small tolerance is replaced by the time it was received. */
#ifndef WAGUARD_WTIME_H
#define WAGUARD_WTIME_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Times at or beyond this many ms (year 2286) are refused as nonsense. */
#define WTIME_MAX_MS 10000000000000LL

/* v: a number or a string of digits.  Returns 0 with *ms (milliseconds since the
 * epoch), or -1 when v is absent, negative, not finite, fractional text or beyond
 * WTIME_MAX_MS. */
int wtime_parse(const cJSON *v, long long *ms) __attribute__((warn_unused_result));

/* The same for a number already read (seconds or milliseconds, by magnitude). */
int wtime_from_number(double v, long long *ms) __attribute__((warn_unused_result));

/* ms as RFC 3339 in UTC ("2026-12-02T03:50:21Z") into buf (at least 21 bytes). */
void wtime_rfc3339(long long ms, char *buf, size_t len);

#endif
