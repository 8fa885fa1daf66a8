/* Unit tests: phone_normalise, with every example row of the contacts seed. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"
#include "unit.h"

static const char *norm(const char *in, const char *cc)
{
    static char out[PHONE_MAX];
    const char *why;
    return phone_normalise(in, cc, out, sizeof out, &why) == 0 ? out : NULL;
}

/* The seed's table: a WABA client registered with an Indian number (+91). */
START_TEST(seed_table)
{
    ck_assert_str_eq(norm("+1-631-555-1002", "91"), "16315551002");
    ck_assert_str_eq(norm("6315551002", "91"), "916315551002");
    ck_assert_str_eq(norm("1-631-555-1002", "91"), "9116315551002");
    ck_assert_str_eq(norm("+1 (516) 283-7151", "91"), "15162837151");
    ck_assert_str_eq(norm("+54 9 11 5612-1008", "91"), "5491156121008");
}
END_TEST

/* The seed's request list with a US-registered client gives these wa_ids back. */
START_TEST(seed_request_us)
{
    ck_assert_str_eq(norm("16315551000", "1"), "16315551000");
    ck_assert_str_eq(norm("+1 631 555 1001", "1"), "16315551001");
    ck_assert_str_eq(norm("6315551002", "1"), "16315551002");
    ck_assert_str_eq(norm("+1 (631) 555-1004", "1"), "16315551004");
    ck_assert_str_eq(norm("1-631-555-1005", "1"), "16315551005");
}
END_TEST

START_TEST(prefixes_and_ids)
{
    ck_assert_str_eq(norm("0044 7911 123456", "1"), "447911123456");
    ck_assert_str_eq(norm("07911 123456", "44"), "447911123456");
    ck_assert_str_eq(norm("US.13491208655302741918", "1"), "US.13491208655302741918");
    /* home_cc NULL: a wa_id as WhatsApp sends it, taken as international */
    ck_assert_str_eq(norm("447911123456", NULL), "447911123456");
}
END_TEST

START_TEST(rejects)
{
    const char *why = NULL;
    char out[PHONE_MAX];
    ck_assert_int_eq(phone_normalise("12ab34567", "1", out, sizeof out, &why), -1);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_null(norm("", "1"));
    ck_assert_ptr_null(norm("+123", "1"));
    ck_assert_ptr_null(norm("+1234567890123456789", "1"));
    ck_assert_ptr_null(norm("++16315551234", "1"));
    ck_assert_ptr_null(norm("+0123456789", "1"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("phone");
    TCase *tc = tcase_create("normalise");
    tcase_add_test(tc, seed_table);
    tcase_add_test(tc, seed_request_us);
    tcase_add_test(tc, prefixes_and_ids);
    tcase_add_test(tc, rejects);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
