/* text — bounded string building at the cost of a copy.
 *
 * snprintf(dst, n, "%s", s) runs printf's whole machine for a copy: about 500
 * instructions a call, and a gate decision builds a dozen names (its keys, its forms, the
 * caller).  These copy and join with memcpy, and say, as snprintf does, how long the
 * whole would have been: the result was cut when that is size or more.  Integers are
 * written by text_int: printf's "%d" costs as much as its "%s". */
#ifndef WAGUARD_TEXT_H
#define WAGUARD_TEXT_H

#include <stddef.h>

/* Copies src into dst (size bytes), cut to fit and always terminated (size 0: nothing
 * written, as snprintf); returns strlen(src). */
size_t text_copy(char *dst, size_t size, const char *src);

/* Writes the strings given, up to a NULL, one after another into dst (size bytes), cut to
 * fit and always terminated (size 0: nothing written); returns the length of them all. */
size_t text_join(char *dst, size_t size, ...) __attribute__((sentinel));

/* Writes v in decimal into dst (size bytes), as printf's "%lld" does, cut to fit and
 * always terminated (size 0: nothing written); returns its length. */
size_t text_int(char *dst, size_t size, long long v);

#endif
