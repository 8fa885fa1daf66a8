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
 * then p = resp_put_count(buf, argc) and p = resp_put_arg(p, arg, len) for each, and
 * resp_put_end(p), into a buffer of at least size + 1 bytes; p - buf == size at the end.
 *
 * The byte after the command is a NUL, not part of it (hand hiredis size bytes):
 * hiredis 0.14's redisAsyncFormattedCommand finds the command's name with strchr, which
 * reads a buffer as a C string, so one without a NUL is read past its end. */
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
/* The NUL after the command, at p (the byte after its last argument). */
void resp_put_end(char *p);

/* A whole command of argc arguments (lens NULL: each is a C string) into buf of cap
 * bytes, and the NUL after it.  Returns the command's size (the NUL not counted); nothing
 * is written when cap is less than size + 1 (call again with a buffer of size + 1). */
size_t resp_format(char *buf, size_t cap, size_t argc, const char *const *argv, const size_t *lens);

#endif
