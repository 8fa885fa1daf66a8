/* gate — see include/gate.h */
#include "gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "business.h"
#include "jsonx.h"
#include "store.h"
#include "text.h"

enum {
#define GATE_GU_(n) GU_##n,
    SCHEMA_GATE_USER(GATE_GU_)
#undef GATE_GU_
    GU_N
};

/* Graph's error_subcode of each reason, as docs/cloud.md lists them (the wire contract). */
static const int reason_subcodes[REASON_COUNT] = {
    [REASON_IDENTITY_UNACKNOWLEDGED] = 1, [REASON_BLOCKED] = 2, [REASON_CONTACT_INVALID] = 3,
    [REASON_OUTSIDE_SESSION_WINDOW] = 4, [REASON_NUMBER_CHANGED] = 5, [REASON_STORE_UNAVAILABLE] = 6,
    [REASON_IDENTITY_RECENTLY_CHANGED] = 7,
};

/* True when an operator lifted this change's hold for the category. */
static bool hold_lifted(const struct gate_facts *f, const char *category)
{
    if (!f->hold_released)
        return false;
    char *end;
    long long at = strtoll(f->hold_released, &end, 10);
    if (*end != ':' || at != f->changed_ms)
        return false;           /* lifted for an earlier change: a new change holds again */
    return strcmp(end + 1, "*") == 0 || strcmp(end + 1, category) == 0;
}

void gate_decide(const struct config *cfg, const struct gate_facts *f, const struct gate_ask *ask,
                 long long now_ms, struct gate_decision *d)
{
    const char *type = ask->type;
    long long now_s = now_ms / 1000;
    memset(d, 0, sizeof *d);
    if (f->store_down) {
        d->allowed = cfg->fail == FAIL_OPEN;
        d->reason[REASON_STORE_UNAVAILABLE] = !d->allowed;
        return;
    }
    /* Open for identity only when acknowledged, or where no identity is known. */
    d->reason[REASON_IDENTITY_UNACKNOWLEDGED] = f->state != GATE_ID_NONE && f->state != GATE_ID_ACKNOWLEDGED;
    d->reason[REASON_BLOCKED] = f->blocked;
    /* A check said valid, or the user wrote to us in the last week. */
    d->reason[REASON_CONTACT_INVALID] = cfg->require_valid_contact &&
        !(f->contact && strcmp(f->contact, "valid") == 0) &&
        !(f->last_in && now_s - f->last_in <= 7 * 86400);
    d->reason[REASON_OUTSIDE_SESSION_WINDOW] = cfg->session_window &&
        strcmp(type, "template") != 0 && strcmp(type, "hsm") != 0 &&
        (f->last_in == 0 || now_s - f->last_in > 86400);
    d->reason[REASON_NUMBER_CHANGED] = f->moved_to != NULL || f->retired_to != NULL;
    /* An account-takeover hold: a sensitive category is refused for a while after the
     * newest identity change, acknowledged or not. */
    const struct hold_category *h = ask->hold;
    if (h && h->seconds > 0 && f->changed_ms > 0 && now_ms < f->changed_ms + h->seconds * 1000 &&
        !hold_lifted(f, h->name)) {
        d->reason[REASON_IDENTITY_RECENTLY_CHANGED] = true;
        d->hold_until = (f->changed_ms + h->seconds * 1000 + 999) / 1000;
    }
    d->allowed = true;
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            d->allowed = false;
}

int gate_decide_all(const struct config *cfg, const struct gate_user *users, int n, const struct gate_ask *ask,
                    long long now_ms, struct gate_decision *d)
{
    int known = 0, report = -1, first_known = -1;
    struct gate_decision all = { .allowed = true };
    for (int i = 0; i < n; i++) {
        if (!users[i].known && !users[i].facts.store_down && !users[i].facts.retired_to)
            continue;
        struct gate_decision one;
        gate_decide(cfg, &users[i].facts, ask, now_ms, &one);
        all.allowed = all.allowed && one.allowed;
        for (int r = 0; r < REASON_COUNT; r++)
            all.reason[r] = all.reason[r] || one.reason[r];
        if (one.hold_until > all.hold_until)
            all.hold_until = one.hold_until;
        if (first_known < 0)
            first_known = i;
        if (report < 0 && !one.allowed)
            report = i;
        if (known < GATE_MAX_CONSIDERED)
            all.considered[known] = users[i].wa_id;
        known++;
    }
    if (known == 0) {
        /* Nobody waguard knows: the most likely user, with no record. */
        gate_decide(cfg, &users[0].facts, ask, now_ms, d);
        return 0;
    }
    all.nconsidered = known > 1 ? (known < GATE_MAX_CONSIDERED ? known : GATE_MAX_CONSIDERED) : 0;
    *d = all;
    return report >= 0 ? report : first_known;
}

cJSON *gate_decision_json(const char *wa_id, const struct gate_facts *f, const struct gate_decision *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "wa_id", wa_id);
    cJSON_AddBoolToObject(o, "allowed", d->allowed);
    cJSON *rs = cJSON_AddArrayToObject(o, "reasons");
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            cJSON_AddItemToArray(rs, cJSON_CreateString(metrics_reason_name((enum reason)i)));
    if (f->state != GATE_ID_NONE) {
        cJSON *id = cJSON_AddObjectToObject(o, "identity");
        cJSON_AddStringToObject(id, "hash", f->hash ? f->hash : "");
        jsonx_add_int(id, "created_timestamp", f->hash ? f->ts_ms / 1000 : 0);
        cJSON_AddBoolToObject(id, "acknowledged", f->state == GATE_ID_ACKNOWLEDGED);
        if (f->state == GATE_ID_HASH_UNKNOWN)
            cJSON_AddBoolToObject(id, "hash_unknown", 1);
    } else {
        cJSON_AddNullToObject(o, "identity");
    }
    if (f->moved_to)
        cJSON_AddStringToObject(o, "new_wa_id", f->moved_to);
    if (f->retired_to)
        cJSON_AddStringToObject(o, "new_user_id", f->retired_to);
    if (d->reason[REASON_IDENTITY_RECENTLY_CHANGED])
        jsonx_add_int(o, "hold_until", d->hold_until);
    if (d->nconsidered > 1) {
        cJSON *c = cJSON_AddArrayToObject(o, "considered");
        for (int i = 0; i < d->nconsidered; i++)
            cJSON_AddItemToArray(c, cJSON_CreateString(d->considered[i]));
    }
    return o;
}

void gate_reasons_text(const struct gate_decision *d, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     metrics_reason_name((enum reason)i));
}

int gate_subcode(const struct gate_decision *d)
{
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            return reason_subcodes[i];
    return 0;
}

static void count(struct app *app, const struct gate_decision *d, const struct gate_ask *ask)
{
    struct metrics *m = app->metrics;
    if (d->allowed)
        m->decisions_allowed++;
    else
        m->decisions_denied++;
    for (int i = 0; i < REASON_COUNT; i++)
        if (d->reason[i])
            m->reasons[i]++;
    if (d->reason[REASON_IDENTITY_RECENTLY_CHANGED]) {
        struct metrics_hold *mh = metrics_hold(m, ask->hold->name);
        if (mh)
            mh->applied++;
    }
}

/* ---- reading the gate function's answer --------------------------------- */

static enum gate_identity state_of(const char *s, bool has_hash)
{
    if (!s)
        return has_hash ? GATE_ID_PENDING : GATE_ID_NONE;   /* a hash in no state: not acknowledged */
    if (strcmp(s, "acknowledged") == 0)
        return GATE_ID_ACKNOWLEDGED;
    if (strcmp(s, "failed") == 0)
        return GATE_ID_FAILED;
    if (strcmp(s, "hash_unknown") == 0)
        return GATE_ID_HASH_UNKNOWN;
    return GATE_ID_PENDING;         /* pending, or a state this version does not know: closed */
}

/* Reads one user's GU_N values.  Values of a shape that makes no sense leave the user as
 * "store down": the decision then refuses (fail = closed). */
static void user_from(redisReply *const *e, struct gate_user *u, long long now_ms)
{
    memset(u, 0, sizeof *u);
    if (e[GU_KEY]->type != REDIS_REPLY_STRING || e[GU_EXISTS]->type != REDIS_REPLY_INTEGER) {
        u->facts.store_down = true;
        u->wa_id = "?";
        return;
    }
    u->wa_id = e[GU_KEY]->str;
    u->known = e[GU_EXISTS]->integer == 1;
    struct gate_facts *f = &u->facts;
    f->hash = store_str(e[GU_HASH]);
    f->ts_ms = f->hash ? store_int(e[GU_TS], 0) : 0;
    f->state = state_of(store_str(e[GU_STATE]), f->hash != NULL);
    f->last_in = store_int(e[GU_LAST_IN], 0);
    f->blocked = store_int(e[GU_BLOCKED], 0) == 1;
    f->moved_to = store_str(e[GU_MOVED_TO]);
    f->retired_to = store_str(e[GU_RETIRED_TO]);
    f->contact = store_str(e[GU_CONTACT]);
    /* A contact check is good for 7 days, as the WABA client caches it. */
    if (f->contact && now_ms - store_int(e[GU_CONTACT_AT], 0) > 7LL * 86400 * 1000)
        f->contact = NULL;
    f->changed_ms = store_int(e[GU_CHANGED_AT], 0);
    f->hold_released = store_str(e[GU_HOLD_RELEASED]);
}

/* Walks the answer for one recipient starting at element *pos; fills up to max users.
 * Returns how many, or -1 when the answer is not what the gate function returns. */
static int users_from(const redisReply *reply, size_t *pos, struct gate_user *users, int max, long long now_ms)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || *pos >= reply->elements ||
        reply->element[*pos]->type != REDIS_REPLY_INTEGER)
        return -1;
    long long n = reply->element[*pos]->integer;
    if (n < 1 || n > max || *pos + 1 + (size_t)n * GU_N > reply->elements)
        return -1;
    (*pos)++;
    for (long long i = 0; i < n; i++) {
        user_from(reply->element + *pos, &users[i], now_ms);
        *pos += GU_N;
    }
    return (int)n;
}

/* The decision over users[0..n) (n < 0: the store could not say, and the recipient's
 * first form stands for the user), counted.  Returns the index of the user reported. */
static int decide(struct app *app, struct gate_user *users, int n, const struct recipient *rcpt,
                  const struct gate_ask *ask, long long now_ms, struct gate_decision *d)
{
    if (n < 0) {
        memset(&users[0], 0, sizeof users[0]);
        users[0].wa_id = rcpt->form[0].key;
        users[0].facts.store_down = true;
        n = 1;
    }
    int at = gate_decide_all(app->cfg, users, n, ask, now_ms, d);
    if (users[at].facts.store_down && d->allowed)
        app->metrics->fail_open++;
    count(app, d, ask);
    return at;
}

int gate_decide_next(struct app *app, const redisReply *reply, size_t *pos, const struct recipient *rcpt,
                     const struct gate_ask *ask, struct gate_user users[GATE_MAX_USERS], struct gate_decision *d)
{
    long long now_ms = app_wall_ms();
    return decide(app, users, users_from(reply, pos, users, GATE_MAX_USERS, now_ms), rcpt, ask, now_ms, d);
}

int gate_fetch_many(struct app *app, const char *number, const char *const *specs, int n,
                    void (*cb)(struct app *app, struct redisReply *reply, void *arg), void *arg)
{
    const char **argv = calloc((size_t)n + 1, sizeof *argv);
    if (!argv)
        return -1;
    argv[0] = number;
    for (int i = 0; i < n; i++)
        argv[i + 1] = specs[i];
    int rc = store_call(app, STORE_GATE, n + 1, argv, NULL, (store_cb *)cb, arg);
    free(argv);
    return rc;
}

/* ---- one recipient, for other modules --------------------------------- */

struct check {
    gate_cb *cb;
    gate_fetch_cb *fetch_cb;     /* gate_fetch: the users, no decision */
    void *arg;
    struct recipient rcpt;
    char type[32];
    const struct hold_category *hold;
    char number[BUSINESS_NUMBER_MAX];  /* "-": On-Premises' one; "": every number seen */
    /* the plain reads (below): the distinct form keys read, in order, and the number
     * forms whose mapping is read (borrowed from rcpt) */
    int nkeys, nmapped;
    const char *key[RECIPIENT_FORMS], *mapped_key[RECIPIENT_FORMS];
    bool per_number;                   /* one named number: its window and block are read */
    bool exists;                       /* each key's EXISTS is read too (below) */
};

/* The users of one recipient are read (n of them; n < 0: the store could not say): decide
 * (or hand them over, gate_fetch), then free the check. */
static void facts_read(struct app *app, struct check *c, struct gate_user *users, int n)
{
    if (c->fetch_cb) {
        for (int i = 0; i < n; i++)
            if (users[i].facts.store_down)
                n = -1;
        c->fetch_cb(app, n > 0 ? users : NULL, n > 0 ? n : -1, c->arg);
        free(c);
        return;
    }
    struct gate_decision d;
    struct gate_ask ask = { .type = c->type, .hold = c->hold };
    int at = decide(app, users, n, &c->rcpt, &ask, app_wall_ms(), &d);
    c->cb(app, users[at].wa_id, &users[at].facts, &d, c->arg);
    free(c);
}

static void on_facts(struct app *app, redisReply *reply, void *arg)
{
    struct check *c = arg;
    struct gate_user users[GATE_MAX_USERS];
    size_t pos = 0;
    facts_read(app, c, users, users_from(reply, &pos, users, GATE_MAX_USERS, app_wall_ms()));
}

/* Asks the gate function; returns 0, or -1 (out of memory: nothing sent, c not freed). */
static int ask_function(struct app *app, struct check *c)
{
    char spec[RECIPIENT_SPEC_MAX];
    const char *argv[] = { c->number, spec };
    if (recipient_spec(&c->rcpt, spec, sizeof spec) != 0 ||
        store_call(app, STORE_GATE, 2, argv, NULL, on_facts, c) != 0)
        return -1;
    return 0;
}

/* ---- the common case, without the function -----------------------------------------
 * A recipient whose forms are all wa_ids or numbers (no user id: nothing to resolve),
 * for On-Premises' one number or one named business number, is read in one transaction
 * of plain commands: each number form's contact mapping, then each form's record (the
 * fields of SCHEMA_GATE_FIELDS, and the number's window and block) and whether it exists.
 * When no mapping names anyone, the users are the forms' own records in their order
 * (recipient.h); when one does, the recipient goes to the gate function, which resolves
 * it whole (the rare form pays for itself).  The facts are the function's (gate.lua).
 * Whether a record exists tells a known user from one never seen only where there is a
 * choice (several records, or a caller that asks for the users themselves): a decision
 * about one record is the same either way (gate_decide_all), so it reads no EXISTS. */
enum {
#define GATE_RF_(E, name) RF_##E,
    SCHEMA_RECORD_FIELDS(GATE_RF_)
#undef GATE_RF_
    RF_N
};
static const char *const record_field[RF_N] = {
#define GATE_RF_NAME_(E, name) [RF_##E] = #name,
    SCHEMA_RECORD_FIELDS(GATE_RF_NAME_)
#undef GATE_RF_NAME_
};
static const int gate_fields[] = {
#define GATE_GF_(E) RF_##E,
    SCHEMA_GATE_FIELDS(GATE_GF_)
#undef GATE_GF_
};
#define GATE_NF ((int)(sizeof gate_fields / sizeof gate_fields[0]))
/* the facts each gate field is, in the function's answer (SCHEMA_GATE_USER) */
static const int gate_field_gu[GATE_NF] = {
#define GATE_GU_OF_(E) GU_##E,
    SCHEMA_GATE_FIELDS(GATE_GU_OF_)
#undef GATE_GU_OF_
};

#define PLAIN_KEY_MAX (RECIPIENT_MAX + 96)     /* a prefix of up to 64 bytes, ":contact:{", "}" */
#define PLAIN_ARGS (2 + GATE_NF + 2)            /* HMGET key fields… window block */

static bool plain_fits(const struct app *app, const struct check *c)
{
    if (c->number[0] == '\0')
        return false;            /* several numbers: the function reads the strictest */
    if (strlen(app->cfg->key_prefix) + RECIPIENT_MAX + sizeof ":" SCHEMA_KEY_CONTACT ":{}" > PLAIN_KEY_MAX)
        return false;            /* a very long prefix: the function names the keys */
    for (int i = 0; i < c->rcpt.n; i++)
        if (recipient_is_user_id(c->rcpt.form[i].key))
            return false;
    return c->rcpt.n > 0;
}

static void on_plain(struct app *app, redisReply *reply, void *arg)
{
    struct check *c = arg;
    struct gate_user users[GATE_MAX_USERS];
    size_t per_key = c->exists ? 2 : 1;
    size_t want = (size_t)c->nmapped + per_key * (size_t)c->nkeys;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != want) {
        facts_read(app, c, users, -1);
        return;
    }
    for (int i = 0; i < c->nmapped; i++) {
        const redisReply *m = reply->element[i];
        if (m->type != REDIS_REPLY_NIL && m->type != REDIS_REPLY_STRING) {
            facts_read(app, c, users, -1);
            return;
        }
        /* a mapping to the number's own digits names no one new; any other goes to the
         * function, which resolves the recipient whole */
        if (m->type == REDIS_REPLY_STRING && m->len > 0 && strcmp(m->str, c->mapped_key[i]) != 0) {
            if (ask_function(app, c) != 0)
                facts_read(app, c, users, -1);
            return;
        }
    }
    /* Each user's values as the function answers them (user_from reads those). */
    long long now_ms = app_wall_ms();
    redisReply nil = { .type = REDIS_REPLY_NIL }, keys[RECIPIENT_FORMS], some[RECIPIENT_FORMS];
    for (int k = 0; k < c->nkeys; k++) {
        const redisReply *v = reply->element[c->nmapped + per_key * (size_t)k];
        const redisReply *ex = c->exists ? reply->element[c->nmapped + per_key * (size_t)k + 1] : NULL;
        if (v->type != REDIS_REPLY_ARRAY || v->elements != (size_t)(GATE_NF + (c->per_number ? 2 : 0)) ||
            (ex && ex->type != REDIS_REPLY_INTEGER)) {
            facts_read(app, c, users, -1);
            return;
        }
        if (!ex) {
            /* no EXISTS read: known when any field is there */
            some[k] = (redisReply){ .type = REDIS_REPLY_INTEGER };
            for (size_t j = 0; j < v->elements; j++)
                some[k].integer = some[k].integer || v->element[j]->type != REDIS_REPLY_NIL;
            ex = &some[k];
        }
        redisReply *e[GU_N];
        for (int j = 0; j < GU_N; j++)
            e[j] = &nil;
        keys[k] = (redisReply){ .type = REDIS_REPLY_STRING, .str = (char *)c->key[k], .len = strlen(c->key[k]) };
        e[GU_KEY] = &keys[k];
        e[GU_EXISTS] = (redisReply *)ex;
        for (int j = 0; j < GATE_NF; j++)
            e[gate_field_gu[j]] = v->element[j];
        if (c->per_number) {
            /* one number: its window, and blocked when the plain field or the number's says so */
            e[GU_LAST_IN] = v->element[GATE_NF];
            if (store_int(e[GU_BLOCKED], 0) != 1)
                e[GU_BLOCKED] = v->element[GATE_NF + 1];
        }
        user_from(e, &users[k], now_ms);
    }
    facts_read(app, c, users, c->nkeys);
}

/* Sends the transaction; returns 0, or -1 (out of memory: nothing sent, c not freed).
 * The key names live only until store_plain returns (hiredis copies the commands). */
static int plain_ask(struct app *app, struct check *c)
{
    const char *prefix = app->cfg->key_prefix;
    char window[CONFIG_NUMBER_MAX + 16], block[CONFIG_NUMBER_MAX + 16];
    char ukey[RECIPIENT_FORMS][PLAIN_KEY_MAX], ckey[RECIPIENT_FORMS][PLAIN_KEY_MAX];
    c->per_number = strcmp(c->number, "-") != 0;
    if (c->per_number) {
        text_join(window, sizeof window, record_field[RF_LAST_IN], SCHEMA_NUMBER_SEP, c->number, (char *)NULL);
        text_join(block, sizeof block, record_field[RF_BLOCKED], SCHEMA_NUMBER_SEP, c->number, (char *)NULL);
    }
    enum { MAXCMDS = RECIPIENT_FORMS * 3 };
    int argc[MAXCMDS];
    const char *args[MAXCMDS][PLAIN_ARGS];
    const char *const *argv[MAXCMDS];
    int n = 0;
    c->nkeys = c->nmapped = 0;
    c->exists = c->fetch_cb != NULL;
    for (int i = 1; i < c->rcpt.n; i++)
        c->exists = c->exists || strcmp(c->rcpt.form[i].key, c->rcpt.form[0].key) != 0;
    for (int i = 0; i < c->rcpt.n; i++) {
        const struct recipient_form *f = &c->rcpt.form[i];
        if (f->kind != RECIPIENT_NUMBER)
            continue;
        int m = c->nmapped++;
        c->mapped_key[m] = f->key;
        text_join(ckey[m], sizeof ckey[m], prefix, ":" SCHEMA_KEY_CONTACT ":{", f->key, "}", (char *)NULL);
        args[n][0] = "HGET";
        args[n][1] = ckey[m];
        args[n][2] = SCHEMA_CONTACT_WA_ID;
        argc[n++] = 3;
    }
    for (int i = 0; i < c->rcpt.n; i++) {
        const char *key = c->rcpt.form[i].key;
        bool again = false;
        for (int k = 0; k < c->nkeys; k++)
            again = again || strcmp(c->key[k], key) == 0;
        if (again)
            continue;
        int k = c->nkeys++;
        c->key[k] = key;
        text_join(ukey[k], sizeof ukey[k], prefix, ":" SCHEMA_KEY_USER ":{", key, "}", (char *)NULL);
        args[n][0] = "HMGET";
        args[n][1] = ukey[k];
        int a = 2;
        for (int j = 0; j < GATE_NF; j++)
            args[n][a++] = record_field[gate_fields[j]];
        if (c->per_number) {
            args[n][a++] = window;
            args[n][a++] = block;
        }
        argc[n++] = a;
        if (c->exists) {
            args[n][0] = "EXISTS";
            args[n][1] = ukey[k];
            argc[n++] = 2;
        }
    }
    for (int i = 0; i < n; i++)
        argv[i] = args[i];
    return store_plain(app, n, argc, argv, on_plain, c);
}

static int ask(struct app *app, struct check *c, const char *number)
{
    text_copy(c->number, sizeof c->number, number);
    if ((plain_fits(app, c) ? plain_ask(app, c) : ask_function(app, c)) == 0)
        return 0;
    free(c);
    return -1;
}

int gate_check(struct app *app, const struct recipient *rcpt, const struct gate_query *q, gate_cb *cb, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->cb = cb;
    c->arg = arg;
    c->rcpt = *rcpt;
    c->hold = q->hold;
    text_copy(c->type, sizeof c->type, q->type ? q->type : "text");
    return ask(app, c, q->number ? q->number : "");
}

int gate_fetch(struct app *app, const struct recipient *rcpt, gate_fetch_cb *cb, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->fetch_cb = cb;
    c->arg = arg;
    c->rcpt = *rcpt;
    char number[BUSINESS_NUMBER_MAX];
    business_number_for(app->cfg, NULL, number, sizeof number);
    return ask(app, c, number);
}
