/* Unit tests: the replies made by reply_functions() are the trees hiredis's own functions
 * make, element for element (type, integer, len, the bytes and the NUL after them, the
 * number and order of elements), for every kind of reply waguard meets (status, error,
 * integer, nil, a string with binary bytes, empty and nil arrays, a transaction's answer,
 * nesting), for a string and an array larger than a reply's first room, fed whole and a
 * byte at a time; a protocol error in the middle of an array leaves the reader in error
 * with nothing leaked (the sanitizer run checks), and the reader reads on after replies
 * that were freed. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "reply.h"
#include "unit.h"

static void same_tree(const redisReply *want, const redisReply *got)
{
    ck_assert_ptr_nonnull(want);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(got->type, want->type);
    ck_assert_int_eq(got->integer, want->integer);
    ck_assert_uint_eq(got->len, want->len);
    if (want->str) {
        ck_assert_ptr_nonnull(got->str);
        ck_assert_mem_eq(got->str, want->str, want->len);
        ck_assert_int_eq(got->str[got->len], '\0');
    } else {
        ck_assert_ptr_null(got->str);
    }
    ck_assert_uint_eq(got->elements, want->elements);
    if (!want->element)
        ck_assert_ptr_null(got->element);
    for (size_t i = 0; i < want->elements; i++)
        same_tree(want->element[i], got->element[i]);
}

/* The replies in wire (n of them), read by both readers fed step bytes at a time. */
static void read_both(const char *wire, size_t len, int n, size_t step)
{
    redisReader *a = redisReaderCreate();
    redisReader *b = redisReaderCreateWithFunctions(reply_functions());
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    int got = 0;
    for (size_t at = 0; at < len; at += step) {
        size_t k = len - at < step ? len - at : step;
        ck_assert_int_eq(redisReaderFeed(a, wire + at, k), REDIS_OK);
        ck_assert_int_eq(redisReaderFeed(b, wire + at, k), REDIS_OK);
        for (;;) {
            void *ra = NULL, *rb = NULL;
            ck_assert_int_eq(redisReaderGetReply(a, &ra), REDIS_OK);
            ck_assert_int_eq(redisReaderGetReply(b, &rb), REDIS_OK);
            ck_assert((ra == NULL) == (rb == NULL));
            if (!ra)
                break;
            same_tree(ra, rb);
            freeReplyObject(ra);
            reply_functions()->freeObject(rb);
            got++;
        }
    }
    ck_assert_int_eq(got, n);
    redisReaderFree(a);
    redisReaderFree(b);
}

static void check_wire(const char *wire, size_t len, int n)
{
    read_both(wire, len, n, len);
    read_both(wire, len, n, 1);
    read_both(wire, len, n, 7);
}

#define WIRE(s, n) check_wire(s, sizeof s - 1, n)

START_TEST(every_kind_waguard_meets)
{
    WIRE("+OK\r\n", 1);
    WIRE("-ERR unknown command 'X'\r\n", 1);
    WIRE("-NOPERM this user has no permissions to run the 'set' command\r\n", 1);
    WIRE(":0\r\n:1\r\n:-42\r\n:9223372036854775807\r\n", 4);
    WIRE("$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n", 4);
    WIRE("$8\r\nab\0\r\n\xff\x01z\r\n", 1);       /* binary bytes, a NUL and CRLF inside */
    /* a gate decision's transaction: MULTI, two commands, EXEC */
    WIRE("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$-1\r\n*10\r\n$10\r\nQmsk1hashA\r\n$13\r\n1764000000000\r\n"
         "$12\r\nacknowledged\r\n$10\r\n1764000000\r\n$-1\r\n$-1\r\n$5\r\nvalid\r\n$10\r\n1764000000\r\n$-1\r\n$-1\r\n", 4);
    /* an EXEC with an error and an integer among its replies, and nesting three deep */
    WIRE("*3\r\n-ERR wrong number of arguments\r\n:7\r\n*2\r\n*1\r\n$1\r\nx\r\n*0\r\n", 1);
    WIRE("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 1);
}
END_TEST

START_TEST(larger_than_the_first_room)
{
    /* a string of 100,000 bytes, alone and as an element; an array of 3,000 elements */
    size_t big = 100000;
    char *s = malloc(big + 64);
    ck_assert_ptr_nonnull(s);
    int h = snprintf(s, 64, "$%zu\r\n", big);
    for (size_t i = 0; i < big; i++)
        s[h + i] = (char)('a' + i % 26);
    memcpy(s + h + big, "\r\n", 2);
    read_both(s, (size_t)h + big + 2, 1, (size_t)h + big + 2);
    char *arr = malloc(big + 200);
    ck_assert_ptr_nonnull(arr);
    int k = snprintf(arr, 200, "*3\r\n:1\r\n");
    memcpy(arr + k, s, (size_t)h + big + 2);
    k += h + (int)big + 2;
    k += snprintf(arr + k, 200, "$3\r\nend\r\n");
    read_both(arr, (size_t)k, 1, (size_t)k);
    read_both(arr, (size_t)k, 1, 4096);
    free(arr);
    free(s);

    size_t n = 3000;
    char *many = malloc(n * 16 + 32);
    ck_assert_ptr_nonnull(many);
    size_t m = (size_t)snprintf(many, 32, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++)
        m += (size_t)sprintf(many + m, i % 3 ? "$4\r\nf%03zu\r\n" : (i % 2 ? ":%zu\r\n" : "$-1\r\n"), i % 1000);
    read_both(many, m, 1, m);
    read_both(many, m, 1, 13);
    free(many);
}
END_TEST

START_TEST(a_protocol_error_midway_leaks_nothing)
{
    static const char bad[] = "*3\r\n$2\r\nok\r\n*2\r\n:1\r\n!nonsense\r\n";
    redisReader *r = redisReaderCreateWithFunctions(reply_functions());
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(redisReaderFeed(r, bad, sizeof bad - 1), REDIS_OK);
    void *reply = NULL;
    ck_assert_int_eq(redisReaderGetReply(r, &reply), REDIS_ERR);
    ck_assert_ptr_null(reply);
    ck_assert_int_ne(r->err, 0);
    redisReaderFree(r);
    /* a reply left half-read when the reader is freed (a connection dropped) */
    static const char half[] = "*4\r\n$3\r\nabc\r\n:5\r\n$10\r\nabc";
    r = redisReaderCreateWithFunctions(reply_functions());
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(redisReaderFeed(r, half, sizeof half - 1), REDIS_OK);
    ck_assert_int_eq(redisReaderGetReply(r, &reply), REDIS_OK);
    ck_assert_ptr_null(reply);
    redisReaderFree(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reply");
    TCase *tc = tcase_create("reply");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, every_kind_waguard_meets);
    tcase_add_test(tc, larger_than_the_first_room);
    tcase_add_test(tc, a_protocol_error_midway_leaks_nothing);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
