/* http_edge — the strict rules for what a client may send, checked before anything is routed.
 *
 * libevent 2.1's parser is lenient where leniency is dangerous: it takes the first of two
 * Content-Length headers, accepts "+2" as a length, keeps "Transfer-Encoding :" (a space
 * before the colon) as a different header and then frames the body by Content-Length, and
 * percent-decodes "%00" into a string that a C caller reads as cut short.  A front that
 * reads the same bytes differently (request smuggling), or a route that reads a shorter id,
 * follows.  These checks refuse all of that with 400, and a declared body larger than
 * max_body_bytes with 413, so server.c can answer in the JSON error envelope.
 *
 * Pure functions: no state, no I/O, no allocation; each result is 0 (acceptable), 400,
 * 413 or 501 (a method libevent does not know), with the reason written to why (a sentence a client's developer can act on). */
#ifndef WAGUARD_HTTP_EDGE_H
#define WAGUARD_HTTP_EDGE_H

#include <stddef.h>

struct evkeyvalq;

/* Where the request head in buf[0, len) ends: the offset just past the empty line that
 * closes it (lines end in LF with an optional CR before it, as libevent reads them), or 0
 * while it is incomplete.  from: bytes already scanned without finding it (a resumed scan
 * looks a few bytes back, so an end split across two reads is found). */
size_t http_edge_head_end(const char *buf, size_t len, size_t from);

/* Checks a complete raw request head (request line, header lines, the empty line) as it
 * came off the wire, so bytes that libevent's parse would hide (a NUL inside a line, a
 * folded line) are seen.  max_body: the largest body a declared Content-Length may announce. */
int http_edge_check_head(const char *head, size_t len, size_t max_body, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* Checks request headers as libevent parsed them (what the header rules are stated on;
 * the server checks a head with it when the raw head was not seen whole before libevent
 * read it, as a pipelined one; http_edge_check_head holds every rule below too):
 *   - every name is an RFC 9110 token (so "Transfer-Encoding " with its space is refused);
 *   - no value holds a control character other than a tab;
 *   - at most one Content-Length, and only digits;
 *   - at most one Transfer-Encoding, and only "chunked", never beside a Content-Length;
 *   - a Content-Length above max_body is 413. */
int http_edge_check_headers(const struct evkeyvalq *hdrs, size_t max_body, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* Checks a request target as sent (before percent-decoding): printable ASCII only (no
 * control character, space, DEL or byte above 0x7f), every '%' followed by two hex digits,
 * and no escape that decodes to a control character (%00 to %1F, %7F). */
int http_edge_check_path(const char *raw_path, char *why, size_t whylen)
    __attribute__((warn_unused_result));

#endif
