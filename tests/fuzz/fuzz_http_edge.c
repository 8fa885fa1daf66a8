/* libFuzzer target: the HTTP edge (src/http_edge.c).  Depends on http_edge.c and libevent only.
 *
 * The input is a request head as a client could send it.  Besides "no crash, no leak, no
 * undefined behaviour", it holds the module to three promises:
 *   - a head end found in two reads is the one found in one (the resumed scan of server.c);
 *   - every result is 0, 400 or 413, with a reason in printable ASCII (it goes into JSON);
 *   - what the raw check accepts (or calls too large), the check on libevent's view of the
 *     same head agrees with: the two lines of defence never tell different stories. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_edge.h"

#define MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_result(int rc, const char *why)
{
    if (rc != 0 && rc != 400 && rc != 413 && rc != 501)
        abort();
    if (rc == 0)
        return;
    if (!why[0])
        abort();
    for (const char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            abort();
}

/* libevent 2.1.12's evhttp_parse_headers_ on the header lines of a head: each line up to
 * LF (a CR before it dropped), the name up to the first colon as is, the value after it
 * with leading spaces skipped and trailing white space trimmed. */
static void libevent_view(const char *head, size_t len, struct evkeyvalq *q)
{
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
            continue;
        }
        if (n == 0)
            break;
        char *line = strndup(l, n);
        if (!line)
            abort();
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            char *v = colon + 1;
            v += strspn(v, " ");
            size_t vn = strlen(v);
            while (vn && strchr(" \t\r\n", v[vn - 1]))
                v[--vn] = '\0';
            (void)evhttp_add_header(q, line, v);
        }
        free(line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    char why[192];

    size_t end = http_edge_head_end(buf, size, 0);
    if (end > size)
        abort();
    if (size > 1) {
        size_t cut = data[size - 1] % size;
        size_t a = http_edge_head_end(buf, cut, 0);
        size_t b = a ? a : http_edge_head_end(buf, size, cut);
        if (b != end)
            abort();
    }

    struct evkeyvalq q;
    q.tqh_first = NULL;                  /* TAILQ_INIT, spelled out */
    q.tqh_last = &q.tqh_first;
    if (end) {
        why[0] = '\0';
        int raw = http_edge_check_head(buf, end, MAX_BODY, why, sizeof why);
        check_result(raw, why);
        libevent_view(buf, end, &q);
        why[0] = '\0';
        int parsed = http_edge_check_headers(&q, MAX_BODY, why, sizeof why);
        check_result(parsed, why);
        if ((raw == 0 || raw == 413) && parsed != raw)
            abort();
        evhttp_clear_headers(&q);
    }

    /* The first line as a request target (a C string: up to a NUL or the line's end). */
    char target[512];
    size_t tn = 0;
    while (tn < size && tn < sizeof target - 1 && buf[tn] != '\n')
        tn++;
    memcpy(target, buf, tn);
    target[tn] = '\0';
    why[0] = '\0';
    check_result(http_edge_check_path(target, why, sizeof why), why);
    return 0;
}
