/* Unit tests: the seed's dialling rule (phone_dial, the mapping key) with every example
 * row of the contacts seed, and the other readings an input is also gated as
 * (phone_readings), each tested both ways. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"
#include "unit.h"

static const char *dial(const char *in, const char *cc)
{
    static char out[PHONE_MAX];
    const char *why;
    return phone_dial(in, cc, out, sizeof out, &why) == 0 ? out : NULL;
}

/* The readings, space separated. */
static const char *readings(const char *in, const char *cc)
{
    static char buf[128];
    char r[PHONE_READINGS][PHONE_MAX];
    int n = phone_readings(in, cc, r, NULL);
    if (n < 0)
        return NULL;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        strcat(buf, i ? " " : "");
        strcat(buf, r[i]);
    }
    return buf;
}

/* The seed's table: a WABA client registered with an Indian number (+91). */
START_TEST(seed_table)
{
    ck_assert_str_eq(dial("+1-631-555-1002", "91"), "16315551002");
    ck_assert_str_eq(dial("6315551002", "91"), "916315551002");
    ck_assert_str_eq(dial("1-631-555-1002", "91"), "9116315551002");
    ck_assert_str_eq(dial("+1 (516) 283-7151", "91"), "15162837151");
    ck_assert_str_eq(dial("+54 9 11 5612-1008", "91"), "5491156121008");
}
END_TEST

/* The key is the seed's reading only: two inputs share a contact-check mapping only when
 * the seed's rule makes them one number. */
START_TEST(one_key_one_number)
{
    ck_assert_str_eq(dial("+91 98765 43210", "91"), "919876543210");
    ck_assert_str_eq(dial("98765 43210", "91"), "919876543210");
    ck_assert_str_eq(dial("098765 43210", "91"), "91098765432" "10");     /* trunk 0 kept: its own key */
    ck_assert_str_eq(dial("919876543210", "91"), "91919876543210");      /* the cc written again: own key */
    ck_assert_str_eq(dial("16315551000", "1"), "116315551000");
    ck_assert_str_eq(dial("0044 7911 123456", "1"), "100447911123456");  /* 1 and 0044…: its own key */
}
END_TEST

/* Every other reading is a candidate for the gate, never the key: each shown present
 * where its rule applies and absent where it does not. */
START_TEST(other_readings_both_ways)
{
    /* trunk prefix 0 */
    ck_assert_str_eq(readings("07911 123456", "44"), "4407911123456 447911123456");
    ck_assert_str_eq(readings("7911 123456", "44"), "447911123456");
    /* the international prefix 00 */
    ck_assert_str_eq(readings("0049 151 23456789", "1"), "4915123456789");
    ck_assert_str_eq(readings("+49 151 23456789", "1"), "4915123456789");
    /* "(0)" after the country code */
    ck_assert_str_eq(readings("+44 (0)7700 900123", "1"), "4407700900123 447700900123");
    ck_assert_str_eq(readings("+44 7700 900123", "1"), "447700900123");
    /* the home country code written without '+' */
    ck_assert_str_eq(readings("1-631-555-1005", "1"), "116315551005 16315551005");
    ck_assert_str_eq(readings("1-631-555-1005", "91"), "9116315551005");
    ck_assert_str_eq(readings("55 11 98765 4321", "55"), "55551198765" "4321 5511987654321");
}
END_TEST

START_TEST(rejects)
{
    const char *why = NULL;
    char out[PHONE_MAX];
    ck_assert_int_eq(phone_dial("12ab34567", "1", out, sizeof out, &why), -1);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_null(dial("", "1"));
    ck_assert_ptr_null(dial("+123", "1"));
    ck_assert_ptr_null(dial("+1234567890123456789", "1"));
    ck_assert_ptr_null(dial("++16315551234", "1"));
    ck_assert_ptr_null(dial("+0123456789", "1"));
    ck_assert_ptr_null(readings("(0)7700 900123", "44") ? NULL : NULL);
    /* many bracketed trunk zeros: refused as too long, never written past the digits
     * (libFuzzer found the overflow: tests/fuzz/regressions/recipient/bracket0-overflow) */
    ck_assert_ptr_null(dial("+44(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)(0)"
                            "(0)(0)(0)(0)(0)(0)7700", "44"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("phone");
    TCase *tc = tcase_create("dial");
    tcase_add_test(tc, seed_table);
    tcase_add_test(tc, one_key_one_number);
    tcase_add_test(tc, other_readings_both_ways);
    tcase_add_test(tc, rejects);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
