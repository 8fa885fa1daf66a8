/* waguardctl — the operator's command line for a running waguard.
 *
 * It reads waguard's configuration with the daemon's own reader (config_load: the same
 * validation, the same secret files) to learn where waguard listens and which admin token
 * to present, then calls waguard's HTTP admin API and prints the answer as a table, a
 * "key: value" block, or the API's own JSON (--json).
 *
 * One struct ctl is passed to everything: the options, the loaded configuration and the
 * streams to print on.  Nothing here keeps global mutable state.
 *
 *   waguardctl.c   options, usage, the command table, loading the configuration
 *   http.c         one HTTP/1.1 request over TCP or a unix socket (plain sockets, a deadline)
 *   commands.c     status, pending, failed, held, show, ack, release, retry, audit
 *   output.c       aligned tables, "key: value" blocks, times and ages, safe text */
#ifndef WAGUARDCTL_CTL_H
#define WAGUARDCTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "config.h"

/* Exit statuses (waguardctl(8), EXIT STATUS). */
enum { CTL_OK = 0, CTL_REFUSED = 1, CTL_USAGE = 2 };

/* Every request, connect to the whole answer. */
#define CTL_TIMEOUT_MS 15000
/* A reason is kept in the audit trail; waguard takes at most this many characters. */
#define CTL_REASON_MAX 500

struct ctl {
    /* options */
    const char *config_path;
    bool json;                 /* --json: print the API's JSON */
    const char *reason;        /* --reason TEXT, or NULL */
    bool all;                  /* retry --all */
    long limit;                /* audit --limit N; 0: the API's page size */
    long timeout_ms;

    /* from the configuration */
    struct config cfg;
    bool cfg_loaded;
    const char *token;         /* the first admin token's value, or NULL: no Authorization */
    const char *token_name;    /* its name ("ops"), or NULL */

    FILE *out;                 /* stdout */
    FILE *err;                 /* stderr */
};

/* ---- http.c ---------------------------------------------------------------------- */

struct http_reply {
    int status;                /* 200, 404, … */
    char *body;                /* NUL-terminated (malloc'd), len bytes before the NUL */
    size_t len;
};

/* Sends one request to the waguard listening at listen ("host:port", "[v6]:port" or
 * "unix:/path"), with "Authorization: Bearer token" when token is not NULL and body (JSON)
 * when it is not NULL, and reads the whole answer within timeout_ms.  Returns 0 with *rep
 * filled (release it with http_reply_free), or -1 with err saying what failed. */
int http_request(const char *listen, const char *token, const char *method, const char *target,
                 const char *body, long timeout_ms, struct http_reply *rep, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void http_reply_free(struct http_reply *rep);

/* Percent-encodes s (everything but RFC 3986 unreserved characters) into out.  Returns 0,
 * or -1 when out is too small. */
int http_encode(const char *s, char *out, size_t outlen) __attribute__((warn_unused_result));

/* ---- commands.c ------------------------------------------------------------------ */

int cmd_status(struct ctl *c, int argc, char **argv);
int cmd_pending(struct ctl *c, int argc, char **argv);
int cmd_failed(struct ctl *c, int argc, char **argv);
int cmd_held(struct ctl *c, int argc, char **argv);
int cmd_show(struct ctl *c, int argc, char **argv);
int cmd_ack(struct ctl *c, int argc, char **argv);
int cmd_release(struct ctl *c, int argc, char **argv);
int cmd_retry(struct ctl *c, int argc, char **argv);
int cmd_audit(struct ctl *c, int argc, char **argv);

/* ---- output.c -------------------------------------------------------------------- */

#define TABLE_MAX_COLS 10

/* An aligned table: a header line, then the rows, columns two spaces apart; the last
 * column is not padded.  Cells are copied, control characters replaced by '?'. */
struct table {
    size_t ncols;
    const char *head[TABLE_MAX_COLS];
    char **cells;              /* nrows * ncols */
    size_t nrows, cap;
    bool failed;               /* out of memory: table_print says so */
};

void table_init(struct table *t, size_t ncols, const char *const *head);
/* Adds a row of t->ncols cells (NULL or "" print as "-"). */
void table_add(struct table *t, const char *const *cells);
/* Prints t on out, each line after indent.  Returns 0, or -1 when a row could not be kept. */
int table_print(const struct table *t, FILE *out, const char *indent);
void table_free(struct table *t);

/* "label: value" lines with the values aligned: kv_add keeps them, kv_print prints them
 * (control characters replaced) and empties the block. */
struct kv {
    char *label[64];
    char *value[64];
    size_t n;
};
void kv_add(struct kv *b, const char *label, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void kv_print(struct kv *b, FILE *out);

/* A UNIX time in seconds as "2024-05-01T12:00:00Z" into buf ("-" for 0 or less). */
const char *fmt_time(long long seconds, char *buf, size_t len);
/* A number of seconds as "42s", "12m05s", "3h12m", "4d03h" into buf. */
const char *fmt_duration(long long seconds, char *buf, size_t len);
/* s with control characters replaced by '?', cut to at most max display characters with
 * "…" (0: whole), into buf. */
const char *fmt_safe(const char *s, size_t max, char *buf, size_t len);

/* Readers of an API answer's members: a string (NULL when missing or not a string), a
 * number (dflt when missing or not a number), a boolean (dflt likewise). */
const char *js_str(const cJSON *o, const char *key);
long long js_num(const cJSON *o, const char *key, long long dflt);
bool js_bool(const cJSON *o, const char *key, bool dflt);
/* A member as display text into buf: a string as is, a number, true/false, "-" for null
 * or missing, an object as "k=v, k=v". */
const char *js_text(const cJSON *o, const char *key, char *buf, size_t len);
/* Prints a JSON document on out, indented, with a final newline. */
void js_print(const cJSON *doc, FILE *out);

#endif
