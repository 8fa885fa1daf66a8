/* webhook_parse — see include/webhook_parse.h
 *
 * Reads top to bottom: webhook_parse() picks the envelope, parse_value() hands each
 * array to its item handler, and each handler turns one item into operations or a
 * dead letter with the reason. */
#include "webhook_parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"

struct pctx {
    struct webhook_batch *b;
    const char *home_cc;
    const cJSON *contacts;      /* the contacts array beside the messages being parsed */
};

/* ---- small readers ---------------------------------------------------- */

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return (cJSON_IsString(v) && v->valuestring[0] != '\0') ? v->valuestring : NULL;
}

/* A timestamp given as a string or a number; returns -1 when absent or malformed. */
static long long num_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble < 0 || v->valuedouble > 9e15)
            return -1;
        return (long long)v->valuedouble;
    }
    if (cJSON_IsString(v)) {
        char *end;
        errno = 0;
        long long n = strtoll(v->valuestring, &end, 10);
        if (errno || end == v->valuestring || *end != '\0' || n < 0 || n > 9000000000000000LL)
            return -1;
        return n;
    }
    return -1;
}

static void dead(struct pctx *c, const cJSON *item, const char *reason)
{
    cJSON *op = cJSON_CreateObject();
    cJSON_AddStringToObject(op, "k", "dead");
    cJSON_AddStringToObject(op, "reason", reason);
    char *text = cJSON_PrintUnformatted(item);
    cJSON_AddStringToObject(op, "item", text ? text : "");
    cJSON_free(text);
    cJSON_AddItemToArray(c->b->ops, op);
    c->b->dead++;
}

static cJSON *op_new(struct pctx *c, const char *kind)
{
    cJSON *op = cJSON_CreateObject();
    cJSON_AddStringToObject(op, "k", kind);
    cJSON_AddItemToArray(c->b->ops, op);
    return op;
}

/* A wa_id as WhatsApp sends it (international, no '+'), or a BSUID. */
static bool wa_id_of(const char *raw, char out[PHONE_MAX])
{
    return raw && phone_normalise(raw, NULL, out, PHONE_MAX, NULL) == 0;
}

/* Cloud API identity check: the identity_key_hash of an inbound message's contact
 * and a status's recipient_identity_key_hash are observations of the user's hash.
 * They are part of that message or status (key: its duplicate check) and ordered by
 * its timestamp (seconds; 0: when it reaches Redis). */
static void cloud_identity(struct pctx *c, const char *w, const char *hash, const char *key, long long ts)
{
    if (!hash)
        return;
    if (strlen(hash) > 200) {
        dead(c, NULL, "identity_key_hash longer than 200 bytes");
        return;
    }
    cJSON *op = op_new(c, "id");
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddStringToObject(op, "h", hash);
    cJSON_AddNumberToObject(op, "t", ts > 0 ? (double)ts * 1000.0 : 0);
    cJSON_AddStringToObject(op, "src", "cloud");
    if (key)
        cJSON_AddStringToObject(op, "mid", key);
    cJSON_AddBoolToObject(op, "part", 1);
    c->b->identities++;
}

/* The identity_key_hash the contacts array gives for user w, or NULL. */
static const char *contact_key_hash(const struct pctx *c, const char *w)
{
    const cJSON *ct;
    cJSON_ArrayForEach(ct, c->contacts) {
        const char *id = str_of(ct, "wa_id");
        if (!id)
            id = str_of(ct, "user_id");
        char cw[PHONE_MAX];
        if (wa_id_of(id, cw) && strcmp(cw, w) == 0)
            return str_of(ct, "identity_key_hash");
    }
    return NULL;
}

/* ---- messages --------------------------------------------------------- */

static void parse_identity_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    const char *who = str_of(sys, "customer");
    if (!who)
        who = str_of(sys, "user");
    if (!who)
        who = str_of(m, "from");
    char w[PHONE_MAX];
    const char *hash = str_of(sys, "identity");
    long long ts = num_of(m, "timestamp");
    if (!wa_id_of(who, w)) {
        dead(c, m, "user_identity_changed without a valid system.customer, system.user or from");
        return;
    }
    if (!hash) {
        dead(c, m, "user_identity_changed without system.identity");
        return;
    }
    if (strlen(hash) > 200) {
        dead(c, m, "system.identity longer than 200 bytes");
        return;
    }
    if (ts < 0) {
        dead(c, m, "user_identity_changed without a valid timestamp");
        return;
    }
    cJSON *op = op_new(c, "id");
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddStringToObject(op, "h", hash);
    cJSON_AddNumberToObject(op, "t", (double)ts * 1000.0);
    cJSON_AddStringToObject(op, "src", "system");
    if (mid)
        cJSON_AddStringToObject(op, "mid", mid);
    c->b->identities++;
    c->b->items++;
}

static void parse_number_change(struct pctx *c, const cJSON *m, const cJSON *sys, const char *mid)
{
    const char *nw_raw = str_of(sys, "new_wa_id");
    if (!nw_raw)
        nw_raw = str_of(sys, "wa_id");
    const char *old_raw = str_of(m, "from");
    if (!old_raw)
        old_raw = str_of(sys, "customer");
    char oldw[PHONE_MAX], nw[PHONE_MAX];
    if (!wa_id_of(old_raw, oldw)) {
        dead(c, m, "number change without a valid from");
        return;
    }
    if (!wa_id_of(nw_raw, nw)) {
        dead(c, m, "number change without a valid system.new_wa_id or system.wa_id");
        return;
    }
    long long ts = num_of(m, "timestamp");
    cJSON *op = op_new(c, "num");
    cJSON_AddStringToObject(op, "w", oldw);
    cJSON_AddStringToObject(op, "nw", nw);
    cJSON_AddNumberToObject(op, "t", ts < 0 ? 0 : (double)ts);
    if (mid)
        cJSON_AddStringToObject(op, "mid", mid);
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
    const cJSON *sys = cJSON_GetObjectItemCaseSensitive(m, "system");

    if (type && strcmp(type, "system") == 0) {
        const char *st = cJSON_IsObject(sys) ? str_of(sys, "type") : NULL;
        if (!st) {
            dead(c, m, "system message without system.type");
            return;
        }
        if (strcmp(st, "user_identity_changed") == 0)
            {
                parse_identity_change(c, m, sys, mid);
                return;
            }
        if (strcmp(st, "user_changed_number") == 0 || strcmp(st, "customer_changed_number") == 0)
            {
                parse_number_change(c, m, sys, mid);
                return;
            }
        const char *who = str_of(sys, "customer");
        if (!who)
            who = str_of(m, "from");
        if (!who)
            who = str_of(m, "from_user_id");
        char w[PHONE_MAX];
        if (!wa_id_of(who, w)) {
            dead(c, m, "system message without a valid user");
            return;
        }
        long long ts = num_of(m, "timestamp");
        cJSON *op = op_new(c, "sys");
        cJSON_AddStringToObject(op, "w", w);
        cJSON_AddStringToObject(op, "st", st);
        cJSON_AddNumberToObject(op, "t", ts < 0 ? 0 : (double)ts);
        if (mid)
            cJSON_AddStringToObject(op, "mid", mid);
        c->b->items++;
        return;
    }

    /* An ordinary inbound message: the sender's 24-hour window, and with
     * show_security_notifications its identity. */
    const char *from = str_of(m, "from");
    if (!from)
        from = str_of(m, "from_user_id");
    char w[PHONE_MAX];
    if (!wa_id_of(from, w)) {
        dead(c, m, "message without a valid from");
        return;
    }
    if (!mid) {
        dead(c, m, "message without id");
        return;
    }
    long long ts = num_of(m, "timestamp");
    cJSON *op = op_new(c, "in");
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddNumberToObject(op, "t", ts < 0 ? 0 : (double)ts);
    cJSON_AddStringToObject(op, "mid", mid);
    cJSON_AddStringToObject(op, "type", type ? type : "unknown");
    c->b->items++;
    cloud_identity(c, w, contact_key_hash(c, w), mid, ts);

    const cJSON *idn = cJSON_GetObjectItemCaseSensitive(m, "identity");
    if (idn == NULL)
        return;
    const char *hash = cJSON_IsObject(idn) ? str_of(idn, "hash") : NULL;
    long long cts = cJSON_IsObject(idn) ? num_of(idn, "created_timestamp") : -1;
    if (!hash || cts < 0 || strlen(hash) > 200) {
        dead(c, m, "message identity without hash or created_timestamp, or a hash over 200 bytes");
        return;
    }
    const cJSON *ackd = cJSON_GetObjectItemCaseSensitive(idn, "acknowledged");
    cJSON *iop = op_new(c, "id");
    cJSON_AddStringToObject(iop, "w", w);
    cJSON_AddStringToObject(iop, "h", hash);
    /* created_timestamp is documented in milliseconds; a seconds value is scaled. */
    cJSON_AddNumberToObject(iop, "t", (double)(cts < 100000000000LL ? cts * 1000 : cts));
    cJSON_AddStringToObject(iop, "src", "message");
    cJSON_AddBoolToObject(iop, "ack", cJSON_IsTrue(ackd) ||
                          (cJSON_IsString(ackd) && strcmp(ackd->valuestring, "true") == 0));
    cJSON_AddStringToObject(iop, "mid", mid);
    cJSON_AddBoolToObject(iop, "part", 1);      /* shares the message's duplicate check */
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
    const char *wa = str_of(ct, "wa_id");
    char w[PHONE_MAX];
    if (status) {
        static const char *const known[] = { "processing", "valid", "invalid", "failed" };
        bool ok = false;
        for (size_t i = 0; i < 4; i++)
            ok = ok || strcmp(status, known[i]) == 0;
        if (!ok) {
            dead(c, ct, "contact status is not processing, valid, invalid or failed");
            return;
        }
        const char *input = str_of(ct, "input");
        char in[PHONE_MAX];
        if (!input || phone_normalise(input, c->home_cc, in, sizeof in, NULL) != 0) {
            if (!wa_id_of(wa, in)) {
                dead(c, ct, "contact check without a dialable input");
                return;
            }
        }
        cJSON *op = op_new(c, "cc");
        cJSON_AddStringToObject(op, "in", in);
        cJSON_AddStringToObject(op, "raw", input ? input : "");
        cJSON_AddStringToObject(op, "st", status);
        if (wa && strcmp(status, "valid") == 0 && wa_id_of(wa, w))
            cJSON_AddStringToObject(op, "w", w);
        c->b->items++;
        return;
    }
    if (!wa)
        wa = str_of(ct, "user_id");
    if (!wa_id_of(wa, w)) {
        dead(c, ct, "contact without status or a valid wa_id");
        return;
    }
    const cJSON *prof = cJSON_GetObjectItemCaseSensitive(ct, "profile");
    const char *name = cJSON_IsObject(prof) ? str_of(prof, "name") : NULL;
    cJSON *op = op_new(c, "prof");
    cJSON_AddStringToObject(op, "w", w);
    cJSON_AddStringToObject(op, "name", name ? name : "");
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
    if (!id || !st) {
        dead(c, s, "status without id or status");
        return;
    }
    const char *rcpt = str_of(s, "recipient_id");
    if (!rcpt)
        rcpt = str_of(s, "recipient_user_id");
    char w[PHONE_MAX] = "";
    if (rcpt && !wa_id_of(rcpt, w))
        w[0] = '\0';
    cJSON *op = op_new(c, "st");
    cJSON_AddStringToObject(op, "id", id);
    cJSON_AddStringToObject(op, "st", st);
    cJSON_AddStringToObject(op, "w", w);
    long long ts = num_of(s, "timestamp");
    cJSON_AddNumberToObject(op, "t", ts < 0 ? 0 : (double)ts);
    cJSON *codes = cJSON_AddArrayToObject(op, "codes");
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(s, "errors");
    const cJSON *e;
    cJSON_ArrayForEach(e, errs) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
        if (cJSON_IsNumber(code))
            cJSON_AddItemToArray(codes, cJSON_CreateNumber(code->valuedouble));
    }
    c->b->items++;
    if (w[0]) {
        char key[600];
        snprintf(key, sizeof key, "st:%.280s:%.280s", id, st);
        cloud_identity(c, w, str_of(s, "recipient_identity_key_hash"), key, ts);
    }
}

static void parse_error(struct pctx *c, const cJSON *e)
{
    if (!cJSON_IsObject(e)) {
        dead(c, e, "error is not an object");
        return;
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (!cJSON_IsNumber(code)) {
        dead(c, e, "error without a numeric code");
        return;
    }
    const char *title = str_of(e, "title");
    if (!title)
        title = str_of(e, "message");
    const char *details = str_of(e, "details");
    cJSON *op = op_new(c, "err");
    cJSON_AddNumberToObject(op, "code", code->valuedouble);
    cJSON_AddStringToObject(op, "title", title ? title : "");
    cJSON_AddStringToObject(op, "details", details ? details : "");
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
        {
            dead(c, arr, reason);
            return;
        }
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
        fn(c, it);
}

/* The four arrays both platforms send.  Contacts first: a message's sender is then
 * known before the message is applied. */
static void parse_value(struct pctx *c, const cJSON *value)
{
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
