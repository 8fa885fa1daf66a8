/* webhook_parse — see include/webhook_parse.h
 *
 * Reads top to bottom: webhook_parse() picks the envelope, parse_value() hands each
 * array to its item handler, and each handler turns one item into operations (ops.h)
 * or a dead letter with the reason.  Users are named through recipient.h, times read
 * through wtime.h: no rule about either is written here. */
#include "webhook_parse.h"

#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

#include "ops.h"
#include "recipient.h"
#include "wtime.h"

struct pctx {
    struct webhook_batch *b;
    const char *home_cc;
    const cJSON *contacts;      /* the contacts array beside the messages being parsed */
    const char *number;         /* Cloud: metadata.phone_number_id of the value; NULL On-Premises */
};

/* ---- small readers ---------------------------------------------------- */

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return (cJSON_IsString(v) && v->valuestring[0] != '\0') ? v->valuestring : NULL;
}

/* A time in ms; 0 when absent (then the time it reaches Redis counts), -1 when present
 * but not a time. */
static long long time_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    long long ms;
    if (!v || cJSON_IsNull(v))
        return 0;
    return wtime_parse(v, &ms) == 0 ? ms : -1;
}

static void dead(struct pctx *c, const cJSON *item, const char *reason)
{
    ops_dead(c->b->ops, reason, item);
    c->b->dead++;
}

/* The user an item names: a wa_id handed out by WhatsApp (wa_key) and/or a user id
 * (uid_key).  Returns false when neither is a valid id. */
struct user_buf {
    char w[RECIPIENT_MAX];
    char u[RECIPIENT_MAX];
    struct ops_user ref;
};

static bool user_of(const cJSON *o, const char *wa_key, const char *uid_key, struct user_buf *ub)
{
    const char *wa = wa_key ? str_of(o, wa_key) : NULL;
    const char *uid = uid_key ? str_of(o, uid_key) : NULL;
    bool have_w = wa && recipient_from_whatsapp(wa, ub->w, NULL) == 0;
    bool have_u = uid && recipient_is_user_id(uid);
    if (have_u)
        snprintf(ub->u, sizeof ub->u, "%s", uid);
    if (!have_w && !have_u)
        return false;
    if (!have_w)
        snprintf(ub->w, sizeof ub->w, "%s", ub->u);
    ub->ref.w = ub->w;
    ub->ref.u = have_w && have_u ? ub->u : NULL;
    return true;
}

static bool hash_ok(struct pctx *c, const cJSON *item, const char *hash, const char *what)
{
    if (ops_hash_valid(hash))
        return true;
    char reason[128];
    snprintf(reason, sizeof reason, "%s is not 1 to 200 bytes of base64", what);
    dead(c, item, reason);
    return false;
}

/* Cloud API identity check: the identity_key_hash of an inbound message's contact
 * and a status's recipient_identity_key_hash are observations of the user's hash.
 * They are part of that message or status (key: its duplicate check) and ordered by
 * its timestamp (0: when it reaches Redis). */
static void cloud_identity(struct pctx *c, const cJSON *item, struct ops_user who, const char *hash,
                           const char *key, long long t_ms)
{
    if (!hash || !hash_ok(c, item, hash, "identity_key_hash"))
        return;
    ops_identity(c->b->ops, who, hash, t_ms, OPS_CLOUD, false, key, true);
    c->b->identities++;
}

/* The identity_key_hash the contacts array gives for the user, or NULL. */
static const char *contact_key_hash(const struct pctx *c, struct ops_user who)
{
    const cJSON *ct;
    cJSON_ArrayForEach(ct, c->contacts) {
        struct user_buf cu = { 0 };
        if (!user_of(ct, "wa_id", "user_id", &cu))
            continue;
        if (strcmp(cu.w, who.w) == 0 || (who.u && cu.ref.u && strcmp(cu.ref.u, who.u) == 0) ||
            (who.u && strcmp(cu.w, who.u) == 0) || (cu.ref.u && strcmp(cu.ref.u, who.w) == 0))
            return str_of(ct, "identity_key_hash");
    }
    return NULL;
}

/* ---- messages --------------------------------------------------------- */

static void parse_identity_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    struct user_buf ub = { 0 };
    if (!user_of(sys, "customer", NULL, &ub) && !user_of(sys, "user", NULL, &ub) &&
        !user_of(m, "from", "from_user_id", &ub)) {
        dead(c, m, "user_identity_changed without a valid system.customer, system.user or from");
        return;
    }
    const char *hash = str_of(sys, "identity");
    long long t = time_of(m, "timestamp");
    if (!hash) {
        dead(c, m, "user_identity_changed without system.identity");
        return;
    }
    if (!hash_ok(c, m, hash, "system.identity"))
        return;
    if (t <= 0) {
        dead(c, m, "user_identity_changed without a valid timestamp");
        return;
    }
    ops_identity(c->b->ops, ub.ref, hash, t, OPS_SYSTEM, false, mid, false);
    c->b->identities++;
    c->b->items++;
}

static void parse_number_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    char nw[RECIPIENT_MAX];
    const char *nw_raw = str_of(sys, "new_wa_id");
    if (!nw_raw)
        nw_raw = str_of(sys, "wa_id");
    struct user_buf old = { 0 };
    if (!user_of(m, "from", NULL, &old) && !user_of(sys, "customer", NULL, &old)) {
        dead(c, m, "number change without a valid from");
        return;
    }
    if (recipient_from_whatsapp(nw_raw, nw, NULL) != 0) {
        dead(c, m, "number change without a valid system.new_wa_id or system.wa_id");
        return;
    }
    long long t = time_of(m, "timestamp");
    const char *uid = str_of(sys, "user_id");
    ops_number(c->b->ops, old.w, nw, uid && recipient_is_user_id(uid) ? uid : NULL, t < 0 ? 0 : t, mid);
    c->b->items++;
}

/* Cloud: the user's business-scoped id changed (system.previous_user_id → user_id). */
static void parse_user_id_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    const char *prev = str_of(sys, "previous_user_id");
    const char *uid = str_of(sys, "user_id");
    if (!prev || !uid || !recipient_is_user_id(prev) || !recipient_is_user_id(uid)) {
        dead(c, m, "user_changed_user_id without valid system.previous_user_id and system.user_id");
        return;
    }
    long long t = time_of(m, "timestamp");
    ops_user_id_change(c->b->ops, prev, uid, t < 0 ? 0 : t, mid);
    c->b->items++;
}

static void parse_system(struct pctx *c, const cJSON *m, const char *mid)
{
    const cJSON *sys = cJSON_GetObjectItemCaseSensitive(m, "system");
    const char *st = cJSON_IsObject(sys) ? str_of(sys, "type") : NULL;
    if (!st) {
        dead(c, m, "system message without system.type");
        return;
    }
    if (strcmp(st, "user_identity_changed") == 0) {
        parse_identity_change(c, m, sys, mid);
        return;
    }
    if (strcmp(st, "user_changed_number") == 0 || strcmp(st, "customer_changed_number") == 0) {
        parse_number_change(c, m, sys, mid);
        return;
    }
    if (strcmp(st, "user_changed_user_id") == 0) {
        parse_user_id_change(c, m, sys, mid);
        return;
    }
    struct user_buf ub = { 0 };
    if (!user_of(sys, "customer", NULL, &ub) && !user_of(m, "from", "from_user_id", &ub) &&
        !user_of(sys, NULL, "user_id", &ub)) {
        dead(c, m, "system message without a valid user");
        return;
    }
    long long t = time_of(m, "timestamp");
    ops_system(c->b->ops, ub.ref, st, t < 0 ? 0 : t, mid);
    c->b->items++;
}

static void parse_message(struct pctx *c, const cJSON *m)
{
    if (!cJSON_IsObject(m)) {
        dead(c, m, "message is not an object");
        return;
    }
    const char *mid = str_of(m, "id");
    const char *type = str_of(m, "type");
    if (type && strcmp(type, "system") == 0) {
        parse_system(c, m, mid);
        return;
    }

    /* An ordinary inbound message: the sender's 24-hour window, and with
     * show_security_notifications its identity. */
    struct user_buf ub = { 0 };
    if (!user_of(m, "from", "from_user_id", &ub)) {
        dead(c, m, "message without a valid from or from_user_id");
        return;
    }
    if (!mid) {
        dead(c, m, "message without id");
        return;
    }
    long long t = time_of(m, "timestamp");
    if (t < 0)
        t = 0;
    ops_inbound(c->b->ops, ub.ref, t, mid, type, c->number);
    c->b->items++;
    cloud_identity(c, m, ub.ref, contact_key_hash(c, ub.ref), mid, t);

    const cJSON *idn = cJSON_GetObjectItemCaseSensitive(m, "identity");
    if (idn == NULL)
        return;
    const char *hash = cJSON_IsObject(idn) ? str_of(idn, "hash") : NULL;
    long long cts = cJSON_IsObject(idn) ? time_of(idn, "created_timestamp") : -1;
    if (!hash || cts <= 0) {
        dead(c, m, "message identity without hash or a valid created_timestamp");
        return;
    }
    if (!hash_ok(c, m, hash, "identity.hash"))
        return;
    ops_identity(c->b->ops, ub.ref, hash, cts, OPS_MESSAGE,
                 ops_acknowledged(cJSON_GetObjectItemCaseSensitive(idn, "acknowledged")), mid, true);
    c->b->identities++;
}

/* ---- contacts, statuses, errors -------------------------------------- */

static void parse_contact(struct pctx *c, const cJSON *ct)
{
    if (!cJSON_IsObject(ct)) {
        dead(c, ct, "contact is not an object");
        return;
    }
    const char *status = str_of(ct, "status");
    if (status) {
        /* A contact check's result (the callback of a non-blocking check). */
        static const char *const known[] = { "processing", "valid", "invalid", "failed" };
        bool ok = false;
        for (size_t i = 0; i < 4; i++)
            ok = ok || strcmp(status, known[i]) == 0;
        if (!ok) {
            dead(c, ct, "contact status is not processing, valid, invalid or failed");
            return;
        }
        const char *input = str_of(ct, "input");
        char in[RECIPIENT_MAX], w[RECIPIENT_MAX];
        bool have_w = recipient_from_whatsapp(str_of(ct, "wa_id"), w, NULL) == 0;
        if (!input || recipient_dial(input, c->home_cc, in, NULL) != 0) {
            if (!have_w) {
                dead(c, ct, "contact check without a dialable input");
                return;
            }
            memcpy(in, w, sizeof in);
        }
        ops_contact_check(c->b->ops, in, input, status, have_w && strcmp(status, "valid") == 0 ? w : NULL);
        c->b->items++;
        return;
    }
    struct user_buf ub = { 0 };
    if (!user_of(ct, "wa_id", "user_id", &ub)) {
        dead(c, ct, "contact without status or a valid wa_id or user_id");
        return;
    }
    const cJSON *prof = cJSON_GetObjectItemCaseSensitive(ct, "profile");
    ops_profile(c->b->ops, ub.ref, cJSON_IsObject(prof) ? str_of(prof, "name") : NULL);
    c->b->items++;
}

static void parse_status(struct pctx *c, const cJSON *s)
{
    if (!cJSON_IsObject(s)) {
        dead(c, s, "status is not an object");
        return;
    }
    const char *id = str_of(s, "id");
    const char *st = str_of(s, "status");
    if (!id || !st || strlen(id) > 256 || strlen(st) > 64) {
        dead(c, s, "status without id or status (or one over 256 bytes)");
        return;
    }
    struct user_buf ub = { 0 };
    bool have = user_of(s, "recipient_id", "recipient_user_id", &ub);
    long long t = time_of(s, "timestamp");
    if (t < 0)
        t = 0;
    ops_status(c->b->ops, id, st, have ? ub.ref : (struct ops_user){ "", NULL }, t,
               cJSON_GetObjectItemCaseSensitive(s, "errors"));
    c->b->items++;
    if (have) {
        char key[600];
        snprintf(key, sizeof key, "st:%s:%s", id, st);
        cloud_identity(c, s, ub.ref, str_of(s, "recipient_identity_key_hash"), key, t);
    }
}

static void parse_error(struct pctx *c, const cJSON *e)
{
    if (!cJSON_IsObject(e)) {
        dead(c, e, "error is not an object");
        return;
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (!cJSON_IsNumber(code) || !isfinite(code->valuedouble) || fabs(code->valuedouble) >= 1e12) {
        dead(c, e, "error without a numeric code (finite, under 10^12)");
        return;
    }
    const char *title = str_of(e, "title");
    if (!title)
        title = str_of(e, "message");
    ops_error(c->b->ops, floor(code->valuedouble), title, str_of(e, "details"));
    c->b->items++;
}

/* ---- envelopes -------------------------------------------------------- */

typedef void item_fn(struct pctx *c, const cJSON *item);

static void each(struct pctx *c, const cJSON *value, const char *key, item_fn *fn)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(value, key);
    if (arr == NULL || cJSON_IsNull(arr))
        return;
    if (!cJSON_IsArray(arr)) {
        char reason[64];
        snprintf(reason, sizeof reason, "%s is not an array", key);
        dead(c, arr, reason);
        return;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
        fn(c, it);
}

/* The four arrays both platforms send.  Contacts first: a message's sender is then
 * known before the message is applied. */
static void parse_value(struct pctx *c, const cJSON *value)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(value, "metadata");
    const char *pnid = str_of(meta, "phone_number_id");
    c->number = pnid && ops_number_valid(pnid) ? pnid : NULL;
    c->contacts = cJSON_GetObjectItemCaseSensitive(value, "contacts");
    if (!cJSON_IsArray(c->contacts))
        c->contacts = NULL;
    each(c, value, "contacts", parse_contact);
    each(c, value, "messages", parse_message);
    each(c, value, "statuses", parse_status);
    each(c, value, "errors", parse_error);
}

/* Cloud API: {"object":…,"entry":[{"changes":[{"field":…,"value":{…}}]}]} */
static void parse_cloud(struct pctx *c, const cJSON *root)
{
    const cJSON *entry;
    cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(root, "entry")) {
        const cJSON *changes = cJSON_GetObjectItemCaseSensitive(entry, "changes");
        if (!cJSON_IsArray(changes)) {
            dead(c, entry, "entry without a changes array");
            continue;
        }
        const cJSON *ch;
        cJSON_ArrayForEach(ch, changes) {
            const cJSON *value = cJSON_GetObjectItemCaseSensitive(ch, "value");
            if (!cJSON_IsObject(value))
                dead(c, ch, "change without a value object");
            else
                parse_value(c, value);
        }
    }
}

int webhook_parse(const char *body, size_t len, const char *home_cc,
                  struct webhook_batch *out, const char **why)
{
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        *why = "the body is not valid JSON";
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *why = "the body is not a JSON object";
        return -1;
    }
    out->ops = cJSON_CreateArray();
    struct pctx c = { .b = out, .home_cc = home_cc };
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "entry")))
        parse_cloud(&c, root);
    else
        parse_value(&c, root);
    cJSON_Delete(root);
    return 0;
}

void webhook_batch_free(struct webhook_batch *b)
{
    cJSON_Delete(b->ops);
    b->ops = NULL;
}
