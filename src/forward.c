/* forward — see include/forward.h */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "upstream.h"

static void fwd_free(void *p)
{
    struct fwd *f = p;
    if (f->more_free)
        f->more_free(f->more);
    cJSON_Delete(f->parsed);
    free(f->path);
    free(f->body);
    free(f->content_type);
    free(f->answer);
    free(f->answer_type);
    free(f);
}

int forward_set_path(struct request *r, struct fwd *f, const char *path)
{
    size_t n = strlen(path);
    if (n > FORWARD_PATH_MAX) {
        request_reply_error(r, 414, "URI too long", "the path and query are over %d bytes", FORWARD_PATH_MAX);
        return -1;
    }
    char *p = malloc(n + 1);
    if (!p) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return -1;
    }
    memcpy(p, path, n + 1);
    free(f->path);
    f->path = p;
    return 0;
}

int forward_set_body(struct request *r, struct fwd *f, const char *body, size_t len)
{
    char *b = NULL;
    if (len) {
        b = malloc(len + 1);
        if (!b) {
            request_reply_error(r, 500, "Internal error", "out of memory");
            return -1;
        }
        memcpy(b, body, len);
        b[len] = '\0';
    }
    free(f->body);
    f->body = b;
    f->len = len;
    return 0;
}

struct fwd *forward_new(struct request *r)
{
    struct fwd *f = calloc(1, sizeof *f);
    if (!f) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return NULL;
    }
    r->data = f;
    r->free_data = fwd_free;
    f->method = evhttp_request_get_command(r->req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
    const char *path = evhttp_uri_get_path(uri), *q = evhttp_uri_get_query(uri);
    size_t pl = strlen(path), ql = q ? strlen(q) : 0;
    if (pl + 1 + ql > FORWARD_PATH_MAX) {
        request_reply_error(r, 414, "URI too long", "the path and query are over %d bytes", FORWARD_PATH_MAX);
        return NULL;
    }
    char full[FORWARD_PATH_MAX + 2];
    memcpy(full, path, pl);
    full[pl] = '\0';
    if (q) {
        full[pl] = '?';
        memcpy(full + pl + 1, q, ql + 1);
    }
    size_t len;
    const char *body = request_body(r, &len);
    const char *ct = request_header(r, "Content-Type");
    if (forward_set_path(r, f, full) != 0 || forward_set_body(r, f, body, len) != 0)
        return NULL;
    if (ct && strlen(ct) >= UPSTREAM_CONTENT_TYPE_MAX) {
        /* sent on as it is or not at all: never replaced by another type */
        request_reply_error(r, 400, "Bad request", "the Content-Type is over %d bytes", UPSTREAM_CONTENT_TYPE_MAX - 1);
        return NULL;
    }
    if (ct && !(f->content_type = strdup(ct))) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return NULL;
    }
    return f;
}

struct sending {
    struct request *r;
    forward_done *done;
};

static void on_answer(struct app *app, const struct upstream_reply *rep, void *arg)
{
    struct sending *s = arg;
    struct request *r = s->r;
    forward_done *done = s->done;
    free(s);
    struct fwd *f = r->data;
    if (rep->status == 0) {
        bool timeout = rep->error && strstr(rep->error, "timed out");
        request_reply_error(r, timeout ? 504 : 502, timeout ? "Gateway timeout" : "Bad gateway",
                            "the WABA client did not answer: %s", rep->error ? rep->error : "?");
        return;
    }
    if (rep->len > (size_t)app->cfg->max_body_bytes) {
        request_reply_error(r, 502, "Bad gateway", "the WABA client's answer (%zu bytes) is larger than "
                            "[server] max_body_bytes (%ld)", rep->len, app->cfg->max_body_bytes);
        return;
    }
    f->status = rep->status;
    f->answer = malloc(rep->len + 1);
    if (rep->content_type)
        f->answer_type = strdup(rep->content_type);
    if (!f->answer || (rep->content_type && !f->answer_type)) {
        request_reply_error(r, 500, "Internal error", "out of memory (the WABA client answered %d)", rep->status);
        return;
    }
    memcpy(f->answer, rep->body, rep->len);
    f->answer[rep->len] = '\0';
    f->answer_len = rep->len;
    done(r, f);
}

void forward_send(struct request *r, struct fwd *f, forward_done *done)
{
    struct sending *s = malloc(sizeof *s);
    if (!s) {
        request_reply_error(r, 500, "Internal error", "out of memory");
        return;
    }
    *s = (struct sending){ .r = r, .done = done };
    if (upstream_request_typed(r->app, f->method, f->path, f->body, f->len, f->content_type, on_answer, s) != 0) {
        free(s);
        request_reply_error(r, 500, "Internal error", "out of memory");
    }
}

void forward_reply(struct request *r, struct fwd *f)
{
    request_reply_raw(r, f->status, f->answer_type ? f->answer_type : "application/json", f->answer ? f->answer : "",
                      f->answer_len);
}

const cJSON *forward_json(struct fwd *f)
{
    if (!f->parsed_done) {
        f->parsed_done = true;
        f->parsed = f->answer ? cJSON_ParseWithLength(f->answer, f->answer_len) : NULL;
    }
    return f->parsed;
}

bool forward_ok(struct fwd *f)
{
    return envelope_ok(f->status, forward_json(f));
}
