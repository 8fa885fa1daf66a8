/* envelope — the two error envelopes the WhatsApp platforms speak, and what an answer of
 * theirs says, written once.
 *
 * The WABA client's (On-Premises, and 360dialog's /v1):
 *   {"errors":[{"code":N,"title":"…","details":"…"}]}
 * Graph's (Meta's Cloud API):
 *   {"error":{"message":"…","type":"…","code":N,"error_subcode":N,"error_data":
 *    {"messaging_product":"whatsapp","details":"…"},"fbtrace_id":"…"}}
 * waguard answers its own errors in the one its caller speaks (request.h decides).  An
 * answer of theirs succeeded only when it is 2xx AND carries no error: the WABA client
 * answers some refusals 200 with errors[], and such an answer acknowledged, blocked or
 * recorded nothing. */
#ifndef WAGUARD_ENVELOPE_H
#define WAGUARD_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* New objects (the caller owns them); NULL only when out of memory. */
cJSON *envelope_waba(int code, const char *title, const char *details);
/* trace: the fbtrace_id to give (waguard's own, so that a log line can be found) */
cJSON *envelope_graph(int code, int subcode, const char *type, const char *message, const char *details,
                      const char *trace);

/* True when an answer with this status and (parsed) body did what was asked: 2xx, and no
 * non-empty errors[] nor an "error" object.  body may be NULL (not JSON). */
bool envelope_ok(int status, const cJSON *body);

/* The identity codes (480, 137000) a refusal carries, in errors[].code (On-Premises) or
 * error.code (Graph), comma separated into buf; "" when none. */
void envelope_identity_codes(const cJSON *body, char *buf, size_t len);

/* A short text of what an answer's error says (its details, title or message), into buf;
 * "" when it carries none. */
void envelope_describe(const cJSON *body, char *buf, size_t len);

#endif
