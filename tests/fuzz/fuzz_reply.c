/* fuzz_reply — libFuzzer target for the reply objects of include/reply.h.
 *
 * The first byte picks how the rest is fed to the reader (whole, or in pieces of 1 to 255
 * bytes); the rest is what Redis could send.  The same bytes go to a reader with hiredis's
 * own functions and to one with reply_functions(): both must agree on every step (a reply,
 * nothing yet, or an error), and every reply must be the same tree element for element
 * (type, integer, len, the bytes and the NUL after them, elements in order).  Beyond that,
 * no crash, no leak, no undefined behaviour (every reply is freed by its top only).
 * Replay one input: build/fuzz/fuzz_reply FILE. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *rule)
{
    fprintf(stderr, "fuzz_reply: broken rule: %s\n", rule);
    abort();
}

static void same_tree(const redisReply *a, const redisReply *b)
{
    if (!a || !b)
        broken("an element is missing");
    if (a->type != b->type || a->integer != b->integer || a->len != b->len || a->elements != b->elements)
        broken("an element differs from hiredis's");
    if ((a->str == NULL) != (b->str == NULL) || (a->str && (memcmp(a->str, b->str, a->len) != 0 || b->str[b->len])))
        broken("a string differs from hiredis's");
    if ((a->element == NULL) != (b->element == NULL))
        broken("an element vector differs from hiredis's");
    for (size_t i = 0; i < a->elements; i++)
        same_tree(a->element[i], b->element[i]);
}

/* An array header announcing more than this many elements: both readers would allocate
 * its element vector before any element arrives (hiredis's reference with calloc, 8 bytes
 * an element), so a few bytes could ask for gigabytes.  Such inputs are left out; large
 * replies are the unit test's (tests/unit/test_reply.c). */
#define FUZZ_MAX_ELEMENTS 65536

static int announces_a_huge_array(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '*')
            continue;
        unsigned long long v = 0;
        for (size_t j = i + 1 + (i + 1 < n && p[i + 1] == '-'); j < n && p[j] >= '0' && p[j] <= '9'; j++)
            if ((v = v * 10 + (p[j] - '0')) > FUZZ_MAX_ELEMENTS)
                return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || announces_a_huge_array(data + 1, size - 1))
        return 0;
    size_t step = data[0] ? data[0] : size;
    data++;
    size--;
    redisReader *a = redisReaderCreate();
    redisReader *b = redisReaderCreateWithFunctions(reply_functions());
    if (!a || !b)
        abort();
    int done = 0;
    for (size_t at = 0; at < size && !done; at += step) {
        size_t k = size - at < step ? size - at : step;
        if (redisReaderFeed(a, (const char *)data + at, k) != REDIS_OK ||
            redisReaderFeed(b, (const char *)data + at, k) != REDIS_OK)
            broken("a feed failed");
        for (;;) {
            void *ra = NULL, *rb = NULL;
            int sa = redisReaderGetReply(a, &ra), sb = redisReaderGetReply(b, &rb);
            if (sa != sb)
                broken("one reader failed where the other did not");
            if (sa != REDIS_OK) {
                if (strcmp(a->errstr, b->errstr) != 0)
                    broken("the readers failed differently");
                done = 1;
                break;
            }
            if ((ra == NULL) != (rb == NULL))
                broken("one reader had a reply where the other had none");
            if (!ra)
                break;
            same_tree(ra, rb);
            freeReplyObject(ra);
            reply_functions()->freeObject(rb);
        }
    }
    redisReaderFree(a);
    redisReaderFree(b);
    return 0;
}
