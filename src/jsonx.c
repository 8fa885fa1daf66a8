/* jsonx — see include/jsonx.h */
#include "jsonx.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key twice in object v's own keys (n of them), or NULL: a few keys (a webhook's
 * objects, a send's) are compared pairwise, without sorting or allocating. */
static const char *twice_in(const cJSON *v, int n)
{
    if (n <= 12) {
        for (const cJSON *a = v->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0)
                    return b->string;
        return NULL;
    }
    const char **names = malloc((size_t)n * sizeof *names);
    if (!names)
        return "(out of memory)";
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, v) names[k++] = c->string;
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            dup = names[i];
    free(names);
    return dup;
}

const char *jsonx_duplicate_key(const cJSON *v)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return NULL;
    int n = cJSON_GetArraySize(v);
    if (cJSON_IsObject(v) && n > 1) {
        const char *dup = twice_in(v, n);
        if (dup)
            return dup;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, v) {
        const char *d = jsonx_duplicate_key(c);
        if (d)
            return d;
    }
    return NULL;
}

/* An escaped NUL inside a string: "\u0000" (an escaped backslash before "u0000" is not). */
static bool has_escaped_nul(const char *s, size_t len)
{
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_str) {
            in_str = s[i] == '"';
            continue;
        }
        if (s[i] == '"') {
            in_str = false;
        } else if (s[i] == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
                return true;
            i++;
        }
    }
    return false;
}

/* One value and nothing after it; strict: no NUL in a string, no key twice. */
static cJSON *parse(const char *body, size_t len, bool strict, char *why, size_t whylen)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!v) {
        snprintf(why, whylen, "the body is not valid JSON");
        return NULL;
    }
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(v);
            snprintf(why, whylen, "the body holds more than one JSON value: send one");
            return NULL;
        }
    if (strict && has_escaped_nul(body, len)) {
        cJSON_Delete(v);
        snprintf(why, whylen, "a string holds a NUL character (\\u0000): it would be read as shorter than it is");
        return NULL;
    }
    if (!strict)
        return v;
    const char *dup = jsonx_duplicate_key(v);
    if (dup) {
        snprintf(why, whylen, "the key \"%.100s\" appears twice in one object: a body must say one thing", dup);
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

cJSON *jsonx_parse(const char *body, size_t len, char *why, size_t whylen)
{
    return parse(body, len, true, why, whylen);
}

cJSON *jsonx_parse_one(const char *body, size_t len, char *why, size_t whylen)
{
    return parse(body, len, false, why, whylen);
}

const char *jsonx_own_duplicate(const cJSON *v)
{
    if (!cJSON_IsObject(v) || !v->child || !v->child->next)
        return NULL;
    return twice_in(v, cJSON_GetArraySize(v));
}

cJSON *jsonx_add_int(cJSON *obj, const char *name, long long v)
{
    char buf[24];
    text_int(buf, sizeof buf, v);
    cJSON *item = cJSON_CreateRaw(buf);
    if (item && !cJSON_AddItemToObjectCS(obj, name, item)) {
        cJSON_Delete(item);
        item = NULL;
    }
    return item;
}
