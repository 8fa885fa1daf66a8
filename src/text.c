/* text — bounded string building at the cost of a copy (include/text.h). */
#include "text.h"

#include <stdarg.h>
#include <string.h>

/* Appends the n bytes of s at dst + *at, as many as fit before the terminator's byte. */
static void put(char *dst, size_t size, size_t *at, const char *s, size_t n)
{
    if (*at < size - 1) {
        size_t room = size - 1 - *at;
        memcpy(dst + *at, s, n < room ? n : room);
    }
    *at += n;
}

size_t text_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src), at = 0;
    if (size == 0)
        return n;
    put(dst, size, &at, src, n);
    dst[n < size ? n : size - 1] = '\0';
    return n;
}

size_t text_join(char *dst, size_t size, ...)
{
    va_list ap;
    size_t at = 0;
    va_start(ap, size);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
        if (size)
            put(dst, size, &at, s, strlen(s));
        else
            at += strlen(s);
    }
    va_end(ap);
    if (size)
        dst[at < size ? at : size - 1] = '\0';
    return at;
}

size_t text_int(char *dst, size_t size, long long v)
{
    char buf[24], *p = buf + sizeof buf;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    *--p = '\0';
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return text_copy(dst, size, p);
}
