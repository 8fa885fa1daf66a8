/* fuzz_webhook_parse — libFuzzer target for webhook_parse() (include/webhook_parse.h).
 *
 * Beyond "no crash, no leak, no undefined behaviour" (ASan, LSan, UBSan) it checks what
 * the store relies on:
 *   - a body is refused only when it is not a JSON object, and then nothing is allocated;
 *   - every operation is an object whose "k" is one of the kinds the header lists, and
 *     the fields the Redis script reads for that kind are there with their types;
 *   - the operations survive being printed and parsed again unchanged: that text is what
 *     goes to Redis, and a number cJSON cannot print (an infinity becomes "null") is a
 *     value the script cannot take, which fails the whole body (issue 10, item 1).
 * A broken rule aborts, so libFuzzer keeps the input as a crash.
 *
 * Build and run: `make fuzz` (tests/fuzz/run.sh); replay one input:
 * build/fuzz/fuzz_webhook_parse FILE. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "webhook_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *rule, const cJSON *op)
{
    char *text = op ? cJSON_PrintUnformatted(op) : NULL;
    fprintf(stderr, "fuzz_webhook_parse: broken rule: %s\n  op: %s\n", rule, text ? text : "-");
    free(text);
    abort();
}

static void need_string(const cJSON *op, const char *key, int nonempty)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(op, key);
    if (!cJSON_IsString(v) || (nonempty && v->valuestring[0] == '\0'))
        broken("a field the script reads is missing or not a string", op);
}

static void need_number(const cJSON *op, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(op, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0)
        broken("a time field is missing, not a number or negative", op);
}

static void check_op(const cJSON *op)
{
    if (!cJSON_IsObject(op))
        broken("an operation is not an object", op);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(op, "k");
    if (!cJSON_IsString(k))
        broken("an operation has no string \"k\"", op);
    const char *kind = k->valuestring;
    if (strcmp(kind, "id") == 0) {
        need_string(op, "w", 1);
        need_string(op, "h", 1);
        need_number(op, "t");
        need_string(op, "src", 1);
    } else if (strcmp(kind, "in") == 0) {
        need_string(op, "w", 1);
        need_number(op, "t");
    } else if (strcmp(kind, "num") == 0) {
        need_string(op, "w", 1);
        need_string(op, "nw", 1);
    } else if (strcmp(kind, "uid") == 0) {
        need_string(op, "prev", 1);
        need_string(op, "u", 1);
    } else if (strcmp(kind, "sys") == 0 || strcmp(kind, "prof") == 0) {
        need_string(op, "w", 1);
    } else if (strcmp(kind, "dead") == 0) {
        need_string(op, "reason", 1);
        need_string(op, "item", 0);
    } else if (strcmp(kind, "cc") != 0 && strcmp(kind, "st") != 0 && strcmp(kind, "err") != 0) {
        broken("an operation of an unknown kind", op);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct webhook_batch b;
    const char *why = NULL;
    if (webhook_parse((const char *)data, size, "1", &b, &why) != 0) {
        if (b.ops != NULL || why == NULL || why[0] == '\0')
            broken("a refused body must leave no operations and say why", NULL);
        return 0;
    }
    if (!cJSON_IsArray(b.ops))
        broken("an accepted body must give an array of operations", b.ops);
    int n = 0, dead = 0, ids = 0;
    const cJSON *op;
    cJSON_ArrayForEach(op, b.ops) {
        check_op(op);
        const char *kind = cJSON_GetObjectItemCaseSensitive(op, "k")->valuestring;
        dead += strcmp(kind, "dead") == 0;
        ids += strcmp(kind, "id") == 0;
        n++;
    }
    if (b.dead != dead || b.identities != ids || b.items < 0)
        broken("the batch's counters disagree with its operations", NULL);

    char *text = cJSON_PrintUnformatted(b.ops);
    if (!text)
        broken("the operations cannot be printed", NULL);
    cJSON *again = cJSON_Parse(text);
    if (!again || !cJSON_Compare(b.ops, again, 1)) {
        const cJSON *a = b.ops->child;
        const cJSON *c = again ? again->child : NULL;
        while (a && c && cJSON_Compare(a, c, 1)) {
            a = a->next;
            c = c->next;
        }
        broken("an operation changes when printed and parsed again (a value Redis would "
               "not get as the parser meant it)", a);
    }
    cJSON_Delete(again);
    free(text);
    webhook_batch_free(&b);
    return 0;
}
