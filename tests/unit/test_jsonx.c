/* Unit tests: jsonx_add_int writes every integer exactly as printf's %lld does (zero, the
 * signs, the ends of long long, the numbers of digits), as a JSON number a parser reads back
 * to the same value; jsonx_parse refuses a body that can be read two ways. */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "unit.h"

START_TEST(integers_written_exactly)
{
    static const long long values[] = { 0, 1, -1, 9, 10, -10, 99, 100, 1602535238, 1602535238123LL,
                                        -1602535238123LL, LLONG_MAX, LLONG_MIN, LLONG_MIN + 1 };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        ck_assert_ptr_nonnull(jsonx_add_int(o, "n", values[i]));
        char *s = cJSON_PrintUnformatted(o);
        char want[64];
        snprintf(want, sizeof want, "{\"n\":%lld}", values[i]);
        ck_assert_str_eq(s, want);
        /* a JSON number: read back, it is one (exact where a double holds it) */
        cJSON *back = cJSON_Parse(s);
        ck_assert_ptr_nonnull(back);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(back, "n");
        ck_assert(cJSON_IsNumber(n));
        if (values[i] > -(1LL << 53) && values[i] < (1LL << 53))
            ck_assert(n->valuedouble == (double)values[i]);
        cJSON_Delete(back);
        cJSON_free(s);
        cJSON_Delete(o);
    }
}
END_TEST

START_TEST(several_in_one_object)
{
    cJSON *o = cJSON_CreateObject();
    jsonx_add_int(o, "items", 3);
    jsonx_add_int(o, "duplicates", 0);
    jsonx_add_int(o, "late", -2);
    char *s = cJSON_PrintUnformatted(o);
    ck_assert_str_eq(s, "{\"items\":3,\"duplicates\":0,\"late\":-2}");
    cJSON_free(s);
    cJSON_Delete(o);        /* the names are the literals': nothing to free, nothing freed twice */
}
END_TEST

START_TEST(two_readings_refused)
{
    char why[200];
    static const char *bad[] = { "{\"to\":\"1\",\"to\":\"2\"}", "{\"a\":1} {\"a\":2}", "{\"to\":\"1\\u0000 2\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        ck_assert_ptr_null(jsonx_parse(bad[i], strlen(bad[i]), why, sizeof why));
        ck_assert(why[0] != '\0');
    }
    cJSON *ok = jsonx_parse("{\"to\":\"+447700900123\"}", 22, why, sizeof why);
    ck_assert_ptr_nonnull(ok);
    cJSON_Delete(ok);
}
END_TEST

/* A key twice is found however many keys the object has (a few are compared pairwise, many
 * sorted), first or last, nested or not; jsonx_own_duplicate looks at one level only. */
START_TEST(keys_twice_found_in_small_and_large_objects)
{
    for (int n = 2; n <= 40; n++) {
        for (int where = 0; where < 2; where++) {
            char body[2048];
            size_t len = (size_t)snprintf(body, sizeof body, "{");
            for (int i = 0; i < n; i++)
                len += (size_t)snprintf(body + len, sizeof body - len, "%s\"k%d\":%d", i ? "," : "", i, i);
            len += (size_t)snprintf(body + len, sizeof body - len, ",\"k%d\":0}", where ? n - 1 : 0);
            char why[200] = "";
            ck_assert_ptr_null(jsonx_parse(body, len, why, sizeof why));
            ck_assert_ptr_nonnull(strstr(why, "appears twice"));
            cJSON *v = jsonx_parse_one(body, len, why, sizeof why);
            ck_assert_ptr_nonnull(v);
            char want[16];
            snprintf(want, sizeof want, "k%d", where ? n - 1 : 0);
            ck_assert_str_eq(jsonx_own_duplicate(v), want);
            ck_assert_str_eq(jsonx_duplicate_key(v), want);
            cJSON_Delete(v);
            /* one level down: not the outer object's own */
            char outer[2200];
            snprintf(outer, sizeof outer, "{\"a\":%s,\"b\":1}", body);
            v = jsonx_parse_one(outer, strlen(outer), why, sizeof why);
            ck_assert_ptr_null(jsonx_own_duplicate(v));
            ck_assert_str_eq(jsonx_duplicate_key(v), want);
            cJSON_Delete(v);
        }
    }
    char why[200];
    cJSON *v = jsonx_parse_one("{\"a\":\"x\\u0000y\"} ", 16, why, sizeof why);   /* a NUL is the caller's */
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_null(jsonx_own_duplicate(v));
    cJSON_Delete(v);
    ck_assert_ptr_null(jsonx_parse_one("{} []", 5, why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "more than one JSON value"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonx");
    TCase *tc = tcase_create("jsonx");
    tcase_add_test(tc, integers_written_exactly);
    tcase_add_test(tc, several_in_one_object);
    tcase_add_test(tc, two_readings_refused);
    tcase_add_test(tc, keys_twice_found_in_small_and_large_objects);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
