/* Unit tests: http_edge, the strict request rules (raw heads, libevent's parsed headers, paths). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_edge.h"
#include "unit.h"

#define MAX_BODY 4096

static char why[256];

static int head(const char *h)
{
    why[0] = '\0';
    return http_edge_check_head(h, strlen(h), MAX_BODY, why, sizeof why);
}

/* Headers as libevent would hold them: "Name: value" lines split at the first colon
 * with the name kept as is (libevent does not trim it) and the value's spaces trimmed. */
static int hdrs(const char *lines[])
{
    struct evkeyvalq q;
    q.tqh_first = NULL;                 /* TAILQ_INIT, spelled out */
    q.tqh_last = &q.tqh_first;
    for (int i = 0; lines[i]; i++) {
        char *dup = strdup(lines[i]);
        char *colon = strchr(dup, ':');
        ck_assert_ptr_nonnull(colon);
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        ck_assert_int_eq(evhttp_add_header(&q, dup, v), 0);
        free(dup);
    }
    why[0] = '\0';
    int rc = http_edge_check_headers(&q, MAX_BODY, why, sizeof why);
    evhttp_clear_headers(&q);
    return rc;
}

static int path(const char *p)
{
    why[0] = '\0';
    return http_edge_check_path(p, why, sizeof why);
}

START_TEST(good_heads)
{
    ck_assert_int_eq(head("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    ck_assert_int_eq(head("POST /webhook HTTP/1.1\r\nContent-Length: 4096\r\n"
                          "Content-Type: application/json\r\n\r\n"), 0);
    ck_assert_int_eq(head("POST /webhook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 0);
    ck_assert_int_eq(head("POST /webhook HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n"), 0);
    ck_assert_int_eq(head("GET /v1/gate/%2B1-631?type=text HTTP/1.0\n\n"), 0);    /* LF-only lines */
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-Empty:\r\nX-Tab:\ta\tb \r\nX-Utf8: caf\xc3\xa9\r\n\r\n"), 0);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\n\r\n"), 0);
}
END_TEST

START_TEST(content_length)
{
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 60\r\n\r\n"), 400);
    ck_assert_ptr_nonnull(strstr(why, "more than one Content-Length"));
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n"), 400);
    ck_assert_ptr_nonnull(strstr(why, "\"+2\""));
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 2x\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: x2\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
    /* surrounding spaces are the field's optional whitespace, not junk */
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length:   12  \r\n\r\n"), 0);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 0);
}
END_TEST

START_TEST(body_limit)
{
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n"), 0);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n"), 413);
    ck_assert_ptr_nonnull(strstr(why, "max_body_bytes (4096)"));
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n"), 413);
    /* a malformed header is a 400 even when a length is also too large */
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nContent-Length: 5000\r\nContent-Length: 5000\r\n\r\n"), 400);
}
END_TEST

START_TEST(transfer_encoding)
{
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n"), 400);
    ck_assert_ptr_nonnull(strstr(why, "Transfer-Encoding "));
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400);
    ck_assert_int_eq(head("POST / HTTP/1.1\r\nTransfer-Encoding:\tchunked\t\r\n\r\n"), 0);
}
END_TEST

START_TEST(header_lines)
{
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n"), 400);
    ck_assert_ptr_nonnull(strstr(why, "obs-fold"));
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nno colon here\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\n: no name\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX A: 1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-A: a\x01" "b\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n"), 400);
    /* a NUL inside a line: libevent would read the line as cut short there */
    static const char nul[] = "GET / HTTP/1.1\r\nContent-Length: 2\0 60\r\n\r\n";
    ck_assert_int_eq(http_edge_check_head(nul, sizeof nul - 1, MAX_BODY, why, sizeof why), 400);
    ck_assert_ptr_nonnull(strstr(why, "0x00"));
    /* the answer quotes printable ASCII only */
    ck_assert_int_eq(head("GET / HTTP/1.1\r\nX-\xc3\xa9: 1\r\n\r\n"), 400);
    for (const char *p = why; *p; p++)
        ck_assert((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}
END_TEST

START_TEST(request_lines)
{
    ck_assert_int_eq(head("\r\nGET / HTTP/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET  / HTTP/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET /a b HTTP/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTP/1.1 \r\n\r\n"), 400);
    ck_assert_int_eq(head("GET / HTTX/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET /\r\n\r\n"), 400);
    ck_assert_int_eq(head("G(T / HTTP/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head("GET /v1/gate/1631555%000001 HTTP/1.1\r\n\r\n"), 400);
    ck_assert_int_eq(head(""), 400);
}
END_TEST

START_TEST(paths)
{
    ck_assert_int_eq(path("/v1/gate/16315551234?type=text"), 0);
    ck_assert_int_eq(path("/v1/gate/%2B1%20631"), 0);
    ck_assert_int_eq(path("/v1/gate/1631555%000001"), 400);
    ck_assert_ptr_nonnull(strstr(why, "%00"));
    ck_assert_int_eq(path("/v1/gate/1631555%0a"), 400);
    ck_assert_int_eq(path("/v1/gate/1631555%1F"), 400);
    ck_assert_int_eq(path("/v1/gate/1631555%7f"), 400);
    ck_assert_int_eq(path("/v1/gate/x?type=%00"), 400);
    ck_assert_int_eq(path("/v1/gate/1631555%"), 400);
    ck_assert_int_eq(path("/v1/gate/1631555%0"), 400);
    ck_assert_int_eq(path("/v1/gate/1631555%zz"), 400);
    ck_assert_int_eq(path("/v1/gate/16315\x01" "55"), 400);
    ck_assert_int_eq(path("/v1/gate/16315\x7f"), 400);
    ck_assert_int_eq(path("/v1/gate/163 15"), 400);
    ck_assert_int_eq(path("/v1/gate/caf\xc3\xa9"), 400);
    ck_assert_int_eq(path(""), 400);
    ck_assert_int_eq(path(NULL), 400);
}
END_TEST

START_TEST(parsed_headers)
{
    ck_assert_int_eq(hdrs((const char *[]){ "Host: x", "Content-Length: 10", NULL }), 0);
    ck_assert_int_eq(hdrs((const char *[]){ "Content-Length: 2", "Content-Length: 60", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ "Content-Length: +2", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ "Content-Length: 5000", NULL }), 413);
    /* what libevent keeps of "Transfer-Encoding : chunked": the name with its space */
    ck_assert_int_eq(hdrs((const char *[]){ "Transfer-Encoding : chunked", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ "Transfer-Encoding: chunked", NULL }), 0);
    ck_assert_int_eq(hdrs((const char *[]){ "Transfer-Encoding: gzip", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ "Transfer-Encoding: chunked", "Content-Length: 1", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ "X-A: a\x01", NULL }), 400);
    ck_assert_int_eq(hdrs((const char *[]){ NULL }), 0);
}
END_TEST

START_TEST(head_end)
{
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    ck_assert_uint_eq(http_edge_head_end(h, strlen(h), 0), strlen(h) - 4);
    ck_assert_uint_eq(http_edge_head_end("GET / HTTP/1.1\n\nB", 17, 0), 16);
    ck_assert_uint_eq(http_edge_head_end("GET / HTTP/1.1\r\nHost: x\r\n", 25, 0), 0);
    ck_assert_uint_eq(http_edge_head_end("GET / HTTP/1.1\r\nHost: x\r\n\r", 26, 0), 0);
    /* an end split across reads is found when the scan resumes */
    for (size_t cut = 1; cut < strlen(h); cut++) {
        size_t first = http_edge_head_end(h, cut, 0);
        size_t end = first ? first : http_edge_head_end(h, strlen(h), cut);
        ck_assert_uint_eq(end, strlen(h) - 4);
    }
    ck_assert_uint_eq(http_edge_head_end("\r\nGET", 5, 0), 2);
    ck_assert_uint_eq(http_edge_head_end("", 0, 0), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http_edge");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, good_heads);
    tcase_add_test(tc, content_length);
    tcase_add_test(tc, body_limit);
    tcase_add_test(tc, transfer_encoding);
    tcase_add_test(tc, header_lines);
    tcase_add_test(tc, request_lines);
    tcase_add_test(tc, paths);
    tcase_add_test(tc, parsed_headers);
    tcase_add_test(tc, head_end);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
