/* resp — a Redis command written as it goes on the wire (RESP: "*<argc>\r\n", then each
 * argument as "$<len>\r\n<bytes>\r\n"), for hiredis's redisAsyncFormattedCommand.
 *
 * hiredis 0.14 formats an argv command with sdscatfmt, a piece at a time: 5,000 to
 * 15,000 instructions a command on the gate's and the webhooks' paths (callgrind,
 * docs/benchmarks.md), a fifth of a gate decision's own CPU.  Writing the same bytes
 * with two passes (the size, then the bytes) costs a few hundred.  The store is the only
 * user: every command it sends on a hot path goes through here.
 *
 * Usage: size = resp_count_size(argc) + the sum of resp_arg_size(len) of each argument;
 * then p = resp_put_count(buf, argc) and p = resp_put_arg(p, arg, len) for each, into a
 * buffer of at least size bytes; p - buf == size at the end. */
#ifndef WAGUARD_RESP_H
#define WAGUARD_RESP_H

#include <stddef.h>

/* The bytes "*<argc>\r\n" takes. */
size_t resp_count_size(size_t argc);
/* The bytes one argument of len bytes takes. */
size_t resp_arg_size(size_t len);

/* Write "*<argc>\r\n" / one argument at p; return the byte after it. */
char *resp_put_count(char *p, size_t argc);
char *resp_put_arg(char *p, const char *arg, size_t len);

/* A whole command of argc arguments (lens NULL: each is a C string) into buf of cap
 * bytes.  Returns the command's size; nothing is written when it is more than cap (call
 * again with a buffer of that size). */
size_t resp_format(char *buf, size_t cap, size_t argc, const char *const *argv, const size_t *lens);

#endif
