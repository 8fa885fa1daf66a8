/* server — the HTTP server: listeners, connections, the strict edge (http_edge.h), and
 * dispatch by a route table it is given (routes.h; it knows no handler).
 *
 * Dispatch makes a struct request (request.h), refuses what the edge's rules refuse, finds
 * the route, authorizes the caller by the route's role and watches the connection, and
 * only then runs the handler: no handler can forget either. */
#ifndef WAGUARD_SERVER_H
#define WAGUARD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "app.h"
#include "request.h"

/* One route: the methods it takes (EVHTTP_REQ_* mask), the path pattern ('*' matches one
 * segment, captured decoded into request.arg), who may call it, what the metrics count
 * it as, the handler, and whether its callers speak Graph (waguard's errors then in
 * Graph's envelope). */
struct route_def {
    int methods;
    const char *pattern;
    enum role role;
    enum route metric;
    route_fn *fn;
    bool graph;
};

/* The routes a server serves.  resolve() gives the route for path and method (capturing
 * into args), or NULL with *path_methods the methods the path takes (0: no route). */
struct router {
    const struct route_def *(*resolve)(const struct config *cfg, const char *path, int method, char args[2][160],
                                   int *path_methods);
    /* True when path is one Graph's callers use (a Cloud path): waguard's refusals of it
     * (404, 405, the edge's 400/413/501) are in Graph's envelope. */
    bool (*graph_path)(const struct config *cfg, const char *path);
};

/* router: borrowed for the server's life. */
int server_new(struct app *app, const struct router *router, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void server_free(struct app *app);
/* Closes the listeners (draining on shutdown). */
void server_stop_accepting(struct app *app);
/* Requests being handled now, and answers not yet written out. */
int server_in_flight(const struct app *app);
/* Applies the limits of a reloaded configuration. */
void server_reconfigure(struct app *app);

#endif
