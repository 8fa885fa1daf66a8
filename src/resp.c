/* resp — see include/resp.h */
#include "resp.h"

#include <string.h>

static size_t digits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static char *put_size(char *p, size_t v)
{
    char *end = p + digits(v), *q = end;
    do {
        *--q = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

size_t resp_count_size(size_t argc)
{
    return 1 + digits(argc) + 2;
}

size_t resp_arg_size(size_t len)
{
    return 1 + digits(len) + 2 + len + 2;
}

char *resp_put_count(char *p, size_t argc)
{
    *p++ = '*';
    p = put_size(p, argc);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

char *resp_put_arg(char *p, const char *arg, size_t len)
{
    *p++ = '$';
    p = put_size(p, len);
    *p++ = '\r';
    *p++ = '\n';
    if (len)
        memcpy(p, arg, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

void resp_put_end(char *p)
{
    *p = '\0';
}

size_t resp_format(char *buf, size_t cap, size_t argc, const char *const *argv, const size_t *lens)
{
    size_t size = resp_count_size(argc);
    for (size_t i = 0; i < argc; i++)
        size += resp_arg_size(lens ? lens[i] : strlen(argv[i]));
    if (size >= cap)
        return size;
    char *p = resp_put_count(buf, argc);
    for (size_t i = 0; i < argc; i++)
        p = resp_put_arg(p, argv[i], lens ? lens[i] : strlen(argv[i]));
    resp_put_end(p);
    return size;
}
