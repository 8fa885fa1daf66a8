/* Unit tests: resp writes each command byte for byte as hiredis's own formatting does
 * (redisFormatCommandArgv, the reference), for empty, binary and long arguments and for
 * counts and lengths that change their number of digits; a NUL follows every command
 * (hiredis 0.14 reads a formatted command's start with strchr); resp_format writes nothing
 * into a buffer too small and says the size it needs. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "resp.h"
#include "unit.h"

/* argv (lens: NULL or each length) by resp_format and by hiredis: the same bytes. */
static void same_as_hiredis(int argc, const char **argv, const size_t *lens)
{
    char *want = NULL;
    int wantlen = redisFormatCommandArgv(&want, argc, argv, lens);
    ck_assert_int_gt(wantlen, 0);
    size_t need = resp_format(NULL, 0, (size_t)argc, argv, lens);
    ck_assert_uint_eq(need, (size_t)wantlen);
    char *got = malloc(need + 1);
    ck_assert_ptr_nonnull(got);
    /* no room for the NUL: nothing written */
    memset(got, '#', need + 1);
    ck_assert_uint_eq(resp_format(got, need, (size_t)argc, argv, lens), need);
    ck_assert_int_eq(got[0], '#');
    ck_assert_uint_eq(resp_format(got, need + 1, (size_t)argc, argv, lens), need);
    ck_assert_mem_eq(got, want, need);
    ck_assert_int_eq(got[need], '\0');
    memset(got, '#', need + 1);
    /* the same through the pieces */
    size_t size = resp_count_size((size_t)argc);
    for (int i = 0; i < argc; i++)
        size += resp_arg_size(lens ? lens[i] : strlen(argv[i]));
    ck_assert_uint_eq(size, need);
    char *p = resp_put_count(got, (size_t)argc);
    for (int i = 0; i < argc; i++)
        p = resp_put_arg(p, argv[i], lens ? lens[i] : strlen(argv[i]));
    resp_put_end(p);
    ck_assert_uint_eq((size_t)(p - got), need);
    ck_assert_mem_eq(got, want, need);
    ck_assert_int_eq(got[need], '\0');
    free(got);
    redisFreeCommand(want);
}

START_TEST(plain_commands)
{
    const char *one[] = { "MULTI" };
    same_as_hiredis(1, one, NULL);
    const char *hmget[] = { "HMGET", "waguard:user:{447700900123}", "id_hash", "id_ts", "last_in:15550001111" };
    same_as_hiredis(5, hmget, NULL);
    const char *empty[] = { "HSET", "k", "", "v" };
    same_as_hiredis(4, empty, NULL);
}
END_TEST

START_TEST(binary_and_long_arguments)
{
    /* NUL, CR LF and '$' inside an argument travel as bytes: the length says where it ends */
    const char bin[] = { 'a', '\0', '\r', '\n', '$', '*', 'z' };
    const char *argv[] = { "SET", "k", bin };
    size_t lens[] = { 3, 1, sizeof bin };
    same_as_hiredis(3, argv, lens);
    /* lengths of 9, 10, 99, 100, 9999, 10000 and 100000 bytes: one digit more each time */
    static const size_t sizes[] = { 9, 10, 99, 100, 9999, 10000, 100000 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *big = malloc(sizes[i]);
        ck_assert_ptr_nonnull(big);
        memset(big, 'x', sizes[i]);
        const char *a[] = { "FCALL", big };
        size_t l[] = { 5, sizes[i] };
        same_as_hiredis(2, a, l);
        free(big);
    }
}
END_TEST

START_TEST(many_arguments)
{
    /* 9, 10, 11 and 1200 arguments: the count's digits change too (a group commit of
     * bodies is a command of thousands of arguments) */
    static const int counts[] = { 9, 10, 11, 1200 };
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int n = counts[c];
        const char **argv = calloc((size_t)n, sizeof *argv);
        ck_assert_ptr_nonnull(argv);
        static const char *words[] = { "st", "", "wamid.HBgLMTU1NTAwMDAwMDEVAgARGBI", "delivered", "0" };
        for (int i = 0; i < n; i++)
            argv[i] = words[i % 5];
        same_as_hiredis(n, argv, NULL);
        free(argv);
    }
}
END_TEST

START_TEST(too_small_a_buffer)
{
    const char *argv[] = { "PING" };
    char buf[8];
    memset(buf, '#', sizeof buf);
    size_t need = resp_format(buf, sizeof buf, 1, argv, NULL);
    ck_assert_uint_eq(need, strlen("*1\r\n$4\r\nPING\r\n"));
    for (size_t i = 0; i < sizeof buf; i++)
        ck_assert_int_eq(buf[i], '#');
    char fits[32];
    memset(fits, '#', sizeof fits);
    ck_assert_uint_eq(resp_format(fits, need, 1, argv, NULL), need);   /* no room for the NUL */
    ck_assert_int_eq(fits[0], '#');
    ck_assert_uint_eq(resp_format(fits, need + 1, 1, argv, NULL), need);
    ck_assert_mem_eq(fits, "*1\r\n$4\r\nPING\r\n", need + 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, plain_commands);
    tcase_add_test(tc, binary_and_long_arguments);
    tcase_add_test(tc, many_arguments);
    tcase_add_test(tc, too_small_a_buffer);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
