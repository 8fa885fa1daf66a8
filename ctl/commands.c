/* commands — see ctl/ctl.h
 *
 * Each command asks waguard's admin API and prints the answer; every refusal (an answer
 * other than 2xx, or no answer at all) is said on stderr with what to do, and the command
 * returns CTL_REFUSED.  With --json the API's own JSON goes to stdout: the answer as is,
 * the items of every page as one array for paged lists, waguard's error envelope when it
 * refused. */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A user, a category or a cursor in a path or query, percent-encoded. */
#define ENC_MAX 1024

struct answer {
    int status;
    cJSON *doc;                /* the body parsed as JSON, or NULL */
};

static void answer_free(struct answer *a)
{
    cJSON_Delete(a->doc);
    a->doc = NULL;
}

static long long now_s(void)
{
    return (long long)time(NULL);
}

/* Asks waguard.  Returns 0 when it answered (any status; a->doc is the JSON body, NULL
 * when the body is not JSON), or CTL_REFUSED after saying why it could not be asked. */
static int ask(struct ctl *c, const char *what, const char *method, const char *target, const cJSON *body,
               struct answer *a)
{
    memset(a, 0, sizeof a[0]);
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    if (body && !text) {
        fprintf(c->err, "waguardctl: %s: out of memory\n", what);
        return CTL_REFUSED;
    }
    struct http_reply rep;
    char err[1024];
    int rc = http_request(c->cfg.listen, c->token, method, target, text, c->timeout_ms, &rep, err, sizeof err);
    cJSON_free(text);
    if (rc != 0) {
        fprintf(c->err, "waguardctl: %s: cannot reach waguard: %s\n"
                "waguardctl: that is [server] listen = %s in %s; is waguard running? (systemctl status waguard)\n",
                what, err, c->cfg.listen, c->config_path);
        return CTL_REFUSED;
    }
    a->status = rep.status;
    a->doc = cJSON_ParseWithLength(rep.body, rep.len);
    http_reply_free(&rep);
    return 0;
}

/* Says why waguard refused (status, title, details, and what to do); with --json its
 * error envelope goes to stdout too.  Returns CTL_REFUSED. */
static int refused(struct ctl *c, const char *what, const struct answer *a)
{
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(a->doc, "errors");
    const cJSON *e = cJSON_IsArray(errs) ? cJSON_GetArrayItem(errs, 0) : NULL;
    const char *title = js_str(e, "title"), *details = js_str(e, "details");
    char t[512], d[2048];
    fprintf(c->err, "waguardctl: %s: waguard refused: %d%s%s%s%s\n", what, a->status, title ? " " : "",
            title ? fmt_safe(title, 200, t, sizeof t) : "", details ? ": " : "",
            details ? fmt_safe(details, 1000, d, sizeof d) : "");
    const cJSON *considered = cJSON_GetObjectItemCaseSensitive(a->doc, "considered");
    if (cJSON_IsArray(considered) && cJSON_GetArraySize(considered) > 0) {
        fprintf(c->err, "waguardctl: it could be any of:");
        const cJSON *w;
        cJSON_ArrayForEach(w, considered)
            if (cJSON_IsString(w))
                fprintf(c->err, " %s", fmt_safe(w->valuestring, 64, t, sizeof t));
        fprintf(c->err, "\nwaguardctl: name one of them by its wa_id\n");
    }
    if (a->status == 401 && c->token)
        fprintf(c->err, "waguardctl: waguard does not know the admin token '%s' of [api] admin_tokens_file "
                "in %s: has it been reloaded since the file changed? (systemctl reload waguard)\n",
                c->token_name ? c->token_name : "?", c->config_path);
    else if (a->status == 401)
        fprintf(c->err, "waguardctl: %s names no admin token ([api] admin_tokens_file), and waguard asks for one\n",
                c->config_path);
    else if (a->status == 403)
        fprintf(c->err, "waguardctl: the token '%s' is not an admin token: waguardctl presents the first token "
                "of [api] admin_tokens_file\n", c->token_name ? c->token_name : "?");
    else if (!a->doc && a->status >= 200 && a->status < 300)
        fprintf(c->err, "waguardctl: the answer is not JSON: is %s really waguard?\n", c->cfg.listen);
    if (c->json && a->doc)
        js_print(a->doc, c->out);
    return CTL_REFUSED;
}

/* Asks and insists on a 2xx JSON answer: returns 0 with a->doc, or CTL_REFUSED after
 * saying why. */
static int ask_ok(struct ctl *c, const char *what, const char *method, const char *target, const cJSON *body,
                  struct answer *a)
{
    int rc = ask(c, what, method, target, body, a);
    if (rc != 0)
        return rc;
    if (a->status < 200 || a->status > 299 || !cJSON_IsObject(a->doc)) {
        rc = refused(c, what, a);
        answer_free(a);
        return rc;
    }
    return 0;
}

/* "/v1/identities/<user, encoded><suffix>" into buf.  Returns 0, or CTL_USAGE after saying so. */
static int user_path(struct ctl *c, const char *user, const char *suffix, char *buf, size_t len)
{
    char enc[ENC_MAX];
    if (http_encode(user, enc, sizeof enc) != 0) {
        fprintf(c->err, "waguardctl: '%.40s…' is too long to name a user\n", user);
        return CTL_USAGE;
    }
    snprintf(buf, len, "/v1/identities/%s%s", enc, suffix);
    return 0;
}

/* ---- status -------------------------------------------------------------------------- */

int cmd_status(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct answer ov, rd;
    int rc = ask_ok(c, "status", "GET", "/v1/overview", NULL, &ov);
    if (rc != 0)
        return rc;
    rc = ask(c, "status", "GET", "/readyz", NULL, &rd);
    if (rc != 0) {
        answer_free(&ov);
        return rc;
    }
    bool ready = rd.status == 200 && js_bool(rd.doc, "ready", false);
    const char *reason = js_str(rd.doc, "reason");
    if (c->json) {
        cJSON_AddBoolToObject(ov.doc, "ready", ready);
        cJSON *r = rd.doc ? cJSON_Duplicate(rd.doc, 1) : NULL;
        if (!r) {
            r = cJSON_CreateObject();
            cJSON_AddBoolToObject(r, "ready", false);
            cJSON_AddNumberToObject(r, "status", rd.status);
        }
        cJSON_AddItemToObject(ov.doc, "readyz", r);
        js_print(ov.doc, c->out);
    } else {
        struct kv b = { 0 };
        char t[1024], u[1024], v[64];
        const cJSON *redis = cJSON_GetObjectItemCaseSensitive(ov.doc, "redis");
        const cJSON *waba = cJSON_GetObjectItemCaseSensitive(ov.doc, "waba");
        kv_add(&b, "waguard", "%s (%s)", c->cfg.listen, c->config_path);
        if (ready)
            kv_add(&b, "ready", "yes");
        else
            kv_add(&b, "ready", "no (%d%s%s)", rd.status, reason ? ": " : "", reason ? reason : "");
        if (js_bool(redis, "up", false))
            kv_add(&b, "redis", "up");
        else
            kv_add(&b, "redis", "down: %s", js_text(redis, "status", t, sizeof t));
        kv_add(&b, "pending", "%s", js_text(ov.doc, "pending", t, sizeof t));
        kv_add(&b, "failed", "%s", js_text(ov.doc, "failed", t, sizeof t));
        kv_add(&b, "held", "%s", js_text(ov.doc, "held", t, sizeof t));
        kv_add(&b, "queued", "%s", js_text(ov.doc, "queued", t, sizeof t));
        kv_add(&b, "blocked", "%s", js_text(ov.doc, "blocked", t, sizeof t));
        long long oldest = js_num(ov.doc, "oldest_pending_s", -1);
        kv_add(&b, "oldest pending", "%s", oldest >= 0 ? fmt_duration(oldest, v, sizeof v) : "-");
        kv_add(&b, "identity changes (24h)", "%s", js_text(ov.doc, "identity_changes_24h", t, sizeof t));
        kv_add(&b, "identity refusals (24h)", "%s", js_text(ov.doc, "identity_refusals_24h", t, sizeof t));
        kv_add(&b, "WABA client answers", "2xx %lld, 5xx %lld, no answer %lld", js_num(waba, "answered_2xx", 0),
               js_num(waba, "answered_5xx", 0), js_num(waba, "no_answer", 0));
        kv_add(&b, "api", "%s", js_text(ov.doc, "api", t, sizeof t));
        kv_add(&b, "ack", "%s", js_text(ov.doc, "ack", t, sizeof t));
        if (cJSON_GetObjectItemCaseSensitive(ov.doc, "identity_check"))
            kv_add(&b, "identity check", "%s", js_text(ov.doc, "identity_check", t, sizeof t));
        if (cJSON_GetObjectItemCaseSensitive(ov.doc, "security_notifications"))
            kv_add(&b, "security notifications", "%s", js_text(ov.doc, "security_notifications", t, sizeof t));
        kv_add(&b, "caller", "%s (%s)", js_text(ov.doc, "caller", t, sizeof t), js_text(ov.doc, "role", u, sizeof u));
        kv_print(&b, c->out);
    }
    if (!ready)
        fprintf(c->err, "waguardctl: waguard is not ready%s%s (GET /readyz answered %d)\n", reason ? ": " : "",
                reason ? reason : "", rd.status);
    answer_free(&ov);
    answer_free(&rd);
    return ready ? CTL_OK : CTL_REFUSED;
}

/* ---- pending, failed, held -------------------------------------------------------------- */

static void list_table(struct ctl *c, const cJSON *items, const char *state)
{
    static const char *const head[] = { "WA_ID", "HASH", "STATE", "ATTEMPTS", "AGE", "NEXT", "NAME", "LAST_ERROR" };
    struct table t;
    table_init(&t, 8, head);
    long long now = now_s();
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        char attempts[24], age[32], next[40], name[256], err[512];
        snprintf(attempts, sizeof attempts, "%lld", js_num(it, "attempts", 0));
        long long since = js_num(it, "since", 0);
        if (since <= 0)
            since = js_num(it, "changed_at", 0);
        if (since <= 0)
            since = js_num(it, "created_timestamp", 0);
        if (since > 0)
            fmt_duration(now - since, age, sizeof age);
        else
            snprintf(age, sizeof age, "-");
        long long na = js_num(it, "next_attempt", 0);
        if (na <= 0) {
            snprintf(next, sizeof next, "-");
        } else if (na <= now) {
            snprintf(next, sizeof next, "due");
        } else {
            char d[32];
            snprintf(next, sizeof next, "in %s", fmt_duration(na - now, d, sizeof d));
        }
        const char *cells[] = { js_str(it, "wa_id"), js_str(it, "hash"), js_str(it, "state"), attempts, age, next,
                                fmt_safe(js_str(it, "name"), 32, name, sizeof name),
                                fmt_safe(js_str(it, "last_error"), 100, err, sizeof err) };
        table_add(&t, cells);
    }
    if (t.nrows == 0) {
        fprintf(c->out, "%s\n", strcmp(state, "pending") == 0 ? "no identity change is pending"
                               : strcmp(state, "failed") == 0 ? "no acknowledgement has failed" : "no user is held");
    } else if (table_print(&t, c->out, "") != 0) {
        fprintf(c->err, "waguardctl: out of memory: the table is incomplete\n");
    }
    table_free(&t);
}

/* Every identity in state, following next_cursor; a table, or the items as one array. */
static int list(struct ctl *c, const char *state)
{
    cJSON *all = cJSON_CreateArray();
    char cursor[ENC_MAX] = "", what[64];
    snprintf(what, sizeof what, "%s", state);
    int rc = CTL_OK;
    for (int page = 0; all && page < 100000; page++) {
        char target[ENC_MAX + 128];
        snprintf(target, sizeof target, "/v1/identities?state=%s&limit=1000%s%s", state, cursor[0] ? "&cursor=" : "",
                 cursor);
        struct answer a;
        rc = ask_ok(c, what, "GET", target, NULL, &a);
        if (rc != 0)
            break;
        cJSON *items = cJSON_GetObjectItemCaseSensitive(a.doc, "identities");
        while (cJSON_IsArray(items) && cJSON_GetArraySize(items) > 0)
            cJSON_AddItemToArray(all, cJSON_DetachItemFromArray(items, 0));
        const char *next = js_str(a.doc, "next_cursor");
        char enc[ENC_MAX];
        if (!next || !*next || http_encode(next, enc, sizeof enc) != 0 || strcmp(enc, cursor) == 0) {
            answer_free(&a);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", enc);
        answer_free(&a);
    }
    if (!all) {
        fprintf(c->err, "waguardctl: %s: out of memory\n", what);
        return CTL_REFUSED;
    }
    if (rc == CTL_OK) {
        if (c->json)
            js_print(all, c->out);
        else
            list_table(c, all, state);
    }
    cJSON_Delete(all);
    return rc;
}

int cmd_pending(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return list(c, "pending");
}

int cmd_failed(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return list(c, "failed");
}

int cmd_held(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return list(c, "held");
}

/* ---- show ------------------------------------------------------------------------------- */

/* A time member in milliseconds (history, acks) as text. */
static const char *ms_time(const cJSON *o, const char *key, char *buf, size_t len)
{
    return fmt_time(js_num(o, key, 0) / 1000, buf, len);
}

static const char *sec_time(const cJSON *o, const char *key, char *buf, size_t len)
{
    return fmt_time(js_num(o, key, 0), buf, len);
}

static void show_text(struct ctl *c, const cJSON *doc)
{
    struct kv b = { 0 };
    char t[1024], u[256];
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "identity");
    kv_add(&b, "wa_id", "%s", js_text(doc, "wa_id", t, sizeof t));
    kv_add(&b, "name", "%s", js_text(doc, "name", t, sizeof t));
    kv_add(&b, "user_id", "%s", js_text(doc, "user_id", t, sizeof t));
    if (js_str(doc, "parent_user_id"))
        kv_add(&b, "parent_user_id", "%s", js_str(doc, "parent_user_id"));
    if (cJSON_IsObject(id)) {
        kv_add(&b, "state", "%s", js_text(id, "state", t, sizeof t));
        kv_add(&b, "hash", "%s", js_text(id, "hash", t, sizeof t));
        kv_add(&b, "created", "%s", sec_time(id, "created_timestamp", t, sizeof t));
        if (js_bool(id, "acknowledged", false))
            kv_add(&b, "acknowledged", "yes, by %s at %s", js_text(id, "acknowledged_by", u, sizeof u),
                   sec_time(id, "acknowledged_at", t, sizeof t));
        else
            kv_add(&b, "acknowledged", "no");
        kv_add(&b, "attempts", "%lld", js_num(id, "attempts", 0));
        if (js_str(id, "last_error"))
            kv_add(&b, "last error", "%s", js_str(id, "last_error"));
        kv_add(&b, "changed at", "%s", sec_time(id, "changed_at", t, sizeof t));
        if (js_num(id, "pending_since", 0) > 0)
            kv_add(&b, "pending since", "%s", sec_time(id, "pending_since", t, sizeof t));
        if (js_num(id, "next_attempt", 0) > 0)
            kv_add(&b, "next attempt", "%s", sec_time(id, "next_attempt", t, sizeof t));
        if (js_num(id, "leased_until", 0) > 0)
            kv_add(&b, "leased until", "%s", sec_time(id, "leased_until", t, sizeof t));
        if (js_str(id, "requested_by"))
            kv_add(&b, "requested by", "%s", js_str(id, "requested_by"));
        const char *hr = js_str(id, "hold_released");
        if (hr) {
            /* "<changed_at ms>:<category>" ('*': every category) */
            char *end;
            long long at = strtoll(hr, &end, 10);
            if (*end == ':')
                kv_add(&b, "hold released", "%s (the change at %s)",
                       strcmp(end + 1, "*") == 0 ? "every category" : end + 1,
                       fmt_time(at / 1000, t, sizeof t));
            else
                kv_add(&b, "hold released", "%s", hr);
        }
        if (cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(id, "time_believed")) && !js_bool(id, "time_believed", true))
            kv_add(&b, "time believed", "no (the time it arrived at waguard stands in for it)");
    } else {
        kv_add(&b, "state", "no identity on record");
    }
    kv_add(&b, "last inbound", "%s", sec_time(doc, "last_inbound", t, sizeof t));
    kv_add(&b, "blocked", "%s", js_bool(doc, "blocked", false) ? "yes" : "no");
    kv_add(&b, "moved to", "%s", js_text(doc, "moved_to", t, sizeof t));
    if (js_str(doc, "contact"))
        kv_add(&b, "contact", "%s", js_str(doc, "contact"));
    kv_print(&b, c->out);

    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(doc, "history"), *h;
    fprintf(c->out, "\nhistory (newest first):\n");
    static const char *const hh[] = { "RECEIVED", "HASH", "CREATED", "SOURCE", "ACKNOWLEDGED" };
    struct table th;
    table_init(&th, 5, hh);
    cJSON_ArrayForEach(h, hist) {
        char rx[40], cr[40];
        const char *cells[] = { ms_time(h, "received_at", rx, sizeof rx), js_str(h, "hash"),
                                ms_time(h, "created_timestamp", cr, sizeof cr), js_str(h, "source"),
                                js_bool(h, "acknowledged", false) ? "yes" : "no" };
        table_add(&th, cells);
    }
    if (th.nrows)
        (void)table_print(&th, c->out, "  ");
    else
        fprintf(c->out, "  none\n");
    table_free(&th);

    const cJSON *acks = cJSON_GetObjectItemCaseSensitive(doc, "acks"), *k;
    fprintf(c->out, "\nacknowledgements and operators' acts (newest first):\n");
    static const char *const ah[] = { "AT", "WHO", "RESULT", "HASH", "ANSWER" };
    struct table ta;
    table_init(&ta, 5, ah);
    cJSON_ArrayForEach(k, acks) {
        char at[40], ans[2048];
        const char *cells[] = { ms_time(k, "at", at, sizeof at), js_str(k, "who"), js_str(k, "result"),
                                js_str(k, "hash"),
                                fmt_safe(js_str(k, "answer"), 0, ans, sizeof ans) };
        table_add(&ta, cells);
    }
    if (ta.nrows)
        (void)table_print(&ta, c->out, "  ");
    else
        fprintf(c->out, "  none\n");
    table_free(&ta);
}

int cmd_show(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    char target[ENC_MAX + 64], what[128];
    int rc = user_path(c, argv[0], "", target, sizeof target);
    if (rc != 0)
        return rc;
    snprintf(what, sizeof what, "show %.100s", argv[0]);
    struct answer a;
    rc = ask_ok(c, what, "GET", target, NULL, &a);
    if (rc != 0)
        return rc;
    if (c->json)
        js_print(a.doc, c->out);
    else
        show_text(c, a.doc);
    answer_free(&a);
    return CTL_OK;
}

/* ---- ack, retry ------------------------------------------------------------------------- */

/* POSTs an operator's act to target: {"reason":…} when reason, "category" when category,
 * "expected" when expected >= 0.  any_status: every answer is a's (else a refusal is
 * said and CTL_REFUSED returned, as ask_ok does). */
static int post_act(struct ctl *c, const char *what, const char *target, const char *reason, const char *category,
                    long long expected, bool any_status, struct answer *a)
{
    cJSON *body = cJSON_CreateObject();
    if (!body || (reason && !cJSON_AddStringToObject(body, "reason", reason)) ||
        (category && !cJSON_AddStringToObject(body, "category", category)) ||
        (expected >= 0 && !cJSON_AddNumberToObject(body, "expected", (double)expected))) {
        cJSON_Delete(body);
        fprintf(c->err, "waguardctl: %s: out of memory\n", what);
        return CTL_REFUSED;
    }
    int rc = any_status ? ask(c, what, "POST", target, body, a) : ask_ok(c, what, "POST", target, body, a);
    cJSON_Delete(body);
    return rc;
}

static int ack_user(struct ctl *c, const char *verb, const char *user, const char *reason)
{
    char target[ENC_MAX + 64], what[128];
    int rc = user_path(c, user, "/ack", target, sizeof target);
    if (rc != 0)
        return rc;
    snprintf(what, sizeof what, "%s %.100s", verb, user);
    struct answer a;
    rc = post_act(c, what, target, reason, NULL, -1, false, &a);
    if (rc != 0)
        return rc;
    char w[256], by[256];
    fmt_safe(js_str(a.doc, "wa_id") ? js_str(a.doc, "wa_id") : user, 64, w, sizeof w);
    if (c->json)
        js_print(a.doc, c->out);
    else if (a.status == 202)
    {
        char detail[600];
        fprintf(c->out, "%s: queued (requested by %s): %s\n", w,
                fmt_safe(js_str(a.doc, "requested_by"), 64, by, sizeof by),
                fmt_safe(js_str(a.doc, "detail") ? js_str(a.doc, "detail") : "waguard acknowledges its newest identity now",
                         500, detail, sizeof detail));
    }
    else
        fprintf(c->out, "%s: already acknowledged: nothing to do\n", w);
    answer_free(&a);
    return CTL_OK;
}

int cmd_ack(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    return ack_user(c, "ack", argv[0], c->reason);
}

static int retry_all(struct ctl *c)
{
    struct answer ov;
    int rc = ask_ok(c, "retry --all", "GET", "/v1/overview", NULL, &ov);
    if (rc != 0)
        return rc;
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(ov.doc, "failed");
    if (!cJSON_IsNumber(failed)) {
        const char *redis = js_str(cJSON_GetObjectItemCaseSensitive(ov.doc, "redis"), "status");
        char t[512];
        fprintf(c->err, "waguardctl: retry --all: waguard's overview has no count of failed acknowledgements "
                "(redis: %s): nothing was retried; try again once Redis answers\n", fmt_safe(redis, 200, t, sizeof t));
        answer_free(&ov);
        return CTL_REFUSED;
    }
    long long shown = (long long)failed->valuedouble;
    answer_free(&ov);
    struct answer a;
    rc = post_act(c, "retry --all", "/v1/identities/retry", c->reason, NULL, shown, true, &a);
    if (rc != 0)
        return rc;
    if (a.status == 409) {
        long long now = -1;
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(a.doc, "errors");
        const char *details = js_str(cJSON_GetArrayItem(errs, 0), "details");
        if (details)
            now = strtoll(details, NULL, 10);
        fprintf(c->err, "waguardctl: retry --all: the number of failed acknowledgements changed meanwhile "
                "(%lld when asked", shown);
        if (now >= 0)
            fprintf(c->err, ", %lld now", now);
        fprintf(c->err, "), so nothing was retried: look again (waguardctl failed), then run retry --all again\n");
        if (c->json && a.doc)
            js_print(a.doc, c->out);
        answer_free(&a);
        return CTL_REFUSED;
    }
    if (a.status < 200 || a.status > 299 || !cJSON_IsObject(a.doc)) {
        rc = refused(c, "retry --all", &a);
        answer_free(&a);
        return rc;
    }
    if (c->json)
        js_print(a.doc, c->out);
    else if (js_num(a.doc, "retried", 0) == 0 && shown == 0)
        fprintf(c->out, "no acknowledgement has failed: nothing to retry\n");
    else
        fprintf(c->out, "asked again for %lld failed acknowledgement(s); %lld failed now\n",
                js_num(a.doc, "retried", 0), js_num(a.doc, "failed", 0));
    answer_free(&a);
    return CTL_OK;
}

int cmd_retry(struct ctl *c, int argc, char **argv)
{
    if (c->all)
        return retry_all(c);
    (void)argc;
    return ack_user(c, "retry", argv[0], c->reason ? c->reason : "retry by waguardctl");
}

/* ---- release ---------------------------------------------------------------------------- */

int cmd_release(struct ctl *c, int argc, char **argv)
{
    (void)argc;
    const char *user = argv[0], *category = argv[1];
    bool every = strcmp(category, "all") == 0;
    if (!every && !config_hold(&c->cfg, category)) {
        char have[512] = "";
        for (size_t i = 0; i < c->cfg.nholds; i++) {
            size_t l = strlen(have);
            snprintf(have + l, sizeof have - l, "%s%s", l ? ", " : "", c->cfg.holds[i].name);
        }
        fprintf(c->err, "waguardctl: note: [hold] in %s configures no category '%s' (%s)\n", c->config_path, category,
                have[0] ? have : "it configures none");
    }
    char target[ENC_MAX + 64], what[192];
    int rc = user_path(c, user, "/release", target, sizeof target);
    if (rc != 0)
        return rc;
    snprintf(what, sizeof what, "release %.100s %.63s", user, category);
    struct answer a;
    rc = post_act(c, what, target, c->reason, every ? NULL : category, -1, false, &a);
    if (rc != 0)
        return rc;
    if (c->json) {
        js_print(a.doc, c->out);
    } else {
        char w[256], cat[128], at[40], by[128], h[128];
        const char *rc_cat = js_str(a.doc, "category");
        fprintf(c->out, "%s: hold lifted for %s%s (the identity change at %s, hash %s; by %s); "
                "a later change holds again\n",
                fmt_safe(js_str(a.doc, "wa_id"), 64, w, sizeof w),
                !rc_cat || strcmp(rc_cat, "*") == 0 ? "every category" : "category ",
                !rc_cat || strcmp(rc_cat, "*") == 0 ? "" : fmt_safe(rc_cat, 63, cat, sizeof cat),
                sec_time(a.doc, "changed_at", at, sizeof at), fmt_safe(js_str(a.doc, "hash"), 64, h, sizeof h),
                fmt_safe(js_str(a.doc, "released_by"), 64, by, sizeof by));
    }
    answer_free(&a);
    return CTL_OK;
}

/* ---- audit ------------------------------------------------------------------------------ */

int cmd_audit(struct ctl *c, int argc, char **argv)
{
    char target[2 * ENC_MAX], enc[ENC_MAX] = "", what[128];
    if (argc > 0 && http_encode(argv[0], enc, sizeof enc) != 0) {
        fprintf(c->err, "waguardctl: '%.40s…' is too long to name a user\n", argv[0]);
        return CTL_USAGE;
    }
    snprintf(what, sizeof what, "audit%s%.100s", argc > 0 ? " " : "", argc > 0 ? argv[0] : "");
    int n = snprintf(target, sizeof target, "/v1/audit");
    char sep = '?';
    if (c->limit > 0) {
        n += snprintf(target + n, sizeof target - (size_t)n, "%climit=%ld", sep, c->limit);
        sep = '&';
    }
    if (enc[0])
        snprintf(target + n, sizeof target - (size_t)n, "%cwa_id=%s", sep, enc);
    struct answer a;
    int rc = ask_ok(c, what, "GET", target, NULL, &a);
    if (rc != 0)
        return rc;
    cJSON *entries = cJSON_GetObjectItemCaseSensitive(a.doc, "entries");
    if (c->json) {
        if (cJSON_IsArray(entries))
            js_print(entries, c->out);
        else
            fprintf(c->out, "[]\n");
    } else {
        static const char *const head[] = { "AT", "WA_ID", "WHO", "RESULT", "HASH", "REASON" };
        struct table t;
        table_init(&t, 6, head);
        const cJSON *e;
        cJSON_ArrayForEach(e, entries) {
            char at[40], why[2048];
            const char *cells[] = { sec_time(e, "at", at, sizeof at), js_str(e, "wa_id"), js_str(e, "who"),
                                    js_str(e, "result"), js_str(e, "hash"),
                                    fmt_safe(js_str(e, "reason"), 0, why, sizeof why) };
            table_add(&t, cells);
        }
        if (t.nrows == 0)
            fprintf(c->out, "no audit entries%s%s\n", argc > 0 ? " for " : "", argc > 0 ? argv[0] : "");
        else if (table_print(&t, c->out, "") != 0)
            fprintf(c->err, "waguardctl: out of memory: the table is incomplete\n");
        if (t.nrows > 0 && js_str(a.doc, "next_cursor"))
            fprintf(c->err, "waguardctl: older entries exist: --limit N (up to 1000) shows more\n");
        table_free(&t);
    }
    answer_free(&a);
    return CTL_OK;
}
