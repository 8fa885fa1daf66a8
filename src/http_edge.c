/* http_edge — see include/http_edge.h */
#include "http_edge.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/keyvalq_struct.h>

/* A Content-Length longer than this is refused before it is converted (2^63 has 19 digits). */
#define CL_MAX_DIGITS 18

/* What the header lines said, gathered over all of them. */
struct fields {
    int n_cl, n_te;
    unsigned long long cl;       /* the Content-Length, once one was seen */
};

static int fail(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *why, size_t whylen, int code, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* A printable excerpt of s[0, n) for a message: at most 40 bytes, anything outside
 * printable ASCII shown as '?', so the answer stays valid UTF-8 JSON. */
static const char *excerpt(const char *s, size_t n, char *out, size_t outlen)
{
    size_t max = outlen - 4, j = 0;
    for (size_t i = 0; i < n && j < max; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (n > max)
        out[j++] = '.', out[j++] = '.', out[j++] = '.';
    out[j] = '\0';
    return out;
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_val(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static void trim(const char **v, size_t *n)
{
    while (*n && ((*v)[0] == ' ' || (*v)[0] == '\t'))
        (*v)++, (*n)--;
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

/* One header field: its name and value as bytes (the value untrimmed). */
static int check_field(struct fields *f, const char *name, size_t nlen, const char *val, size_t vlen,
                       char *why, size_t whylen)
{
    char ex[48];
    if (nlen == 0)
        return fail(why, whylen, 400, "a header line has no name before its colon");
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)name[i]))
            return fail(why, whylen, 400, "header name \"%s\" holds a character a header name may not hold "
                        "(a space before the colon, or a control character)", excerpt(name, nlen, ex, sizeof ex));
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)val[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(why, whylen, 400, "the value of header %s holds a control character (0x%02x)",
                        excerpt(name, nlen, ex, sizeof ex), c);
    }
    trim(&val, &vlen);
    if (name_is(name, nlen, "Content-Length")) {
        if (++f->n_cl > 1)
            return fail(why, whylen, 400, "more than one Content-Length header: send exactly one");
        if (vlen == 0 || vlen > CL_MAX_DIGITS)
            return fail(why, whylen, 400, "Content-Length \"%s\" is not a length: digits only, at most %d",
                        excerpt(val, vlen, ex, sizeof ex), CL_MAX_DIGITS);
        unsigned long long v = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9')
                return fail(why, whylen, 400, "Content-Length \"%s\" is not a length: digits only",
                            excerpt(val, vlen, ex, sizeof ex));
            v = v * 10 + (unsigned)(val[i] - '0');
        }
        f->cl = v;
    } else if (name_is(name, nlen, "Transfer-Encoding")) {
        if (++f->n_te > 1)
            return fail(why, whylen, 400, "more than one Transfer-Encoding header: send at most one, \"chunked\"");
        if (!(vlen == 7 && strncasecmp(val, "chunked", 7) == 0))
            return fail(why, whylen, 400, "Transfer-Encoding \"%s\" is not accepted: only \"chunked\"",
                        excerpt(val, vlen, ex, sizeof ex));
    }
    return 0;
}

static int check_fields_done(const struct fields *f, size_t max_body, char *why, size_t whylen)
{
    if (f->n_cl && f->n_te)
        return fail(why, whylen, 400, "both Content-Length and Transfer-Encoding: send one of them");
    if (f->n_cl && f->cl > max_body)
        return fail(why, whylen, 413, "the body (%llu bytes) is larger than max_body_bytes (%zu)", f->cl, max_body);
    return 0;
}

int http_edge_check_headers(const struct evkeyvalq *hdrs, size_t max_body, char *why, size_t whylen)
{
    struct fields f = { 0 };
    const struct evkeyval *h;
    for (h = hdrs->tqh_first; h; h = h->next.tqe_next) {     /* sys/queue.h's TAILQ_FOREACH, spelled out */
        int rc = check_field(&f, h->key, strlen(h->key), h->value, strlen(h->value), why, whylen);
        if (rc)
            return rc;
    }
    return check_fields_done(&f, max_body, why, whylen);
}

static int check_target(const char *p, size_t n, char *why, size_t whylen)
{
    char ex[48];
    if (n == 0)
        return fail(why, whylen, 400, "the request has no target (path)");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            return fail(why, whylen, 400, "the path holds a byte a URL may not hold (0x%02x at %zu): "
                        "percent-encode it", c, i);
        if (c != '%')
            continue;
        if (i + 2 >= n)
            return fail(why, whylen, 400, "the path \"%s\" ends inside a %%-escape", excerpt(p, n, ex, sizeof ex));
        if (!is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2]))
            return fail(why, whylen, 400, "the path \"%s\" holds a '%%' that is not followed by two hex digits",
                        excerpt(p, n, ex, sizeof ex));
        int v = hex_val((unsigned char)p[i + 1]) * 16 + hex_val((unsigned char)p[i + 2]);
        if (v < 0x20 || v == 0x7f)
            return fail(why, whylen, 400, "the path holds %%%c%c, an encoded control character",
                        p[i + 1], p[i + 2]);
        i += 2;
    }
    return 0;
}

int http_edge_check_path(const char *raw_path, char *why, size_t whylen)
{
    if (!raw_path)
        return fail(why, whylen, 400, "the request has no target (path)");
    return check_target(raw_path, strlen(raw_path), why, whylen);
}

size_t http_edge_head_end(const char *buf, size_t len, size_t from)
{
    /* An empty first line ends the head at once: there is no request line to wait for. */
    if (len >= 1 && buf[0] == '\n')
        return 1;
    if (len >= 2 && buf[0] == '\r' && buf[1] == '\n')
        return 2;
    size_t i = from > 3 ? from - 3 : 0;
    for (;;) {
        const char *nl = i < len ? memchr(buf + i, '\n', len - i) : NULL;
        if (!nl)
            return 0;
        i = (size_t)(nl - buf) + 1;          /* the start of the next line */
        if (i < len && buf[i] == '\n')
            return i + 1;
        if (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
            return i + 2;
    }
}

/* The request line: method SP target SP HTTP/d.d, nothing more. */
static int check_request_line(const char *l, size_t n, char *why, size_t whylen)
{
    char ex[48];
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)l[i]))
        i++;
    if (i == 0 || i >= n || l[i] != ' ')
        return fail(why, whylen, 400, "the request line \"%s\" is not METHOD SP target SP HTTP/1.1",
                    excerpt(l, n, ex, sizeof ex));
    /* A method libevent does not know would get its HTML answer: refused here in JSON. */
    static const char *const known[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT",
                                         "PATCH" };
    bool is_known = false;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        is_known = is_known || (strlen(known[k]) == i && memcmp(l, known[k], i) == 0);
    if (!is_known)
        return fail(why, whylen, 501, "the method \"%.*s\" is not one waguard knows: GET, POST, PUT, PATCH and "
                    "DELETE are served where a route takes them, HEAD, OPTIONS, TRACE and CONNECT answered 405",
                    (int)(i < 24 ? i : 24), l);
    const char *t = l + i + 1;
    const char *sp = memchr(t, ' ', n - (size_t)(t - l));
    if (!sp)
        return fail(why, whylen, 400, "the request line \"%s\" is not METHOD SP target SP HTTP/1.1",
                    excerpt(l, n, ex, sizeof ex));
    /* The target ends at the next space: a second space inside it shows as junk after the version. */
    int rc = check_target(t, (size_t)(sp - t), why, whylen);
    if (rc)
        return rc;
    const char *v = sp + 1;
    size_t vn = n - (size_t)(v - l);
    if (!(vn == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
          v[7] >= '0' && v[7] <= '9'))
        return fail(why, whylen, 400, "the request line \"%s\" does not end in an HTTP version (HTTP/1.1)",
                    excerpt(l, n, ex, sizeof ex));
    return 0;
}

int http_edge_check_head(const char *head, size_t len, size_t max_body, char *why, size_t whylen)
{
    struct fields f = { 0 };
    size_t pos = 0;
    bool first = true;
    while (pos < len) {
        const char *l = head + pos;
        const char *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n && l[n - 1] == '\r')
            n--;
        if (first) {
            first = false;
            int rc = check_request_line(l, n, why, whylen);
            if (rc)
                return rc;
            continue;
        }
        if (n == 0)
            break;                           /* the empty line: the end of the head */
        if (l[0] == ' ' || l[0] == '\t')
            return fail(why, whylen, 400, "a header line continues the one before it (obs-fold): "
                        "send each header on one line");
        const char *colon = memchr(l, ':', n);
        if (!colon)
            return fail(why, whylen, 400, "a header line has no colon");
        size_t nlen = (size_t)(colon - l);
        int rc = check_field(&f, l, nlen, colon + 1, n - nlen - 1, why, whylen);
        if (rc)
            return rc;
    }
    if (first)
        return fail(why, whylen, 400, "the request is empty");
    return check_fields_done(&f, max_body, why, whylen);
}
