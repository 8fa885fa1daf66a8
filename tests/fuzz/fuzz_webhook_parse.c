/* fuzz_webhook_parse — libFuzzer target for webhook_parse() (include/webhook_parse.h).
 *
 * Beyond "no crash, no leak, no undefined behaviour" (ASan, LSan, UBSan) it checks what
 * the store relies on:
 *   - a body is refused only when it is not one JSON object, and then it says why;
 *   - every operation is of a kind include/schema.h declares, with that kind's arity, and
 *     the fields the apply function reads first for that kind are there and non-empty;
 *   - every time field is digits only (milliseconds: the function does tonumber() on it);
 *   - no argument carries a NUL before its end (Redis would get a shorter string);
 *   - the batch's counters agree with its operations.
 * A broken rule aborts, so libFuzzer keeps the input as a crash.
 *
 * Build and run: `make fuzz` (tests/fuzz/run.sh); replay one input:
 * build/fuzz/fuzz_webhook_parse FILE. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *rule, enum op_kind kind)
{
    fprintf(stderr, "fuzz_webhook_parse: broken rule: %s\n  op: %s\n", rule,
            (int)kind >= 0 && kind < OP_KIND_COUNT ? ops_kind_name(kind) : "-");
    abort();
}

/* Field name of kind k, or -1. */
static int field_of(enum op_kind k, const char *name)
{
    for (int i = 0; i < ops_arity(k); i++)
        if (strcmp(ops_field_name(k, i), name) == 0)
            return i;
    return -1;
}

static void need(enum op_kind k, const char *const f[OPS_FIELDS_MAX], const char *name)
{
    int i = field_of(k, name);
    if (i < 0 || !f[i] || !f[i][0])
        broken("a field the function reads first is missing or empty", k);
}

static void check_op(enum op_kind k, const char *const f[OPS_FIELDS_MAX])
{
    if ((int)k < 0 || k >= OP_KIND_COUNT)
        broken("an operation of an unknown kind", k);
    for (int i = 0; i < ops_arity(k); i++) {
        if (!f[i])
            broken("a field is NULL", k);
        if (strcmp(ops_field_name(k, i), "t") == 0 && strspn(f[i], "0123456789") != strlen(f[i]))
            broken("a time field is not digits (milliseconds)", k);
    }
    switch (k) {
    case OP_IDENTITY: need(k, f, "w"); need(k, f, "h"); need(k, f, "t"); need(k, f, "src"); break;
    case OP_INBOUND: need(k, f, "w"); need(k, f, "t"); break;
    case OP_NUMBER: need(k, f, "w"); need(k, f, "nw"); break;
    case OP_USER_ID: need(k, f, "prev"); need(k, f, "u"); break;
    case OP_SYSTEM: case OP_PROFILE: need(k, f, "w"); break;
    case OP_DEAD: need(k, f, "reason"); break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct webhook_batch b;
    char why[160] = "";
    if (webhook_parse((const char *)data, size, "1", &b, why, sizeof why) != 0) {
        if (why[0] == '\0')
            broken("a refused body must say why", OP_KIND_COUNT);
        return 0;
    }
    if (b.ops.oom) {
        webhook_batch_free(&b);
        return 0;
    }
    for (size_t i = 0; i < b.ops.n; i++) {
        size_t len;
        const char *a = ops_arg(&b.ops, i, &len);
        if (strlen(a) != len)
            broken("an argument carries a NUL", OP_KIND_COUNT);
    }
    int n = 0, dead = 0, ids = 0;
    enum op_kind k;
    const char *f[OPS_FIELDS_MAX];
    for (size_t at = ops_next(&b.ops, 0, &k, f); at; at = ops_next(&b.ops, at, &k, f)) {
        check_op(k, f);
        dead += k == OP_DEAD;
        ids += k == OP_IDENTITY;
        n++;
    }
    if (n != b.ops.count || b.dead != dead || b.identities != ids || b.items < 0)
        broken("the batch's counters disagree with its operations", OP_KIND_COUNT);
    webhook_batch_free(&b);
    return 0;
}
