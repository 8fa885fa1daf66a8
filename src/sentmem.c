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

/* A transaction in flight: the caller's callback, and what apply needs when the budget's
 * set turns out to exist (owned copies). */
struct pending {
    store_cb *cb;
    void *arg;
    bool budget;            /* EXISTS of the budget's set is the transaction's last reply */
    char *w, *number, *spec;
};

static void pending_free(struct pending *p)
{
    free(p->w);
    free(p->number);
    free(p->spec);
    free(p);
}

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

static void on_plain(struct app *app, redisReply *reply, void *arg)
{
    struct pending *p = arg;
    redisReply *bad = NULL;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY;
    if (!ok)
        bad = reply;                              /* NULL (no answer) or Redis's error */
    for (size_t i = 0; ok && i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_ERROR) {
            bad = reply->element[i];
            ok = false;
        }
    if (ok && p->budget && reply->elements > 0 && reply->element[reply->elements - 1]->type == REDIS_REPLY_INTEGER &&
        reply->element[reply->elements - 1]->integer == 1) {
        /* numbers were checked and not sent to: apply takes this send's off the budget
         * (and counts the operation) */
        if (via_apply(app, p->spec, p->w, NULL, p->number, NULL, p->cb, p->arg) != 0)
            p->cb(app, NULL, p->arg);
        pending_free(p);
        return;
    }
    if (ok)
        app->metrics->items[OP_SENT]++;
    p->cb(app, ok ? reply : bad, p->arg);
    pending_free(p);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
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

    size_t vlen = strlen(s->w) + strlen(s->number ? s->number : "") + strlen(s->hash ? s->hash : "") + 3;
    char *value = malloc(vlen);
    struct pending *p = calloc(1, sizeof *p);
    if (!value || !p) {
        free(value);
        free(p);
        return -1;
    }
    /* the record, the number and the hash, as apply's SENT writes them (and reads them) */
    text_join(value, vlen, s->w, SCHEMA_SENT_SEP, s->number ? s->number : "", SCHEMA_SENT_SEP,
              s->hash ? s->hash : "", (char *)NULL);
    const char *set[] = { "SET", key, value, "EX", ttl };
    const char *exists[] = { "EXISTS", checks };
    const char *const *argv[2];
    int argc[2], n = 0;
    if (mid) {
        text_int(ttl, sizeof ttl, cfg->sent_ttl_s);
        argv[n] = set;
        argc[n++] = 5;
    }
    p->cb = cb;
    p->arg = arg;
    p->budget = spec[0] != '\0';
    if (p->budget) {
        argv[n] = exists;
        argc[n++] = 2;
        p->w = dup_or_empty(s->w);
        p->number = dup_or_empty(s->number);
        p->spec = dup_or_empty(spec);
        if (!p->w || !p->number || !p->spec) {
            pending_free(p);
            free(value);
            return -1;
        }
    }
    int rc = store_plain(app, n, argc, argv, on_plain, p);
    free(value);
    if (rc != 0)
        pending_free(p);
    return rc;
}
