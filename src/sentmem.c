/* sentmem — see include/sentmem.h */
#include "sentmem.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "ops.h"
#include "schema.h"
#include "text.h"

#define SENTMEM_KEY_MAX 512

/* A memory in flight: the caller's callback, and what apply needs when the budget's
 * set turns out to exist.  One allocation: w, number and spec are copies in text, after
 * the memory's value, which lives only until store_pipeline returns. */
struct pending {
    store_cb *cb;
    void *arg;
    bool budget;            /* EXISTS of the budget's set is the pipeline's last command */
    const char *w, *number, *spec;   /* in text */
    char text[];
};

/* The whole of it as apply's SENT operation (mid NULL: only the budget's part). */
static int via_apply(struct app *app, const char *spec, const char *w, const char *mid, const char *number,
                     const char *hash, store_cb *cb, void *arg)
{
    struct ops ops;
    ops_init(&ops);
    ops_sent(&ops, spec, w, mid, number, hash);
    int rc = store_apply(app, &ops, false, cb, arg);
    ops_free(&ops);
    return rc;
}

/* The pipeline's answer: EXISTS's (the last command) when the budget counts, else SET's;
 * an error reply, or NULL. */
static void on_recorded(struct app *app, redisReply *reply, void *arg)
{
    struct pending *p = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        p->cb(app, reply, p->arg);
    } else if (reply && p->budget && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        /* numbers were checked and not sent to: apply takes this send's off the budget
         * (and counts the operation) */
        if (via_apply(app, p->spec, p->w, NULL, p->number, NULL, p->cb, p->arg) != 0)
            p->cb(app, NULL, p->arg);
    } else if (reply) {
        app->metrics->items[OP_SENT]++;
        /* recorded: told as an array, as apply's counts are */
        redisReply *one[1] = { reply };
        redisReply all = { .type = REDIS_REPLY_ARRAY, .elements = 1, .element = one };
        p->cb(app, &all, p->arg);
    } else {
        p->cb(app, NULL, p->arg);
    }
    free(p);
}

int sentmem_record(struct app *app, const struct sentmem *s, store_cb *cb, void *arg)
{
    const struct config *cfg = app->cfg;
    const char *mid = cfg->sent_ttl_s > 0 && s->mid && s->mid[0] && s->w && s->w[0] ? s->mid : NULL;
    const char *spec = s->spec ? s->spec : "";
    char key[SENTMEM_KEY_MAX], checks[SENTMEM_KEY_MAX], ttl[24];
    bool fits = (!mid || text_join(key, sizeof key, cfg->key_prefix, ":" SCHEMA_KEY_SENT ":{", mid, "}",
                                   (char *)NULL) < sizeof key) &&
                text_join(checks, sizeof checks, cfg->key_prefix, ":" SCHEMA_KEY_CHECKS, (char *)NULL) < sizeof checks;
    if (cfg->redis_min_replicas > 0 || !fits)        /* (a name too long for here: apply makes it) */
        return via_apply(app, spec, s->w, mid, s->number, s->hash, cb, arg);

    const char *w = s->w ? s->w : "", *number = s->number ? s->number : "", *hash = s->hash ? s->hash : "";
    size_t lw = strlen(w), ln = strlen(number), ls = strlen(spec);
    size_t vlen = lw + ln + strlen(hash) + 2 * (sizeof SCHEMA_SENT_SEP - 1) + 1;
    struct pending *p = malloc(sizeof *p + vlen + lw + 1 + ln + 1 + ls + 1);
    if (!p)
        return -1;
    *p = (struct pending){ .cb = cb, .arg = arg, .budget = spec[0] != '\0' };
    /* the record, the number and the hash, as apply's SENT writes them (and reads them) */
    char *value = p->text, *at = value + vlen;
    text_join(value, vlen, w, SCHEMA_SENT_SEP, number, SCHEMA_SENT_SEP, hash, (char *)NULL);
    p->w = memcpy(at, w, lw + 1);
    p->number = memcpy(at += lw + 1, number, ln + 1);
    p->spec = memcpy(at += ln + 1, spec, ls + 1);
    const char *set[] = { "SET", key, value, "EX", ttl };
    const char *exists[] = { "EXISTS", checks };
    const char *const *argv[2];
    int argc[2], n = 0;
    if (mid) {
        text_int(ttl, sizeof ttl, cfg->sent_ttl_s);
        argv[n] = set;
        argc[n++] = 5;
    }
    if (p->budget) {
        argv[n] = exists;
        argc[n++] = 2;
    }
    if (n == 0) {                /* nothing of its own to write (no record was named) */
        free(p);
        return via_apply(app, spec, s->w, mid, s->number, s->hash, cb, arg);
    }
    int rc = store_pipeline(app, n, argc, argv, on_recorded, p);
    if (rc != 0)
        free(p);
    return rc;
}
