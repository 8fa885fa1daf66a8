/* webhook_parse — see include/webhook_parse.h
 *
 * Reads top to bottom: webhook_parse() picks the envelope, parse_value() hands each
 * array to its item handler, and each handler turns one item into operations (ops.h)
 * or a dead letter with the reason.  Users are named through recipient.h, times read
 * through wtime.h: no rule about either is written here. */
#include "webhook_parse.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "business.h"
#include "jsonx.h"
#include "recipient.h"
#include "wtime.h"

/* A name a contact of the contacts array goes by (its wa_id, its user id), and where the
 * contact is in the array: contact_of's index, sorted by name then place. */
struct contact_name {
    char *name;                 /* owned */
    int at;
};

struct pctx {
    struct webhook_batch *b;
    const char *home_cc;
    const cJSON *contacts;      /* the contacts array beside the messages being parsed */
    const char *number;         /* Cloud: metadata.phone_number_id of the value; NULL On-Premises */
    long ndead;                 /* items that could not be understood (at most DEAD_KEPT kept) */
    /* contact_of's index of a long contacts array, made at its first use (NULL: not made,
     * or out of memory: contacts are then looked through one by one) */
    struct contact_name *names;
    const cJSON **by_place;     /* the contacts in array order */
    int nnames;
    bool indexed;
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

/* Dead letters a body keeps item by item; the rest are counted in one more.  A body of a
 * million items nobody can read would otherwise be a million writes, too many for one
 * call in Redis's time-out: answered 503 and sent again, for days, never recorded. */
enum { DEAD_KEPT = 100 };

static void dead(struct pctx *c, const cJSON *item, const char *reason)
{
    if (c->ndead++ >= DEAD_KEPT)
        return;
    ops_dead(&c->b->ops, reason, item);
    c->b->dead++;
}

static void twice_closes(struct pctx *c, const cJSON *node, int depth);

/* An object with a key twice (key): cJSON would read the first, another reader the last,
 * so what it says is not known; it is kept as a dead letter, the rest of the body applied,
 * and the gates of the users it could be an identity change for close (twice_closes). */
static void twice(struct pctx *c, const cJSON *item, const char *key)
{
    char reason[192];
    snprintf(reason, sizeof reason, "the key \"%.100s\" appears twice in one object: it can be read two ways", key);
    dead(c, item, reason);
    twice_closes(c, item, 0);
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

/* Whether object o has a member named key whose value is the string want (any of them,
 * when the key is there twice), or any member named key when want is NULL. */
static bool has_member(const cJSON *o, const char *key, const char *want)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, o)
        if (m->string && strcmp(m->string, key) == 0 &&
            (!want || (cJSON_IsString(m) && strcmp(m->valuestring, want) == 0)))
            return true;
    return false;
}

/* Every user named under key in o, in any reading of it (each member of that name): the
 * gate of each closes until its hash is known, as for an identity change that cannot be
 * used. */
static void close_named(struct pctx *c, const cJSON *o, const char *key, const char *why)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, o) {
        if (!m->string || strcmp(m->string, key) != 0 || !cJSON_IsString(m))
            continue;
        char w[RECIPIENT_MAX];
        if (recipient_from_whatsapp(m->valuestring, w, NULL) == 0 ||
            (recipient_is_user_id(m->valuestring) && snprintf(w, sizeof w, "%s", m->valuestring) > 0))
            ops_unusable(&c->b->ops, (struct ops_user){ .w = w }, why, NULL);
    }
}

/* Something that can be read two ways (an object with a key twice, and all it holds): the
 * promise cannot hang on which reading is right, so wherever one reading could carry an
 * identity change (a system message, a contact's identity key hash, a status's recipient
 * hash), every user any reading names there waits for their hash. */
static void twice_closes(struct pctx *c, const cJSON *node, int depth)
{
    static const char why[] = "a webhook item that can be read two ways (a key twice) may be an identity change";
    if (depth > 64 || (!cJSON_IsObject(node) && !cJSON_IsArray(node)))
        return;
    if (cJSON_IsObject(node)) {
        if (has_member(node, "type", "system") || has_member(node, "system", NULL)) {
            close_named(c, node, "from", why);
            close_named(c, node, "from_user_id", why);
            const cJSON *m;
            cJSON_ArrayForEach(m, node)
                if (m->string && strcmp(m->string, "system") == 0 && cJSON_IsObject(m)) {
                    close_named(c, m, "customer", why);
                    close_named(c, m, "user", why);
                }
        }
        if (has_member(node, "identity_key_hash", NULL)) {
            close_named(c, node, "wa_id", why);
            close_named(c, node, "user_id", why);
        }
        if (has_member(node, "recipient_identity_key_hash", NULL)) {
            close_named(c, node, "recipient_id", why);
            close_named(c, node, "recipient_user_id", why);
        }
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, node)
        twice_closes(c, m, depth + 1);
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

/* The contact the contacts array gives for the user: the first whose names (wa_id, user
 * id) include one of the user's, or NULL.  A few contacts are looked through; many (a
 * batch of thousands) through an index made once, not once for every message. */
enum { CONTACTS_SCANNED = 8 };

static int cmp_contact_name(const void *a, const void *b)
{
    const struct contact_name *x = a, *y = b;
    int d = strcmp(x->name, y->name);
    return d ? d : (x->at > y->at) - (x->at < y->at);
}

static void contacts_unindex(struct pctx *c)
{
    for (int i = 0; i < c->nnames; i++)
        free(c->names[i].name);
    free(c->names);
    free(c->by_place);
    c->names = NULL;
    c->by_place = NULL;
    c->nnames = 0;
    c->indexed = false;
}

static bool contacts_index(struct pctx *c)
{
    int n = cJSON_GetArraySize(c->contacts);
    c->indexed = true;
    c->names = malloc((size_t)n * 2 * sizeof *c->names);
    c->by_place = malloc((size_t)n * sizeof *c->by_place);
    if (!c->names || !c->by_place) {
        contacts_unindex(c);
        c->indexed = true;
        return false;
    }
    int at = 0;
    const cJSON *ct;
    cJSON_ArrayForEach(ct, c->contacts) {
        c->by_place[at] = ct;
        struct user_buf cu;
        if (!jsonx_duplicate_key(ct) && user_of(ct, "wa_id", "user_id", NULL, &cu)) {
            const char *names[2] = { cu.w, cu.ref.u };
            for (int k = 0; k < 2 && names[k]; k++) {
                char *copy = strdup(names[k]);
                if (!copy) {
                    contacts_unindex(c);
                    c->indexed = true;
                    return false;
                }
                c->names[c->nnames++] = (struct contact_name){ copy, at };
            }
        }
        at++;
    }
    qsort(c->names, (size_t)c->nnames, sizeof *c->names, cmp_contact_name);
    return true;
}

/* The place of the first contact named name in the index, or INT_MAX. */
static int indexed_place(const struct pctx *c, const char *name)
{
    int lo = 0, hi = c->nnames;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(c->names[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nnames && strcmp(c->names[lo].name, name) == 0 ? c->names[lo].at : INT_MAX;
}

static const cJSON *contact_of(struct pctx *c, struct ops_user who)
{
    if (!c->contacts)
        return NULL;
    if (!c->indexed && cJSON_GetArraySize(c->contacts) > CONTACTS_SCANNED)
        (void)contacts_index(c);
    if (c->names) {
        int a = indexed_place(c, who.w), b = who.u ? indexed_place(c, who.u) : INT_MAX;
        int at = a < b ? a : b;
        return at == INT_MAX ? NULL : c->by_place[at];
    }
    const cJSON *ct;
    cJSON_ArrayForEach(ct, c->contacts) {
        struct user_buf cu;
        if (jsonx_duplicate_key(ct) || !user_of(ct, "wa_id", "user_id", NULL, &cu))
            continue;               /* a contact read two ways gives no hash (twice_closes) */
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
    /* a system object says what the message is when no type does (a change announced
     * without "type" is still a change, never an ordinary message that opens a window) */
    if ((type && strcmp(type, "system") == 0) ||
        (!type && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(m, "system")))) {
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
    cJSON_ArrayForEach(it, arr) {
        const char *dup = jsonx_duplicate_key(it);
        if (dup)
            twice(c, it, dup);   /* read one way by cJSON, another by someone else: neither */
        else
            fn(c, it);
    }
}

/* The arrays both platforms send.  Contacts first: a message's sender is then known
 * before the message is applied. */
static void parse_value(struct pctx *c, const cJSON *value)
{
    const char *dup = jsonx_own_duplicate(value);
    if (dup) {
        twice(c, value, dup);
        return;
    }
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
    contacts_unindex(c);
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
        const char *dup = jsonx_own_duplicate(entry);
        if (dup) {
            twice(c, entry, dup);
            continue;
        }
        if (!cJSON_IsArray(changes)) {
            dead(c, entry, "entry without a changes array");
            continue;
        }
        const cJSON *ch;
        cJSON_ArrayForEach(ch, changes) {
            if ((dup = jsonx_own_duplicate(ch)) != NULL) {
                twice(c, ch, dup);
                continue;
            }
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
                  struct webhook_batch *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    ops_init(&out->ops);
    cJSON *root = jsonx_parse_one(body, len, why, whylen);
    if (!root)
        return -1;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(why, whylen, "the body is not a JSON object");
        return -1;
    }
    struct pctx c = { .b = out, .home_cc = home_cc };
    const cJSON *entry = cJSON_GetObjectItemCaseSensitive(root, "entry");

    const char *dup = jsonx_own_duplicate(root);
    if (dup)
        twice(&c, root, dup);               /* the envelope itself: nothing of it is known */
    else if (cJSON_IsArray(entry))
        parse_cloud(&c, root);
    else if (entry || cJSON_GetObjectItemCaseSensitive(root, "object"))
        dead(&c, root, "a Cloud API envelope (object, entry) without an entry array");
    else
        parse_value(&c, root);
    if (c.ndead > DEAD_KEPT) {
        char more[128];
        snprintf(more, sizeof more, "%ld more items of this body could not be understood (the first %d are kept)",
                 c.ndead - DEAD_KEPT, DEAD_KEPT);
        ops_dead(&out->ops, more, NULL);
        out->dead++;
    }
    cJSON_Delete(root);
    return 0;
}

void webhook_batch_free(struct webhook_batch *b)
{
    ops_free(&b->ops);
}
