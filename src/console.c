/* console — see include/console.h */
#include "console.h"

#include <string.h>

/* The files of console/, compiled in by the Makefile (build/gen/console.c). */
struct console_file {
    const char *path;            /* "index.html", "app.js", … */
    const char *type;
    const unsigned char *data;
    size_t len;
};
extern const struct console_file console_files[];
extern const size_t console_nfiles;

void console_serve(struct request *r)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r->req));
    const char *name = strncmp(path, "/console/", 9) == 0 ? path + 9 : "";
    if (!*name)
        name = "index.html";
    for (size_t i = 0; i < console_nfiles; i++) {
        if (strcmp(console_files[i].path, name) != 0)
            continue;
        /* Everything shown comes from webhooks: scripts and styles from here only, no
         * inline script, never framed, nothing sniffed, no referrer. */
        request_add_header(r, "Content-Security-Policy",
                           "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
        request_add_header(r, "X-Content-Type-Options", "nosniff");
        request_add_header(r, "Referrer-Policy", "no-referrer");
        request_add_header(r, "X-Frame-Options", "DENY");
        request_add_header(r, "Cache-Control", "no-cache");
        request_reply_raw(r, 200, console_files[i].type, (const char *)console_files[i].data, console_files[i].len);
        return;
    }
    request_add_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    request_add_header(r, "X-Content-Type-Options", "nosniff");
    request_add_header(r, "Referrer-Policy", "no-referrer");
    request_reply_error(r, 404, "Not found", "no console file %s", name);
}
