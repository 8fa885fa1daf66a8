/* ops — see include/ops.h */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each kind's name and arity, from the schema. */
#define OPS_FIELD_(K, f) +1
#define OPS_TABLE_(E, k) [OP_##E] = { #k, 0 SCHEMA_OP_##E(OPS_FIELD_) },
static const struct { const char *name; int arity; } kinds[OP_KIND_COUNT] = {
    SCHEMA_OP_KINDS(OPS_TABLE_)
};
#undef OPS_TABLE_
#undef OPS_FIELD_

/* The field positions of each kind, from the schema. */
#define OPS_POS_(K, f) OPF_##K##_##f,
#define OPS_ENUM_(E, k) enum { SCHEMA_OP_##E(OPS_POS_) OPF_##E##_N };
SCHEMA_OP_KINDS(OPS_ENUM_)
#undef OPS_ENUM_
#undef OPS_POS_

/* Every kind fits OPS_FIELDS_MAX. */
#define OPS_FITS_(E, k) _Static_assert(OPF_##E##_N <= OPS_FIELDS_MAX, "too many fields in " #k);
SCHEMA_OP_KINDS(OPS_FITS_)
#undef OPS_FITS_

/* The field names of each kind, from the schema. */
#define OPS_NAME_(K, f) #f,
#define OPS_NAMES_(E, k) static const char *const names_##E[] = { SCHEMA_OP_##E(OPS_NAME_) };
SCHEMA_OP_KINDS(OPS_NAMES_)
#undef OPS_NAMES_
#undef OPS_NAME_
#define OPS_NAMES_(E, k) [OP_##E] = names_##E,
static const char *const *const field_names[OP_KIND_COUNT] = { SCHEMA_OP_KINDS(OPS_NAMES_) };
#undef OPS_NAMES_

/* The names the metrics count items by (waguard_webhook_items_total{kind}). */
static const char *const item_names[OP_KIND_COUNT] = {
    [OP_IDENTITY] = "identity_change", [OP_INBOUND] = "inbound_message", [OP_NUMBER] = "number_change",
    [OP_USER_ID] = "user_id_change", [OP_SYSTEM] = "system", [OP_CONTACT] = "contact_check",
    [OP_PROFILE] = "profile", [OP_STATUS] = "status", [OP_ERROR] = "error", [OP_BLOCK] = "block",
    [OP_SENT] = "sent", [OP_REFUSED] = "identity_refusal", [OP_UNUSABLE] = "identity_unusable",
    [OP_DEAD] = "dead_letter",
};

static const char *const source_names[] = {
    [OPS_SYSTEM] = "system", [OPS_MESSAGE] = "message", [OPS_CLOUD] = "cloud",
    [OPS_LOOKUP] = "lookup", [OPS_RECONCILE] = "reconcile",
};

const char *ops_kind_name(enum op_kind k) { return kinds[k].name; }
const char *ops_item_name(enum op_kind k) { return item_names[k]; }
int ops_arity(enum op_kind k) { return kinds[k].arity; }
const char *ops_field_name(enum op_kind k, int i) { return i >= 0 && i < kinds[k].arity ? field_names[k][i] : NULL; }

void ops_init(struct ops *o)
{
    memset(o, 0, sizeof *o);
}

void ops_free(struct ops *o)
{
    free(o->buf);
    free(o->off);
    memset(o, 0, sizeof *o);
}

const char *ops_arg(const struct ops *o, size_t i, size_t *len)
{
    const char *s = o->buf + o->off[i];
    if (len)
        *len = (i + 1 < o->n ? o->off[i + 1] : o->len) - o->off[i] - 1;
    return s;
}

size_t ops_next(const struct ops *o, size_t at, enum op_kind *kind, const char *fields[OPS_FIELDS_MAX])
{
    if (at >= o->n)
        return 0;
    const char *name = ops_arg(o, at, NULL);
    for (int k = 0; k < OP_KIND_COUNT; k++) {
        if (strcmp(kinds[k].name, name) != 0)
            continue;
        if (at + 1 + (size_t)kinds[k].arity > o->n)
            return 0;
        *kind = (enum op_kind)k;
        for (int f = 0; f < kinds[k].arity; f++)
            fields[f] = ops_arg(o, at + 1 + (size_t)f, NULL);
        return at + 1 + (size_t)kinds[k].arity;
    }
    return 0;
}

static bool push(struct ops *o, const char *s)
{
    size_t n = strlen(s);
    if (o->n == o->offcap) {
        size_t cap = o->offcap ? o->offcap * 2 : 32;
        size_t *off = realloc(o->off, cap * sizeof *off);
        if (!off)
            return false;
        o->off = off;
        o->offcap = cap;
    }
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 512;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b)
            return false;
        o->buf = b;
        o->cap = cap;
    }
    o->off[o->n++] = o->len;
    memcpy(o->buf + o->len, s, n + 1);
    o->len += n + 1;
    return true;
}

/* Appends one operation: its kind, then every field (NULL is ""), or nothing at all. */
static void add(struct ops *o, enum op_kind k, const char *const *fields)
{
    if (o->oom)
        return;
    size_t n = o->n, len = o->len;
    bool ok = push(o, kinds[k].name);
    for (int i = 0; ok && i < kinds[k].arity; i++)
        ok = push(o, fields[i] ? fields[i] : "");
    if (!ok) {
        o->n = n;           /* never half an operation */
        o->len = len;
        o->oom = true;
        return;
    }
    o->count++;
    o->of_kind[k]++;
}

static const char *num(char *buf, size_t len, long long v)
{
    snprintf(buf, len, "%lld", v);
    return buf;
}

void ops_identity(struct ops *o, struct ops_user who, const char *hash, long long t_ms,
                  enum ops_source src, bool acked, const char *mid, bool part)
{
    char t[24];
    const char *f[OPF_IDENTITY_N] = {
        [OPF_IDENTITY_w] = who.w, [OPF_IDENTITY_u] = who.u, [OPF_IDENTITY_h] = hash,
        [OPF_IDENTITY_t] = num(t, sizeof t, t_ms), [OPF_IDENTITY_src] = source_names[src],
        [OPF_IDENTITY_ack] = acked ? "1" : "", [OPF_IDENTITY_mid] = mid, [OPF_IDENTITY_part] = part ? "1" : "",
    };
    add(o, OP_IDENTITY, f);
}

void ops_inbound(struct ops *o, struct ops_user who, long long t_ms, const char *mid, const char *type,
                 const char *number)
{
    char t[24];
    const char *f[OPF_INBOUND_N] = {
        [OPF_INBOUND_w] = who.w, [OPF_INBOUND_u] = who.u, [OPF_INBOUND_pu] = who.pu,
        [OPF_INBOUND_t] = num(t, sizeof t, t_ms), [OPF_INBOUND_mid] = mid,
        [OPF_INBOUND_type] = type ? type : "unknown", [OPF_INBOUND_n] = number,
    };
    add(o, OP_INBOUND, f);
}

void ops_number(struct ops *o, const char *w, const char *nw, const char *uid, const char *prev_uid,
                long long t_ms, const char *mid)
{
    char t[24];
    const char *f[OPF_NUMBER_N] = {
        [OPF_NUMBER_w] = w, [OPF_NUMBER_nw] = nw, [OPF_NUMBER_u] = uid, [OPF_NUMBER_pu] = prev_uid,
        [OPF_NUMBER_t] = num(t, sizeof t, t_ms), [OPF_NUMBER_mid] = mid,
    };
    add(o, OP_NUMBER, f);
}

void ops_user_id_change(struct ops *o, const char *prev, const char *uid, const char *w, long long t_ms,
                        const char *mid)
{
    char t[24], synthetic[300];
    if (!mid) {
        /* a user_id_update carries no message id: the change itself names it */
        snprintf(synthetic, sizeof synthetic, "uid:%s:%s", prev, uid);
        mid = synthetic;
    }
    const char *f[OPF_USER_ID_N] = {
        [OPF_USER_ID_prev] = prev, [OPF_USER_ID_u] = uid, [OPF_USER_ID_w] = w,
        [OPF_USER_ID_t] = num(t, sizeof t, t_ms), [OPF_USER_ID_mid] = mid,
    };
    add(o, OP_USER_ID, f);
}

void ops_system(struct ops *o, struct ops_user who, const char *type, long long t_ms, const char *mid)
{
    char t[24];
    const char *f[OPF_SYSTEM_N] = {
        [OPF_SYSTEM_w] = who.w, [OPF_SYSTEM_u] = who.u, [OPF_SYSTEM_st] = type,
        [OPF_SYSTEM_t] = num(t, sizeof t, t_ms), [OPF_SYSTEM_mid] = mid,
    };
    add(o, OP_SYSTEM, f);
}

void ops_contact_check(struct ops *o, const char *input_norm, const char *raw, const char *status,
                       const char *wa_id)
{
    const char *f[OPF_CONTACT_N] = {
        [OPF_CONTACT_in] = input_norm, [OPF_CONTACT_raw] = raw, [OPF_CONTACT_st] = status, [OPF_CONTACT_w] = wa_id,
    };
    add(o, OP_CONTACT, f);
}

void ops_profile(struct ops *o, struct ops_user who, const char *name, const char *username)
{
    const char *f[OPF_PROFILE_N] = {
        [OPF_PROFILE_w] = who.w, [OPF_PROFILE_u] = who.u, [OPF_PROFILE_pu] = who.pu, [OPF_PROFILE_name] = name,
        [OPF_PROFILE_uname] = username,
    };
    add(o, OP_PROFILE, f);
}

void ops_status(struct ops *o, const char *id, const char *status, struct ops_user who, const char *codes,
                const char *number)
{
    const char *f[OPF_STATUS_N] = {
        [OPF_STATUS_id] = id, [OPF_STATUS_st] = status, [OPF_STATUS_w] = who.w, [OPF_STATUS_u] = who.u,
        [OPF_STATUS_codes] = codes, [OPF_STATUS_n] = number,
    };
    add(o, OP_STATUS, f);
}

void ops_error(struct ops *o, long long code, const char *title, const char *details)
{
    char c[24];
    const char *f[OPF_ERROR_N] = {
        [OPF_ERROR_code] = num(c, sizeof c, code), [OPF_ERROR_title] = title, [OPF_ERROR_details] = details,
    };
    add(o, OP_ERROR, f);
}

void ops_block(struct ops *o, const char *spec, bool blocked, const char *number)
{
    const char *f[OPF_BLOCK_N] = { [OPF_BLOCK_spec] = spec, [OPF_BLOCK_b] = blocked ? "1" : "0", [OPF_BLOCK_n] = number };
    add(o, OP_BLOCK, f);
}

void ops_sent(struct ops *o, const char *spec, const char *w, const char *mid, const char *number,
              const char *hash)
{
    const char *f[OPF_SENT_N] = {
        [OPF_SENT_spec] = spec, [OPF_SENT_w] = w, [OPF_SENT_mid] = mid, [OPF_SENT_n] = number, [OPF_SENT_h] = hash,
    };
    add(o, OP_SENT, f);
}

void ops_refused(struct ops *o, struct ops_user who, const char *mid, const char *codes, const char *number)
{
    const char *f[OPF_REFUSED_N] = {
        [OPF_REFUSED_w] = who.w, [OPF_REFUSED_u] = who.u, [OPF_REFUSED_mid] = mid,
        [OPF_REFUSED_codes] = codes, [OPF_REFUSED_n] = number,
    };
    add(o, OP_REFUSED, f);
}

void ops_unusable(struct ops *o, struct ops_user who, const char *why, const char *mid)
{
    const char *f[OPF_UNUSABLE_N] = {
        [OPF_UNUSABLE_w] = who.w, [OPF_UNUSABLE_u] = who.u, [OPF_UNUSABLE_why] = why, [OPF_UNUSABLE_mid] = mid,
    };
    add(o, OP_UNUSABLE, f);
}

void ops_dead(struct ops *o, const char *reason, const cJSON *item)
{
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    if (item && !text) {
        o->oom = true;
        return;
    }
    const char *f[OPF_DEAD_N] = { [OPF_DEAD_reason] = reason, [OPF_DEAD_item] = text };
    add(o, OP_DEAD, f);
    cJSON_free(text);
}

/* ---- error codes --------------------------------------------------------------- */

bool ops_is_identity_code(long long code)
{
    return code == 480 || code == 137000;
}

/* A code as the platforms give it: a whole number, or a string of digits. */
bool ops_code(const cJSON *e, long long *out)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (cJSON_IsNumber(c) && isfinite(c->valuedouble) && fabs(c->valuedouble) < 1e12 &&
        c->valuedouble == floor(c->valuedouble)) {
        *out = (long long)c->valuedouble;
        return true;
    }
    if (cJSON_IsString(c)) {
        size_t n = strlen(c->valuestring);
        if (n == 0 || n > 12 || strspn(c->valuestring, "0123456789") != n)
            return false;
        *out = strtoll(c->valuestring, NULL, 10);
        return true;
    }
    return false;
}

static void codes_into(const cJSON *errors, bool identity_only, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    const cJSON *e;
    cJSON_ArrayForEach(e, errors) {
        long long c;
        if (!ops_code(e, &c) || (identity_only && !ops_is_identity_code(c)))
            continue;
        int w = snprintf(buf + used, len - used, "%s%lld", used ? "," : "", c);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

void ops_identity_codes(const cJSON *errors, char *buf, size_t len)
{
    codes_into(errors, true, buf, len);
}

void ops_codes(const cJSON *errors, char *buf, size_t len)
{
    codes_into(errors, false, buf, len);
}

bool ops_acknowledged(const cJSON *v)
{
    return cJSON_IsTrue(v) || (cJSON_IsString(v) && strcmp(v->valuestring, "true") == 0);
}

bool ops_hash_valid(const char *h)
{
    size_t n = 0;
    for (const char *p = h; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || c == '=' || c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok || n >= OPS_HASH_MAX)
            return false;
    }
    return n > 0;
}
