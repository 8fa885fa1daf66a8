/* ops — the operations C hands to the apply function (src/lua/apply.lua), built in one
 * place for the webhook parser, the forwarded routes and the acknowledgement worker.
 *
 * An operation is its kind and its fields, strings in the order include/schema.h
 * gives (SCHEMA_OP_*): struct ops holds them flat, as the arguments the function reads
 * without decoding anything.  Users are named by w (the record: a wa_id, or a user id
 * when no wa_id is known) and u (a user id seen together with w: the function links the
 * two).  Every time is in milliseconds since the epoch ("0": when it reaches Redis).
 * Every constructor copies its strings; when an allocation fails the whole struct is
 * void (ops->oom): its owner answers 503 rather than apply half of what it was given. */
#ifndef WAGUARD_OPS_H
#define WAGUARD_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "schema.h"

enum op_kind {
#define OPS_KIND_(E, k) OP_##E,
    SCHEMA_OP_KINDS(OPS_KIND_)
#undef OPS_KIND_
    OP_KIND_COUNT
};

/* The most fields an operation has (the arity of every kind is checked against it). */
#define OPS_FIELDS_MAX 8

/* Where an identity observation came from. */
enum ops_source { OPS_SYSTEM, OPS_MESSAGE, OPS_CLOUD, OPS_LOOKUP, OPS_RECONCILE };

/* The operations of one body, flat.  Zero it (or ops_init) before use; ops_free. */
struct ops {
    char *buf;                 /* every argument, each followed by a NUL */
    size_t len, cap;
    size_t *off;               /* where argument i starts in buf */
    size_t n, offcap;          /* arguments */
    int count;                 /* operations */
    int of_kind[OP_KIND_COUNT];
    bool oom;                  /* an allocation failed: nothing of it may be applied */
};

void ops_init(struct ops *o);
void ops_free(struct ops *o);
/* Argument i (0 … n-1) and its length. */
const char *ops_arg(const struct ops *o, size_t i, size_t *len);
/* Walks the operations: at is 0 first; returns the next position, or 0 at the end, with
 * the kind and its fields (pointers into o, valid while o is). */
size_t ops_next(const struct ops *o, size_t at, enum op_kind *kind, const char *fields[OPS_FIELDS_MAX]);
/* The kind's name as the function reads it ("id", "in", …) and as the metrics count it. */
const char *ops_kind_name(enum op_kind k);
const char *ops_item_name(enum op_kind k);
int ops_arity(enum op_kind k);
/* The name of field i of kind k, as the schema gives it (NULL past its arity). */
const char *ops_field_name(enum op_kind k, int i);

/* A user as an operation names it: the record and, when both are known, its user id
 * and parent user id. */
struct ops_user {
    const char *w;          /* wa_id, or a user id alone */
    const char *u;          /* a user id seen together with w, or NULL */
    const char *pu;         /* a parent user id (CC.ENT.…), or NULL */
};

void ops_identity(struct ops *o, struct ops_user who, const char *hash, long long t_ms,
                  enum ops_source src, bool acked, const char *mid, bool part);
/* number: the business number (Cloud phone_number_id) the message came to; NULL or ""
 * for On-Premises (one number per WABA client). */
void ops_inbound(struct ops *o, struct ops_user who, long long t_ms, const char *mid, const char *type,
                 const char *number);
/* uid: the user's new business-scoped id (Cloud), prev_uid the one it replaces; NULL none */
void ops_number(struct ops *o, const char *w, const char *nw, const char *uid, const char *prev_uid,
                long long t_ms, const char *mid);
/* w: the user's wa_id when the webhook names it, else NULL */
void ops_user_id_change(struct ops *o, const char *prev, const char *uid, const char *w, long long t_ms,
                        const char *mid);
void ops_system(struct ops *o, struct ops_user who, const char *type, long long t_ms, const char *mid);
void ops_contact_check(struct ops *o, const char *input_norm, const char *raw, const char *status,
                       const char *wa_id);
void ops_profile(struct ops *o, struct ops_user who, const char *name, const char *username);
/* codes: comma-separated error codes ("" none) */
void ops_status(struct ops *o, const char *id, const char *status, struct ops_user who, const char *codes,
                const char *number);
void ops_error(struct ops *o, long long code, const char *title, const char *details);
void ops_block(struct ops *o, const char *spec, bool blocked, const char *number);
/* spec: the recipient forms ("" when the contact-check budget is off); w: the record the
 * gate decided for; mid: the message id the answer gave (NULL none); hash: the identity
 * hash the send was pinned to (NULL none) */
void ops_sent(struct ops *o, const char *spec, const char *w, const char *mid, const char *number,
              const char *hash);
/* WhatsApp refused a send for identity (codes: comma separated); who.w may be "" when
 * only the message id mid names the user. */
void ops_refused(struct ops *o, struct ops_user who, const char *mid, const char *codes, const char *number);
void ops_unusable(struct ops *o, struct ops_user who, const char *why, const char *mid);
/* item: borrowed, printed into the dead letter (NULL: none) */
void ops_dead(struct ops *o, const char *reason, const cJSON *item);

/* The identity codes among errors (an array of {"code":…}; a code may be a number or a
 * string of digits): "480", "137000" or both, comma separated, into buf; "" none. */
void ops_identity_codes(const cJSON *errors, char *buf, size_t len);
/* Every code of errors, comma separated, into buf ("" none): numbers and digit strings. */
void ops_codes(const cJSON *errors, char *buf, size_t len);
bool ops_is_identity_code(long long code);
/* The code of one error object ({"code":480} or {"code":"480"}).  Returns false when it
 * has none of those shapes. */
bool ops_code(const cJSON *e, long long *out);

/* An identity hash fit to store and echo: 1 to 200 bytes of base64 (either alphabet),
 * '.', ':' and '='; anything else (control bytes, quotes, invalid UTF-8) is refused. */
#define OPS_HASH_MAX 200
bool ops_hash_valid(const char *h);

/* "acknowledged" as the WABA client sends it: true, or the string "true" (the seed
 * documents it as a String). */
bool ops_acknowledged(const cJSON *v);

#endif
