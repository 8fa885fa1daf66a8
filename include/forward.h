/* forward — a caller's request sent on to the WABA client (On-Premises /v1, or Graph)
 * with waguard's own credentials (upstream.h), and the answer given back as it is.
 *
 * The path and body are copied whole (a path over FORWARD_PATH_MAX is refused 414, never
 * cut); the answer is returned with its status and Content-Type, 502 when it is larger
 * than [server] max_body_bytes, and 502 or 504 when the WABA client did not answer. */
#ifndef WAGUARD_FORWARD_H
#define WAGUARD_FORWARD_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "request.h"

#define FORWARD_PATH_MAX 8192

struct fwd {
    enum evhttp_cmd_type method;
    char *path;                  /* path and query, as sent on (owned) */
    char *body;                  /* what is sent on (owned; NULL when none) */
    size_t len;
    char *content_type;          /* the caller's, for media (owned; NULL: JSON) */
    /* the answer, once there is one */
    int status;
    char *answer;                /* owned, NUL-terminated */
    size_t answer_len;
    char *answer_type;           /* owned; NULL when it gave none */
    cJSON *parsed;               /* forward_json()'s (owned) */
    bool parsed_done;
    void *more;                  /* the handler's own state, freed with more_free */
    void (*more_free)(void *more);
};

/* The request as it came, ready to send on: r->data (freed with the request).  Answers
 * 414 or 500 and returns NULL when it cannot be. */
struct fwd *forward_new(struct request *r);
/* Replaces the path sent on (a copy); -1 after answering 414 when it is too long. */
int forward_set_path(struct request *r, struct fwd *f, const char *path) __attribute__((warn_unused_result));
/* Replaces the body sent on (a copy of body[0, len)); -1 after answering 500. */
int forward_set_body(struct request *r, struct fwd *f, const char *body, size_t len) __attribute__((warn_unused_result));

/* Sends it on.  done gets the answer (f->status, f->answer) later; when the WABA client
 * did not answer, the request is answered 502 or 504 and done is not called. */
typedef void forward_done(struct request *r, struct fwd *f);
void forward_send(struct request *r, struct fwd *f, forward_done *done);

/* Answers the caller with the WABA client's answer as it is. */
void forward_reply(struct request *r, struct fwd *f);
/* The answer parsed (NULL when it is not JSON). */
const cJSON *forward_json(struct fwd *f);
/* True when the answer did what was asked (envelope_ok: 2xx and no error in it). */
bool forward_ok(struct fwd *f);

#endif
