/* Unit tests: text_copy, text_join and text_int write exactly what snprintf's "%s" and
 * "%lld" would, for every size from 1 to past the whole (cut to fit, always terminated),
 * and return the length snprintf returns. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "text.h"
#include "unit.h"

/* got (a buffer filled with 'x' before the call, which returned n) holds what snprintf
 * wrote to want (returning w) into size bytes, and nothing past them. */
static void same_as_snprintf(const char *got, size_t n, const char *want, int w, size_t size)
{
    ck_assert_uint_eq(n, (size_t)w);
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(got[size], 'x');
}

START_TEST(copy_as_snprintf_for_every_size)
{
    static const char *const inputs[] = { "", "a", "anonymous", "waguard:user:{5491156122934}" };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        for (size_t size = 1; size <= strlen(inputs[i]) + 3; size++) {
            char got[64], want[64];
            memset(got, 'x', sizeof got);
            size_t n = text_copy(got, size, inputs[i]);
            same_as_snprintf(got, n, want, snprintf(want, size, "%s", inputs[i]), size);
        }
    }
}
END_TEST

START_TEST(join_as_snprintf_for_every_size)
{
    for (size_t size = 1; size <= 40; size++) {
        char got[64], want[64];
        memset(got, 'x', sizeof got);
        size_t n = text_join(got, size, "wg", ":user:{", "", "919876543210", "}", (char *)NULL);
        same_as_snprintf(got, n, want, snprintf(want, size, "%s%s%s%s%s", "wg", ":user:{", "", "919876543210", "}"),
                         size);
    }
    char one[8];
    ck_assert_uint_eq(text_join(one, sizeof one, (char *)NULL), 0);
    ck_assert_str_eq(one, "");
    /* size 0 writes nothing and still says how long the whole is, as snprintf does */
    memset(one, 'x', sizeof one);
    ck_assert_uint_eq(text_join(one, 0, "abc", "de", (char *)NULL), 5);
    ck_assert_uint_eq(text_copy(one, 0, "abc"), 3);
    ck_assert_uint_eq(text_int(one, 0, -42), 3);
    ck_assert_int_eq(one[0], 'x');
}
END_TEST

START_TEST(integers_as_printf)
{
    static const long long values[] = { 0, 7, -7, 10, 99, -100, 100000, 1796175075, 1796175075123LL,
                                        9223372036854775807LL, -9223372036854775807LL - 1 };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        for (size_t size = 1; size <= 24; size++) {
            char got[32], want[32];
            memset(got, 'x', sizeof got);
            size_t n = text_int(got, size, values[i]);
            same_as_snprintf(got, n, want, snprintf(want, size, "%lld", values[i]), size);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("text");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, copy_as_snprintf_for_every_size);
    tcase_add_test(tc, join_as_snprintf_for_every_size);
    tcase_add_test(tc, integers_as_printf);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
