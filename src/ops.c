/* ops — see include/ops.h */
#include "ops.h"

#include <math.h>
#include <string.h>

static const char *const source_names[] = {
    [OPS_SYSTEM] = "system", [OPS_MESSAGE] = "message", [OPS_CLOUD] = "cloud",
    [OPS_LOOKUP] = "lookup", [OPS_RECONCILE] = "reconcile",
};

static cJSON *op_new(cJSON *ops, const char *kind)
{
    cJSON *op = cJSON_CreateObject();
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "k", kind);
    cJSON_AddItemToArray(ops, op);
    return op;
}

static void add_user(cJSON *op, struct ops_user who)
{
    cJSON_AddStringToObject(op, "w", who.w ? who.w : "");
    if (who.u && who.w && strcmp(who.u, who.w) != 0)
        cJSON_AddStringToObject(op, "u", who.u);
}

static void add_mid(cJSON *op, const char *mid)
{
    if (mid)
        cJSON_AddStringToObject(op, "mid", mid);
}

cJSON *ops_identity(cJSON *ops, struct ops_user who, const char *hash, long long t_ms,
                    enum ops_source src, bool acked, const char *mid, bool part)
{
    cJSON *op = op_new(ops, "id");
    if (!op)
        return NULL;
    add_user(op, who);
    cJSON_AddStringToObject(op, "h", hash);
    cJSON_AddNumberToObject(op, "t", (double)t_ms);
    cJSON_AddStringToObject(op, "src", source_names[src]);
    if (acked)
        cJSON_AddTrueToObject(op, "ack");
    add_mid(op, mid);
    if (part)
        cJSON_AddTrueToObject(op, "part");
    return op;
}

cJSON *ops_inbound(cJSON *ops, struct ops_user who, long long t_ms, const char *mid, const char *type,
                   const char *number)
{
    cJSON *op = op_new(ops, "in");
    if (!op)
        return NULL;
    add_user(op, who);
    cJSON_AddNumberToObject(op, "t", (double)(t_ms / 1000));
    add_mid(op, mid);
    cJSON_AddStringToObject(op, "type", type ? type : "unknown");
    if (number && *number)
        cJSON_AddStringToObject(op, "n", number);
    return op;
}

cJSON *ops_number(cJSON *ops, const char *w, const char *nw, const char *uid, long long t_ms, const char *mid)
{
    cJSON *op = op_new(ops, "num");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddStringToObject(op, "nw", nw);
    if (uid)
        cJSON_AddStringToObject(op, "u", uid);
    cJSON_AddNumberToObject(op, "t", (double)(t_ms / 1000));
    add_mid(op, mid);
    return op;
}

cJSON *ops_user_id_change(cJSON *ops, const char *prev, const char *uid, long long t_ms, const char *mid)
{
    cJSON *op = op_new(ops, "uid");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "prev", prev);
    cJSON_AddStringToObject(op, "u", uid);
    cJSON_AddNumberToObject(op, "t", (double)(t_ms / 1000));
    add_mid(op, mid);
    return op;
}

cJSON *ops_system(cJSON *ops, struct ops_user who, const char *type, long long t_ms, const char *mid)
{
    cJSON *op = op_new(ops, "sys");
    if (!op)
        return NULL;
    add_user(op, who);
    cJSON_AddStringToObject(op, "st", type);
    cJSON_AddNumberToObject(op, "t", (double)(t_ms / 1000));
    add_mid(op, mid);
    return op;
}

cJSON *ops_contact_check(cJSON *ops, const char *input_norm, const char *raw, const char *status,
                         const char *wa_id)
{
    cJSON *op = op_new(ops, "cc");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "in", input_norm);
    cJSON_AddStringToObject(op, "raw", raw ? raw : "");
    cJSON_AddStringToObject(op, "st", status);
    if (wa_id)
        cJSON_AddStringToObject(op, "w", wa_id);
    return op;
}

cJSON *ops_profile(cJSON *ops, struct ops_user who, const char *name)
{
    cJSON *op = op_new(ops, "prof");
    if (!op)
        return NULL;
    add_user(op, who);
    cJSON_AddStringToObject(op, "name", name ? name : "");
    return op;
}

cJSON *ops_status(cJSON *ops, const char *id, const char *status, struct ops_user who, long long t_ms,
                  const cJSON *errors)
{
    cJSON *op = op_new(ops, "st");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "id", id);
    cJSON_AddStringToObject(op, "st", status);
    add_user(op, who);
    cJSON_AddNumberToObject(op, "t", (double)(t_ms / 1000));
    cJSON *codes = cJSON_AddArrayToObject(op, "codes");
    const cJSON *e;
    cJSON_ArrayForEach(e, errors) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
        /* Only codes a script can take: finite whole numbers of a sane size. */
        if (cJSON_IsNumber(code) && isfinite(code->valuedouble) && fabs(code->valuedouble) < 1e12)
            cJSON_AddItemToArray(codes, cJSON_CreateNumber(floor(code->valuedouble)));
    }
    return op;
}

cJSON *ops_error(cJSON *ops, double code, const char *title, const char *details)
{
    cJSON *op = op_new(ops, "err");
    if (!op)
        return NULL;
    cJSON_AddNumberToObject(op, "code", code);
    cJSON_AddStringToObject(op, "title", title ? title : "");
    cJSON_AddStringToObject(op, "details", details ? details : "");
    return op;
}

cJSON *ops_block(cJSON *ops, const char *w, bool blocked, const char *number)
{
    cJSON *op = op_new(ops, "blk");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddNumberToObject(op, "b", blocked ? 1 : 0);
    if (number && *number)
        cJSON_AddStringToObject(op, "n", number);
    return op;
}

cJSON *ops_sent(cJSON *ops, const char *spec)
{
    cJSON *op = op_new(ops, "sent");
    if (op)
        cJSON_AddStringToObject(op, "w", spec);
    return op;
}

cJSON *ops_dead(cJSON *ops, const char *reason, const cJSON *item)
{
    cJSON *op = op_new(ops, "dead");
    if (!op)
        return NULL;
    cJSON_AddStringToObject(op, "reason", reason);
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_AddStringToObject(op, "item", text ? text : "");
    cJSON_free(text);
    return op;
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
        if (!ok || n >= 200)
            return false;
    }
    return n > 0;
}

bool ops_number_valid(const char *n)
{
    size_t i = 0;
    for (; n[i]; i++) {
        char c = n[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') ||
            i >= 63)
            return false;
    }
    return i > 0;
}
