/* request — see include/request.h */
#include "request.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "envelope.h"
#include "text.h"

struct request *request_new(struct app *app, struct evhttp_request *req, const struct request_hooks *hooks)
{
    struct request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->app = app;
    r->req = req;
    r->hooks = hooks;
    r->route = ROUTE_OTHER;
    r->start_ms = app_mono_ms();
    text_copy(r->caller, sizeof r->caller, "anonymous");
    return r;
}

/* ---- what the request says ------------------------------------------------------- */

const char *request_body(struct request *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    *len = evbuffer_get_length(in);
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(in, -1);
}

const char *request_header(struct request *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

const char *request_query_string(struct request *r)
{
    return evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
}

/* The query's parameters, decoded once a request (a gate decision asks for three). */
static const struct evkeyvalq *query_params(struct request *r)
{
    if (r->query || r->query_unreadable)
        return r->query;
    const char *q = r->req ? request_query_string(r) : NULL;
    if (!q || !(r->query = malloc(sizeof *r->query))) {
        r->query_unreadable = true;
        return NULL;
    }
    if (evhttp_parse_query_str(q, r->query) != 0) {   /* it leaves the list empty */
        free(r->query);
        r->query = NULL;
        r->query_unreadable = true;
    }
    return r->query;
}

const char *request_query(struct request *r, const char *name, char *buf, size_t buflen)
{
    const struct evkeyvalq *params = query_params(r);
    const char *v = params ? evhttp_find_header(params, name) : NULL;
    if (!v)
        return NULL;
    size_t len = strlen(v);
    if (len < buflen) {
        memcpy(buf, v, len + 1);
    } else {
        buf[0] = '\0';
        r->query_too_long = true;
    }
    return buf;
}

const char *request_bearer(struct request *r)
{
    const char *auth = request_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return NULL;
    return auth + 7;
}

void request_add_header(struct request *r, const char *name, const char *value)
{
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

/* ---- who asks ---------------------------------------------------------------------- */

/* The token of tl whose digest is d, or NULL. */
static const struct token *find_token(const struct token_list *tl, const unsigned char d[SECRET_DIGEST_LEN])
{
    const struct token *found = NULL;
    for (size_t i = 0; i < tl->n; i++)      /* no early exit: every token is compared */
        if (secret_digest_equal(d, tl->v[i].digest))
            found = &tl->v[i];
    return found;
}

int request_authorize(struct request *r, enum role need)
{
    const struct config *cfg = r->app->cfg;
    bool manual_ack = need == ROLE_ACK && cfg->ack == ACK_MANUAL;
    if (need == ROLE_ACK)
        need = manual_ack ? ROLE_ADMIN : ROLE_API;
    if (need == ROLE_NONE) {
        text_copy(r->caller, sizeof r->caller, "anonymous");
        r->caller_role = ROLE_NONE;
        return 0;
    }
    /* An empty token list lets anyone in at its level (a loopback listener only): an
     * empty admin list lets anyone act, an empty api list anyone read. */
    bool anyone_acts = cfg->admin_tokens.n == 0;
    bool anyone_reads = anyone_acts || cfg->api_tokens.n == 0;
    const char *tok = request_bearer(r);
    if (!tok) {
        if (need == ROLE_ADMIN ? anyone_acts : anyone_reads) {
            text_copy(r->caller, sizeof r->caller, "anonymous");
            r->caller_role = anyone_acts ? ROLE_ADMIN : ROLE_API;
            return 0;
        }
        request_reply_error(r, 401, "Unauthorized", "this route needs Authorization: Bearer <%s token>",
                            need == ROLE_ADMIN ? "admin" : "api");
        return -1;
    }
    /* A token presented is always checked, even where none is needed: a wrong one says
     * so (the console's sign-in), and the caller is named by its own. */
    unsigned char d[SECRET_DIGEST_LEN];
    if (!secret_digest(cfg->sha, tok, strlen(tok), d)) {   /* once, whatever the number of tokens */
        r->caller_role = ROLE_NONE;
        request_reply_error(r, 500, "Internal Server Error", "the token could not be checked: OpenSSL "
                            "failed to hash it (is libcrypto's default provider there?)");
        return -1;
    }
    const struct token *t = find_token(&cfg->admin_tokens, d);
    r->caller_role = ROLE_ADMIN;
    if (!t && (t = find_token(&cfg->api_tokens, d)) != NULL)
        r->caller_role = anyone_acts ? ROLE_ADMIN : ROLE_API;
    if (t && (need == ROLE_API || r->caller_role == ROLE_ADMIN)) {
        text_copy(r->caller, sizeof r->caller, t->name);
        return 0;
    }
    r->caller_role = ROLE_NONE;
    bool other_role = t || (cfg->webhook_token && secret_digest_equal(d, cfg->webhook_token_digest));
    if (other_role && manual_ack)
        request_reply_error(r, 403, "Forbidden", "[identity] ack = manual: only an operator (an admin token) "
                            "acknowledges an identity change");
    else if (other_role)
        request_reply_error(r, 403, "Forbidden", "this token is not allowed on %s routes",
                            need == ROLE_ADMIN ? "admin" : "api");
    else
        request_reply_error(r, 401, "Unauthorized", "unknown token");
    return -1;
}

/* ---- answers ------------------------------------------------------------------------- */

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 423: return "Locked";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return NULL;     /* libevent's own */
    }
}

static void finish(struct request *r, int code)
{
    struct app *app = r->app;
    if (code >= 100 && code < 600)
        app->metrics->requests[r->route][code]++;
    metrics_observe(&app->metrics->latency[r->route], (double)(app_mono_ms() - r->start_ms) / 1000.0);
    if (r->free_data)
        r->free_data(r->data);
    if (r->query) {
        evhttp_clear_headers(r->query);
        free(r->query);
    }
    if (r->hooks && r->hooks->finished)
        r->hooks->finished(r, r->hooks->ctx);
    free(r);
}

/* The time as HTTP writes it (RFC 9110's IMF-fixdate, the names in English whatever the
 * locale), once a second. */
static const char *http_date(struct app *app)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t now = time(NULL);
    if (now != app->http_date_s || !app->http_date[0]) {
        struct tm tm;
        if (!gmtime_r(&now, &tm))
            return NULL;                 /* libevent writes one itself */
        snprintf(app->http_date, sizeof app->http_date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        app->http_date_s = now;
    }
    return app->http_date;
}

void request_reply_raw(struct request *r, int code, const char *ctype, const char *body, size_t len)
{
    if (r->req) {
        struct evhttp_request *req = r->req;
        struct evbuffer *buf = evbuffer_new();
        if (buf && len)
            evbuffer_add(buf, body, len);
        if (r->hooks && r->hooks->answering)
            r->hooks->answering(r, req, r->hooks->ctx);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", ctype);
        const char *date = http_date(r->app);
        if (date)
            evhttp_add_header(h, "Date", date);
        if (r->app->stopping)
            evhttp_add_header(h, "Connection", "close");
        evhttp_send_reply(req, code, reason_phrase(code), buf);
        if (buf)
            evbuffer_free(buf);
    }
    finish(r, code);
}

void request_reply_json(struct request *r, int code, cJSON *body)
{
    char *s = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!s) {
        static const char oom[] = "{\"errors\":[{\"code\":500,\"title\":\"Internal error\",\"details\":\"out of memory\"}]}";
        request_reply_raw(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n';     /* cJSON's buffer is one longer than the text; a newline reads well in curl */
    request_reply_raw(r, code, "application/json", s, n + 1);
    cJSON_free(s);
}

void request_trace(const struct request *r, char *buf, size_t len)
{
    snprintf(buf, len, "waguard-%llx%06llx", (unsigned long long)r->start_ms,
             (unsigned long long)((uintptr_t)r & 0xffffff));
}

void request_reply_error(struct request *r, int code, const char *title, const char *fmt, ...)
{
    char details[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    if (r->graph) {
        char trace[40];
        request_trace(r, trace, sizeof trace);
        request_reply_json(r, code, envelope_graph(code == 400 ? 100 : code, 0, "WaguardException", title, details,
                                                   trace));
        return;
    }
    request_reply_json(r, code, envelope_waba(code, title, details));
}

void request_reply_unavailable(struct request *r, const char *why)
{
    request_reply_error(r, 503, "Store unavailable", "Redis could not do it (%s); try again later", why);
}
