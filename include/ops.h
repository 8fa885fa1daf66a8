/* ops — the operations C hands to the apply script (src/lua/apply.lua), built in one
 * place for the webhook parser, the forwarded routes and the acknowledgement worker.
 *
 * An operation is a JSON object with a short kind "k"; users are named by "w" (the
 * record: a wa_id, or a user id when no wa_id is known) and "u" (a user id seen with
 * that wa_id: the script links the two, so that either names one record).  Times are
 * milliseconds ("t") from wtime_parse(); 0 means "when it reaches Redis".
 *   id    identity observed: w u h t src ack mid part
 *   in    inbound message: w u t mid type n (the business number it came to; "" On-Premises)
 *   num   number change: w (old) nw (new) u (the user id, Cloud) t mid
 *   uid   user id change (Cloud): prev u t mid
 *   sys   other system message: w u st t mid
 *   cc    contact-check result: in (normalised input) raw st w (only when valid)
 *   prof  sender profile: w u name
 *   st    message status: id st w u t codes
 *   err   error outside any message: code title details
 *   blk   block state from a forwarded answer: w (recipient forms) b (1 blocked, 0 not) n (number)
 *   sent  a send went out: w (recipient forms): the contact-check budget stops counting it
 *   dead  an item that could not be understood: reason item (its JSON text)
 * Every constructor appends to ops (a cJSON array) and returns the new operation,
 * owned by ops; NULL only when out of memory.  Strings are copied. */
#ifndef WAGUARD_OPS_H
#define WAGUARD_OPS_H

#include <stdbool.h>

#include <cjson/cJSON.h>

/* Where an identity observation came from. */
enum ops_source { OPS_SYSTEM, OPS_MESSAGE, OPS_CLOUD, OPS_LOOKUP, OPS_RECONCILE };

/* A user as an operation names it: the record and, when both are known, its user id. */
struct ops_user {
    const char *w;          /* wa_id, or a user id alone */
    const char *u;          /* a user id seen together with w, or NULL */
};

cJSON *ops_identity(cJSON *ops, struct ops_user who, const char *hash, long long t_ms,
                    enum ops_source src, bool acked, const char *mid, bool part);
/* number: the business number (Cloud phone_number_id) the message came to; NULL or ""
 * for On-Premises (one number per WABA client). */
cJSON *ops_inbound(cJSON *ops, struct ops_user who, long long t_ms, const char *mid, const char *type,
                   const char *number);
/* uid: the user's business-scoped id (Cloud), linked to the new number; NULL none */
cJSON *ops_number(cJSON *ops, const char *w, const char *nw, const char *uid, long long t_ms, const char *mid);
cJSON *ops_user_id_change(cJSON *ops, const char *prev, const char *uid, long long t_ms, const char *mid);
cJSON *ops_system(cJSON *ops, struct ops_user who, const char *type, long long t_ms, const char *mid);
cJSON *ops_contact_check(cJSON *ops, const char *input_norm, const char *raw, const char *status,
                         const char *wa_id);
cJSON *ops_profile(cJSON *ops, struct ops_user who, const char *name);
/* errors: the status's errors array (borrowed; numeric codes are copied) */
cJSON *ops_status(cJSON *ops, const char *id, const char *status, struct ops_user who, long long t_ms,
                  const cJSON *errors);
cJSON *ops_error(cJSON *ops, double code, const char *title, const char *details);
cJSON *ops_block(cJSON *ops, const char *w, bool blocked, const char *number);
cJSON *ops_sent(cJSON *ops, const char *spec);
/* item: borrowed, printed into the dead letter (NULL: none) */
cJSON *ops_dead(cJSON *ops, const char *reason, const cJSON *item);

/* An identity hash fit to store and echo: 1 to 200 bytes of base64 (either alphabet),
 * '.', ':' and '='; anything else (control bytes, quotes, invalid UTF-8) is refused. */
bool ops_hash_valid(const char *h);

/* A business number's id as it may name state (Cloud phone_number_id): 1 to 63
 * letters, digits, '_' or '-'. */
bool ops_number_valid(const char *n);

/* "acknowledged" as the WABA client sends it: true, or the string "true" (the seed
 * documents it as a String). */
bool ops_acknowledged(const cJSON *v);

#endif
