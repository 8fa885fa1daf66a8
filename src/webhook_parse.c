/* webhook_parse — see include/webhook_parse.h
 *
 * Reads top to bottom: webhook_parse() picks the envelope, parse_value() hands each
 * array to its item handler, and each handler turns one item into operations (ops.h)
 * or a dead letter with the reason.  Users are named through recipient.h, times read
 * through wtime.h: no rule about either is written here. */
#include "webhook_parse.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "business.h"
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
    ops_dead(&c->b->ops, reason, item);
    c->b->dead++;
}

/* The user an item names: a wa_id handed out by WhatsApp (wa_key), a user id (uid_key)
 * and a parent user id (pu_key), any of them missing.  Returns false when neither a
 * wa_id nor a user id is valid. */
struct user_buf {
    char w[RECIPIENT_MAX];
    char u[RECIPIENT_MAX];
    char pu[RECIPIENT_MAX];
    struct ops_user ref;
};

static bool user_of(const cJSON *o, const char *wa_key, const char *uid_key, const char *pu_key,
                    struct user_buf *ub)
{
    memset(ub, 0, sizeof *ub);
    const char *wa = wa_key ? str_of(o, wa_key) : NULL;
    const char *uid = uid_key ? str_of(o, uid_key) : NULL;
    const char *pu = pu_key ? str_of(o, pu_key) : NULL;
    bool have_w = wa && recipient_from_whatsapp(wa, ub->w, NULL) == 0;
    bool have_u = uid && recipient_is_user_id(uid);
    if (have_u)
        snprintf(ub->u, sizeof ub->u, "%s", uid);
    if (pu && recipient_is_parent_id(pu))
        snprintf(ub->pu, sizeof ub->pu, "%s", pu);
    if (!have_w && !have_u)
        return false;
    if (!have_w)
        snprintf(ub->w, sizeof ub->w, "%s", ub->u);
    ub->ref.w = ub->w;
    ub->ref.u = have_w && have_u ? ub->u : NULL;
    ub->ref.pu = ub->pu[0] ? ub->pu : NULL;
    return true;
}

static bool hash_ok(const char *hash)
{
    return hash && ops_hash_valid(hash);
}

/* Cloud API identity check: the identity_key_hash of an inbound message's contact and a
 * status's recipient_identity_key_hash are observations of the user's hash.  They are
 * part of that message or status (key: its duplicate check) and ordered by its
 * timestamp (0: when it reaches Redis). */
static void cloud_identity(struct pctx *c, const cJSON *item, struct ops_user who, const char *hash,
                           const char *key, long long t_ms)
{
    if (!hash)
        return;
    if (!hash_ok(hash)) {
        dead(c, item, "identity_key_hash is not 1 to 200 bytes of base64");
        return;
    }
    ops_identity(&c->b->ops, who, hash, t_ms, OPS_CLOUD, false, key, true);
    c->b->identities++;
}

/* The contact the contacts array gives for the user, or NULL. */
static const cJSON *contact_of(const struct pctx *c, struct ops_user who)
{
    const cJSON *ct;
    cJSON_ArrayForEach(ct, c->contacts) {
        struct user_buf cu;
        if (!user_of(ct, "wa_id", "user_id", NULL, &cu))
            continue;
        if (strcmp(cu.w, who.w) == 0 || (who.u && cu.ref.u && strcmp(cu.ref.u, who.u) == 0) ||
            (who.u && strcmp(cu.w, who.u) == 0) || (cu.ref.u && strcmp(cu.ref.u, who.w) == 0))
            return ct;
    }
    return NULL;
}

/* ---- messages --------------------------------------------------------- */

static void parse_identity_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    struct user_buf ub;
    if (!user_of(sys, "customer", NULL, NULL, &ub) && !user_of(sys, "user", NULL, NULL, &ub) &&
        !user_of(m, "from", "from_user_id", NULL, &ub)) {
        dead(c, m, "user_identity_changed without a valid system.customer, system.user or from");
        return;
    }
    const char *hash = str_of(sys, "identity");
    long long t = time_of(m, "timestamp");
    const char *why = !hash ? "user_identity_changed without system.identity"
                    : !hash_ok(hash) ? "system.identity is not 1 to 200 bytes of base64"
                    : t <= 0 ? "user_identity_changed without a valid timestamp" : NULL;
    if (why) {
        /* The user's identity changed all the same: the gate closes until the new hash is
         * known (the On-Premises worker asks the WABA client for it). */
        dead(c, m, why);
        ops_unusable(&c->b->ops, ub.ref, why, mid);
        return;
    }
    ops_identity(&c->b->ops, ub.ref, hash, t, OPS_SYSTEM, false, mid, false);
    c->b->identities++;
    c->b->items++;
}

static void parse_number_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    char nw[RECIPIENT_MAX];
    const char *nw_raw = str_of(sys, "new_wa_id");
    if (!nw_raw)
        nw_raw = str_of(sys, "wa_id");
    struct user_buf old;
    if (!user_of(m, "from", "from_user_id", NULL, &old) && !user_of(sys, "customer", NULL, NULL, &old) &&
        !user_of(sys, NULL, "previous_user_id", NULL, &old)) {
        dead(c, m, "number change without a valid from, from_user_id or system.previous_user_id");
        return;
    }
    if (recipient_from_whatsapp(nw_raw, nw, NULL) != 0 || recipient_is_user_id(nw)) {
        dead(c, m, "number change without a valid system.new_wa_id or system.wa_id");
        return;
    }
    long long t = time_of(m, "timestamp");
    const char *uid = str_of(sys, "user_id");
    const char *prev = str_of(sys, "previous_user_id");
    ops_number(&c->b->ops, old.w, nw, uid && recipient_is_user_id(uid) ? uid : NULL,
               prev && recipient_is_user_id(prev) ? prev : NULL, t < 0 ? 0 : t, mid);
    c->b->items++;
}

/* Cloud: the user's business-scoped id changed (system.previous_user_id -> user_id; the
 * parent id likewise). */
static void parse_user_id_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    const char *prev = str_of(sys, "previous_user_id");
    if (!prev)
        prev = str_of(m, "from_user_id");
    const char *uid = str_of(sys, "user_id");
    if (!prev || !uid || !recipient_is_user_id(prev) || !recipient_is_user_id(uid) || strcmp(prev, uid) == 0) {
        dead(c, m, "user_changed_user_id without valid, different system.previous_user_id and system.user_id");
        return;
    }
    char w[RECIPIENT_MAX];
    const char *wa = str_of(sys, "wa_id");
    bool have_w = wa && recipient_from_whatsapp(wa, w, NULL) == 0 && !recipient_is_user_id(w);
    long long t = time_of(m, "timestamp");
    ops_user_id_change(&c->b->ops, prev, uid, have_w ? w : NULL, t < 0 ? 0 : t, mid);
    const char *pprev = str_of(sys, "previous_parent_user_id"), *pcur = str_of(sys, "parent_user_id");
    if (pprev && pcur && recipient_is_parent_id(pprev) && recipient_is_parent_id(pcur) && strcmp(pprev, pcur))
        ops_user_id_change(&c->b->ops, pprev, pcur, have_w ? w : uid, t < 0 ? 0 : t, NULL);
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
    struct user_buf ub;
    if (!user_of(sys, "customer", NULL, NULL, &ub) && !user_of(m, "from", "from_user_id", NULL, &ub) &&
        !user_of(sys, NULL, "user_id", NULL, &ub)) {
        dead(c, m, "system message without a valid user");
        return;
    }
    long long t = time_of(m, "timestamp");
    ops_system(&c->b->ops, ub.ref, st, t < 0 ? 0 : t, mid);
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
     * show_security_notifications (or Meta's identity check) its identity. */
    struct user_buf ub;
    if (!user_of(m, "from", "from_user_id", "from_parent_user_id", &ub)) {
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
    ops_inbound(&c->b->ops, ub.ref, t, mid, type, c->number);
    c->b->items++;
    cloud_identity(c, m, ub.ref, str_of(contact_of(c, ub.ref), "identity_key_hash"), mid, t);

    const cJSON *idn = cJSON_GetObjectItemCaseSensitive(m, "identity");
    if (idn == NULL)
        return;
    const char *hash = cJSON_IsObject(idn) ? str_of(idn, "hash") : NULL;
    long long cts = cJSON_IsObject(idn) ? time_of(idn, "created_timestamp") : -1;
    if (!hash_ok(hash) || cts <= 0) {
        dead(c, m, "message identity without a hash of 1 to 200 bytes of base64 or a valid created_timestamp");
        return;
    }
    ops_identity(&c->b->ops, ub.ref, hash, cts, OPS_MESSAGE,
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
        ops_contact_check(&c->b->ops, in, input, status, have_w && strcmp(status, "valid") == 0 ? w : NULL);
        c->b->items++;
        return;
    }
    struct user_buf ub;
    if (!user_of(ct, "wa_id", "user_id", "parent_user_id", &ub)) {
        dead(c, ct, "contact without status or a valid wa_id or user_id");
        return;
    }
    const cJSON *prof = cJSON_GetObjectItemCaseSensitive(ct, "profile");
    ops_profile(&c->b->ops, ub.ref, cJSON_IsObject(prof) ? str_of(prof, "name") : NULL,
                cJSON_IsObject(prof) ? str_of(prof, "username") : NULL);
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
    /* Since 2026 a failed status may name nobody (no contacts, no recipient_user_id when
     * the send went to a phone number, no recipient_id for a user with a username): the
     * store then finds the user by the message id of the send waguard forwarded. */
    struct user_buf ub;
    bool have = user_of(s, "recipient_id", "recipient_user_id", "recipient_parent_user_id", &ub);
    long long t = time_of(s, "timestamp");
    if (t < 0)
        t = 0;
    char codes[128];
    ops_codes(cJSON_GetObjectItemCaseSensitive(s, "errors"), codes, sizeof codes);
    ops_status(&c->b->ops, id, st, have ? ub.ref : (struct ops_user){ "", NULL, NULL }, codes, c->number);
    c->b->items++;
    const char *hash = have ? str_of(s, "recipient_identity_key_hash") : NULL;
    if (hash) {
        char key[600];
        snprintf(key, sizeof key, "st:%s:%s", id, st);
        cloud_identity(c, s, ub.ref, hash, key, t);
    }
}

static void parse_error(struct pctx *c, const cJSON *e)
{
    if (!cJSON_IsObject(e)) {
        dead(c, e, "error is not an object");
        return;
    }
    long long code;
    if (!ops_code(e, &code)) {
        dead(c, e, "error without a code (a whole number under 10^12, or its digits as a string)");
        return;
    }
    const char *title = str_of(e, "title");
    if (!title)
        title = str_of(e, "message");
    ops_error(&c->b->ops, code, title, str_of(e, "details"));
    c->b->items++;
}

/* An error outside any message that says WhatsApp refused a send for identity (480,
 * 137000): it goes to every user a failed status in the same value names, or, when
 * there is none, is counted as naming no one. */
static void identity_errors(struct pctx *c, const cJSON *value)
{
    char codes[128];
    ops_identity_codes(cJSON_GetObjectItemCaseSensitive(value, "errors"), codes, sizeof codes);
    if (!codes[0])
        return;
    int placed = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(value, "statuses")) {
        const char *st = str_of(s, "status");
        if (!st || strcmp(st, "failed") != 0)
            continue;
        struct user_buf ub;
        bool have = user_of(s, "recipient_id", "recipient_user_id", NULL, &ub);
        ops_refused(&c->b->ops, have ? ub.ref : (struct ops_user){ "", NULL, NULL }, str_of(s, "id"), codes,
                    c->number);
        placed++;
    }
    if (!placed)
        ops_refused(&c->b->ops, (struct ops_user){ "", NULL, NULL }, NULL, codes, c->number);
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

/* The arrays both platforms send.  Contacts first: a message's sender is then known
 * before the message is applied. */
static void parse_value(struct pctx *c, const cJSON *value)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(value, "metadata");
    const char *pnid = str_of(meta, "phone_number_id");
    c->number = pnid && config_number_valid(pnid) ? pnid : NULL;
    c->contacts = cJSON_GetObjectItemCaseSensitive(value, "contacts");
    if (!cJSON_IsArray(c->contacts))
        c->contacts = NULL;
    each(c, value, "contacts", parse_contact);
    each(c, value, "messages", parse_message);
    each(c, value, "statuses", parse_status);
    each(c, value, "errors", parse_error);
    identity_errors(c, value);
}

/* The user_id_update field (documented by Meta in 2026, then said to be delivered as
 * system messages instead; read whenever it comes): value.user_id_update[] with
 * user_id {previous, current}, parent_user_id likewise, and the wa_id when known. */
static void parse_user_id_update(struct pctx *c, const cJSON *value)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(value, "user_id_update");
    if (!cJSON_IsArray(list)) {
        dead(c, value, "user_id_update without a user_id_update array");
        return;
    }
    const cJSON *u;
    cJSON_ArrayForEach(u, list) {
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(u, "user_id");
        const char *prev = str_of(ids, "previous"), *cur = str_of(ids, "current");
        if (!prev || !cur || !recipient_is_user_id(prev) || !recipient_is_user_id(cur) || strcmp(prev, cur) == 0) {
            dead(c, u, "user_id_update without valid, different user_id.previous and user_id.current");
            continue;
        }
        char w[RECIPIENT_MAX];
        const char *wa = str_of(u, "wa_id");
        bool have_w = wa && recipient_from_whatsapp(wa, w, NULL) == 0 && !recipient_is_user_id(w);
        long long t = time_of(u, "timestamp");
        ops_user_id_change(&c->b->ops, prev, cur, have_w ? w : NULL, t < 0 ? 0 : t, NULL);
        const cJSON *pids = cJSON_GetObjectItemCaseSensitive(u, "parent_user_id");
        const char *pprev = str_of(pids, "previous"), *pcur = str_of(pids, "current");
        if (pprev && pcur && recipient_is_parent_id(pprev) && recipient_is_parent_id(pcur) && strcmp(pprev, pcur))
            ops_user_id_change(&c->b->ops, pprev, pcur, have_w ? w : cur, t < 0 ? 0 : t, NULL);
        c->b->items++;
    }
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
            const char *field = str_of(ch, "field");
            if (!cJSON_IsObject(value))
                dead(c, ch, "change without a value object");
            else if (field && strcmp(field, "user_id_update") == 0)
                parse_user_id_update(c, value);
            else
                parse_value(c, value);
        }
    }
}

int webhook_parse(const char *body, size_t len, const char *home_cc,
                  struct webhook_batch *out, const char **why)
{
    memset(out, 0, sizeof *out);
    ops_init(&out->ops);
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
    ops_free(&b->ops);
}
