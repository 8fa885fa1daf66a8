/* send — see include/send.h
 * Reads top to bottom: read the body exactly one way → gate every user it names → refuse
 * (423) or pin the acknowledged hash → forward → record what the answer says (the
 * message id of a send that went out, a refusal for identity) → answer as it came. */
#include "send.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "business.h"
#include "envelope.h"
#include "forward.h"
#include "gate.h"
#include "gate_http.h"
#include "jsonx.h"
#include "ops.h"
#include "recipient.h"
#include "sentmem.h"
#include "store.h"
#include "text.h"

/* Meta's Graph error for a BSUID recipient a message type does not take (2026). */
#define GRAPH_BSUID_UNSUPPORTED 131062

struct send {
    struct recipient rcpt;       /* every user the body names: "to"'s forms, then "recipient"'s */
    char type[32];
    const struct hold_category *hold;
    char number[BUSINESS_NUMBER_MAX];   /* Cloud: the business number; "-" On-Premises */
    bool cloud;
    bool pin;                    /* pin the acknowledged hash (Cloud /messages) */
    bool receipt;                /* a read receipt: nobody is sent anything */
    /* what the gate decided, kept for recording the answer */
    char decided[RECIPIENT_MAX];
    char pinned[OPS_HASH_MAX + 1];
};

/* ---- reading the body -------------------------------------------------------------- */

/* A Cloud API read receipt and nothing else: {"messaging_product","status":"read",
 * "message_id"} (with an optional typing_indicator).  Nobody is sent anything. */
static bool is_read_receipt(const cJSON *msg)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(msg, "status");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "message_id");
    if (!cJSON_IsString(st) || strcmp(st->valuestring, "read") != 0 || !cJSON_IsString(id))
        return false;
    static const char *const allowed[] = { "messaging_product", "status", "message_id", "typing_indicator" };
    const cJSON *c;
    cJSON_ArrayForEach(c, msg) {
        bool ok = false;
        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
            ok = ok || strcmp(c->string, allowed[i]) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* True when a template's components carry an authentication button (copy code, one tap,
 * zero tap): Meta refuses those to a user id. */
static bool authentication_components(const cJSON *tp)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(tp, "components")) {
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(c, "sub_type");
        if (cJSON_IsString(sub) && (strcasecmp(sub->valuestring, "copy_code") == 0 ||
                                    strcasecmp(sub->valuestring, "one_tap") == 0 ||
                                    strcasecmp(sub->valuestring, "zero_tap") == 0 ||
                                    strcasecmp(sub->valuestring, "otp") == 0))
            return true;
    }
    return false;
}

static int bad(struct request *r, const char *fmt, const char *arg)
{
    request_reply_error(r, 400, "Bad request", fmt, arg);
    return -1;
}

/* Refuses a gated body that is not one clear message to one recipient.  Returns 0 with
 * s filled, or -1 after answering. */
static int read_body(struct request *r, struct fwd *f, struct send *s)
{
    const struct config *cfg = r->app->cfg;
    if (request_query_string(r))
        return bad(r, "%s", "a send's parameters go in its JSON body, not the query string (Graph would read "
                   "both)");
    char why[200];
    cJSON *msg = jsonx_parse(f->body ? f->body : "", f->len, why, sizeof why);
    if (!msg)
        return bad(r, "the message: %s", why);
    int rc = -1;
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(msg, "to");
    const cJSON *rc_ = cJSON_GetObjectItemCaseSensitive(msg, "recipient");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(msg, "type");
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(msg, "template");
    const cJSON *hsm = cJSON_GetObjectItemCaseSensitive(msg, "hsm");
    const char *rwhy;
    if (!cJSON_IsObject(msg)) {
        bad(r, "%s", "the message needs a JSON object body");
    } else if (s->cloud && !to && !rc_ && is_read_receipt(msg)) {
        s->receipt = true;
        rc = 0;
    } else if (t && !cJSON_IsString(t)) {
        bad(r, "%s", "\"type\" is not a string");
    } else if (!s->cloud && rc_) {
        bad(r, "%s", "\"recipient\" (a Cloud API user id) is not a field of the On-Premises API: name the user in \"to\"");
    } else if ((to && !cJSON_IsString(to)) || (rc_ && !cJSON_IsString(rc_)) || (!to && !rc_)) {
        bad(r, "%s", s->cloud ? "\"to\" or \"recipient\" is missing or not a string" : "\"to\" is missing or not a string");
    } else if (to && recipient_parse(to->valuestring, cfg->home_country_code, &s->rcpt, &rwhy) != 0) {
        bad(r, "the message's \"to\": %s", rwhy);
    } else if (rc_ && !recipient_is_user_id(rc_->valuestring)) {
        bad(r, "%s", "\"recipient\" is not a business-scoped user id (CC.…)");
    } else if (tp && hsm) {
        bad(r, "%s", "the message carries both \"template\" and \"hsm\": send one");
    } else if (t && strlen(t->valuestring) >= sizeof s->type) {
        bad(r, "%s", "the message's \"type\" is over 31 bytes: no WhatsApp message type is that long");
    } else {
        const char *type = t ? t->valuestring : "text";
        text_copy(s->type, sizeof s->type, type);
        bool is_template = strcmp(type, "template") == 0, is_hsm = strcmp(type, "hsm") == 0;
        const cJSON *name = is_template ? cJSON_GetObjectItemCaseSensitive(tp, "name")
                          : is_hsm ? cJSON_GetObjectItemCaseSensitive(hsm, "element_name") : NULL;
        if ((tp && !is_template) || (hsm && !is_hsm)) {
            bad(r, "the message's type is \"%s\", but it carries a template: its type decides what is sent", type);
        } else if ((is_template || is_hsm) && !cJSON_IsString(name)) {
            bad(r, "%s", is_template ? "a template send needs template.name" : "an hsm send needs hsm.element_name");
        } else {
            if (cJSON_IsString(name))
                s->hold = config_hold_for_template(cfg, name->valuestring);
            if (rc_) {
                /* "to" wins at Meta when both are given: both are gated, the strictest decides */
                struct recipient u;
                recipient_exact(rc_->valuestring, &u);
                if (s->rcpt.n < RECIPIENT_FORMS)
                    s->rcpt.form[s->rcpt.n++] = u.form[0];
            }
            rc = 0;
            if (rc_ && !to && is_template &&
                ((s->hold && strcmp(s->hold->name, "authentication") == 0) || authentication_components(tp))) {
                /* Meta answers 131062: refused before it leaves, saying how to send it */
                char trace[40];
                request_trace(r, trace, sizeof trace);
                request_reply_json(r, 400, envelope_graph(GRAPH_BSUID_UNSUPPORTED, 0, "OAuthException",
                    "(#131062) Business-scoped User ID (BSUID) recipients are not supported for this message.",
                    "one-tap, zero-tap and copy-code authentication templates cannot go to a user id: send it "
                    "to the user's phone number in \"to\" (refused by waguard before it left)", trace));
                rc = -1;
            }
        }
    }
    cJSON_Delete(msg);
    return rc;
}

/* ---- recording the answer ---------------------------------------------------------- */

static void on_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct request *r = arg;
    struct fwd *f = r->data;
    const char *why = store_failure(app, reply, 1);
    if (why)
        log_warn(&app->log, "send", "could not record the answer to a send to %s: %s",
                 ((struct send *)f->more)->decided, why);
    forward_reply(r, f);
}

static void on_answer(struct request *r, struct fwd *f)
{
    struct app *app = r->app;
    struct send *s = f->more;
    const cJSON *ans = forward_json(f);
    struct ops ops;
    ops_init(&ops);
    char codes[64];
    envelope_identity_codes(ans, codes, sizeof codes);
    const char *number = strcmp(s->number, "-") == 0 ? "" : s->number;
    if (codes[0]) {
        /* WhatsApp refused the send because the identity changed (480, 137000): the gate
         * closes for the user, as the failed status would close it */
        ops_refused(&ops, (struct ops_user){ s->decided, NULL, NULL }, NULL, codes, number);
    } else if (forward_ok(f)) {
        char spec[RECIPIENT_SPEC_MAX] = "";
        if (app->cfg->check_budget > 0 && recipient_spec(&s->rcpt, spec, sizeof spec) != 0)
            spec[0] = '\0';
        const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ans, "messages"), 0);
        const cJSON *mid = cJSON_GetObjectItemCaseSensitive(m, "id");
        const char *id = cJSON_IsString(mid) && strlen(mid->valuestring) < 256 ? mid->valuestring : NULL;
        /* the message id is what ties a failed status that names nobody to the user */
        if (spec[0] || (id && app->cfg->sent_ttl_s > 0)) {
            struct sentmem mem = { .w = s->decided, .mid = id, .number = number,
                                   .hash = s->pinned[0] ? s->pinned : NULL, .spec = spec };
            ops_free(&ops);
            if (sentmem_record(app, &mem, on_recorded, r) != 0)
                forward_reply(r, f);
            return;
        }
    }
    if (ops.count == 0 && !ops.oom) {
        ops_free(&ops);
        forward_reply(r, f);
        return;
    }
    int rc = store_apply(app, &ops, false, on_recorded, r);
    ops_free(&ops);
    if (rc != 0)
        forward_reply(r, f);
}

/* ---- the decision -------------------------------------------------------------------- */

static void refuse(struct request *r, const char *wa_id, const struct gate_facts *facts,
                   const struct gate_decision *d)
{
    struct send *s = ((struct fwd *)r->data)->more;
    char reasons[256];
    gate_reasons_text(d, reasons, sizeof reasons);
    log_info(&r->app->log, "send", "refused a send to %s: %s", wa_id, reasons);
    cJSON *o;
    if (s->cloud) {
        char trace[40];
        request_trace(r, trace, sizeof trace);
        o = envelope_graph(423, gate_subcode(d), "WaguardGateRefusal", "Send refused by waguard", reasons, trace);
    } else {
        o = envelope_waba(d->reason[REASON_IDENTITY_UNACKNOWLEDGED] ? 480 :
                          d->reason[REASON_OUTSIDE_SESSION_WINDOW] ? 470 : 423, "Send refused by waguard", reasons);
    }
    cJSON_AddItemToObject(o, "decision", gate_decision_json(wa_id, facts, d));
    request_reply_json(r, 423, o);
}

/* Pins the acknowledged identity: Meta refuses delivery if it changed since. */
static int pin(struct request *r, struct fwd *f, const char *hash)
{
    cJSON *msg = cJSON_ParseWithLength(f->body, f->len);
    char *text = NULL;
    if (cJSON_IsObject(msg)) {
        cJSON_DeleteItemFromObjectCaseSensitive(msg, "recipient_identity_key_hash");
        cJSON_AddStringToObject(msg, "recipient_identity_key_hash", hash);
        text = cJSON_PrintUnformatted(msg);
    }
    cJSON_Delete(msg);
    int rc = text ? forward_set_body(r, f, text, strlen(text)) : -1;
    cJSON_free(text);
    if (!text)
        request_reply_error(r, 500, "Internal error", "out of memory");
    return rc;
}

static void on_decided(struct app *app, const char *wa_id, const struct gate_facts *facts,
                       const struct gate_decision *d, void *arg)
{
    (void)app;
    struct request *r = arg;
    struct fwd *f = r->data;
    struct send *s = f->more;
    if (!d->allowed) {
        refuse(r, wa_id, facts, d);
        return;
    }
    text_copy(s->decided, sizeof s->decided, wa_id);
    if (s->pin && facts->state == GATE_ID_ACKNOWLEDGED && facts->hash) {
        text_copy(s->pinned, sizeof s->pinned, facts->hash);
        if (pin(r, f, facts->hash) != 0)
            return;
    }
    forward_send(r, f, on_answer);
}

static void gated(struct request *r, bool cloud, bool pin_hash)
{
    struct fwd *f = forward_new(r);
    if (!f)
        return;
    struct send *s = calloc(1, sizeof *s);
    if (!s) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    f->more = s;
    f->more_free = free;
    free(f->content_type);          /* the body goes on as the JSON it was read as */
    f->content_type = NULL;
    s->cloud = cloud;
    s->pin = pin_hash && r->app->cfg->api == API_CLOUD;
    const char *named = cloud && r->arg[1][0] && config_number_valid(r->arg[1]) ? r->arg[1] : NULL;
    business_number_for(r->app->cfg, cloud ? named : NULL, s->number, sizeof s->number);
    if (read_body(r, f, s) != 0)
        return;
    if (s->receipt) {
        forward_send(r, f, forward_reply);
        return;
    }
    struct gate_query q = { .type = s->type, .hold = s->hold, .number = s->number };
    if (gate_check(r->app, &s->rcpt, &q, on_decided, r) != 0)
        request_reply_error(r, 500, "Internal error", "out of memory");
}

void send_onprem(struct request *r)
{
    gated(r, false, false);
}

void send_cloud(struct request *r)
{
    gated(r, true, true);
}

void send_cloud_marketing(struct request *r)
{
    /* Meta documents no recipient_identity_key_hash for marketing_messages: the body goes
     * as the caller sent it (the gate still decides) */
    gated(r, true, false);
}
