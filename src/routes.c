/* routes — see include/routes.h */
#include "routes.h"

#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "console.h"
#include "gate_http.h"
#include "idcheck.h"
#include "proxy.h"
#include "send.h"
#include "status.h"
#include "webhook.h"

#define GET EVHTTP_REQ_GET
#define POST EVHTTP_REQ_POST
#define PUT EVHTTP_REQ_PUT
#define DELETE EVHTTP_REQ_DELETE

/* First match wins.  Reads of identity state take an api token (an operator's console
 * shows them to both); what changes it takes an admin token. */
static const struct route_def table[] = {
    { GET, "/healthz", ROLE_NONE, ROUTE_HEALTHZ, status_healthz, false },
    { GET, "/readyz", ROLE_NONE, ROUTE_READYZ, status_readyz, false },
    { GET, "/metrics", ROLE_NONE, ROUTE_METRICS, status_metrics, false },
    { GET, "/console", ROLE_NONE, ROUTE_CONSOLE, console_serve, false },
    { GET, "/console/", ROLE_NONE, ROUTE_CONSOLE, console_serve, false },
    { GET, "/console/*", ROLE_NONE, ROUTE_CONSOLE, console_serve, false },
    { GET, "/v1/gate/*", ROLE_API, ROUTE_GATE, gate_http_get, false },
    { POST, "/v1/gate", ROLE_API, ROUTE_GATE_BATCH, gate_http_batch, false },
    { GET, "/v1/identities", ROLE_API, ROUTE_IDENTITIES, admin_list, false },
    { POST, "/v1/identities/retry", ROLE_ADMIN, ROUTE_IDENTITY_ACK, admin_retry_all, false },
    { GET, "/v1/identities/*", ROLE_API, ROUTE_IDENTITY, admin_get, false },
    { POST, "/v1/identities/*/ack", ROLE_ADMIN, ROUTE_IDENTITY_ACK, admin_ack, false },
    { POST, "/v1/identities/*/release", ROLE_ADMIN, ROUTE_IDENTITY_RELEASE, admin_release, false },
    { GET, "/v1/audit", ROLE_API, ROUTE_AUDIT, admin_audit, false },
    { GET, "/v1/overview", ROLE_API, ROUTE_OVERVIEW, admin_overview, false },
    { POST, "/identity-change/check", ROLE_API, ROUTE_IDENTITY_CHANGE_CHECK, idcheck_check, false },
    { POST, "/identity-change/retrieve-date", ROLE_API, ROUTE_IDENTITY_CHANGE_CHECK, idcheck_retrieve_date, false },
    { POST, "/v1/messages", ROLE_API, ROUTE_MESSAGES, send_onprem, false },
    { POST, "/v1/contacts", ROLE_API, ROUTE_CONTACTS, proxy_contacts, false },
    { GET, "/v1/contacts/blocklist", ROLE_API, ROUTE_BLOCKLIST, proxy_blocklist, false },
    { GET, "/v1/contacts/*/identity", ROLE_API, ROUTE_IDENTITY_PROXY, proxy_identity, false },
    /* a successful PUT acknowledges: under [identity] ack = manual an operator's act */
    { PUT, "/v1/contacts/*/identity", ROLE_ACK, ROUTE_IDENTITY_PROXY, proxy_identity, false },
    { POST, "/v1/contacts/*/block", ROLE_API, ROUTE_BLOCK, proxy_block, false },
    { POST, "/v1/contacts/*/unblock", ROLE_API, ROUTE_BLOCK, proxy_block, false },
    { POST, "/v1/contacts/*/report", ROLE_API, ROUTE_BLOCK, proxy_block, false },
    { POST, "/messages", ROLE_API, ROUTE_CLOUD_MESSAGES, send_cloud, true },
    { POST, "/*/*/messages", ROLE_API, ROUTE_CLOUD_MESSAGES, send_cloud, true },
    { POST, "/*/*/marketing_messages", ROLE_API, ROUTE_CLOUD_MESSAGES, send_cloud_marketing, true },
    { POST | GET, "/*/*/calls", ROLE_API, ROUTE_FORWARDED, proxy_refuse_calls, true },
    { POST | DELETE | GET, "/block_users", ROLE_API, ROUTE_CLOUD_BLOCK, proxy_cloud_block, true },
    { POST | DELETE | GET, "/*/*/block_users", ROLE_API, ROUTE_CLOUD_BLOCK, proxy_cloud_block, true },
};

static const struct route_def webhook_post_route = { POST, NULL, ROLE_NONE, ROUTE_WEBHOOK, webhook_post, false };
static const struct route_def webhook_verify_route = { GET, NULL, ROLE_NONE, ROUTE_WEBHOOK_VERIFY, webhook_verify, false };
static const struct route_def forward_v1 = { 0, NULL, ROLE_API, ROUTE_FORWARDED, proxy_unknown, false };
static const struct route_def forward_graph = { 0, NULL, ROLE_API, ROUTE_FORWARDED, proxy_unknown, true };
/* A change to the WABA client's settings can turn off what protects users
 * (show_security_notifications, the Cloud's identity key check): an operator's act. */
static const struct route_def forward_v1_settings = { 0, NULL, ROLE_ADMIN, ROUTE_FORWARDED, proxy_settings, false };
static const struct route_def forward_graph_settings = { 0, NULL, ROLE_ADMIN, ROUTE_FORWARDED, proxy_settings, true };

/* /v1/settings and below, or a Graph path ending in /settings (/VERSION/PNID/settings). */
static bool settings_path(const char *path)
{
    if (strncmp(path, "/v1/settings", 12) == 0 && (path[12] == '\0' || path[12] == '/'))
        return true;
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    return strncmp(path, "/v1/", 4) != 0 && n >= 9 && strncmp(path + n - 9, "/settings", 9) == 0;
}

/* Matches path against pattern, capturing '*' segments (percent-decoded) into args.  A
 * segment that does not decode whole into args does not match. */
static bool match(const char *pattern, const char *path, char args[2][160])
{
    int ncap = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '*') {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || ncap >= 2)
                return false;
            char seg[512];
            if (n >= sizeof seg)
                return false;
            memcpy(seg, s, n);
            seg[n] = '\0';
            size_t dlen = 0;
            char *dec = evhttp_uridecode(seg, 0, &dlen);
            if (!dec)
                return false;
            /* Never a shorter id than the one sent: not past a decoded NUL (http_edge refuses
             * those first), nor cut to fit. */
            bool whole = strlen(dec) == dlen && dlen < 160;
            if (whole)
                memcpy(args[ncap++], dec, dlen + 1);
            free(dec);
            if (!whole)
                return false;
            s += n;
            p++;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && (*s == '\0' || (s[0] == '/' && s[1] == '\0'));
}

static const struct route_def *resolve(const struct config *cfg, const char *path, int method, char args[2][160],
                                   int *path_methods)
{
    *path_methods = 0;
    size_t wl = strlen(cfg->webhook_path);  /* the webhook's path, with a final '/' as every route */
    if (strncmp(path, cfg->webhook_path, wl) == 0 && (path[wl] == '\0' || (path[wl] == '/' && path[wl + 1] == '\0'))) {
        if (method == POST)
            return &webhook_post_route;
        if (method == GET)
            return &webhook_verify_route;
        *path_methods = GET | POST;
        return NULL;
    }
    bool v1 = strncmp(path, "/v1/", 4) == 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if ((table[i].graph && v1) || !match(table[i].pattern, path, args))
            continue;                /* /v1/x/messages is no Graph path */
        if ((table[i].methods & method) ||
            (method == EVHTTP_REQ_HEAD && (table[i].methods & GET) && table[i].role == ROLE_NONE))
            return &table[i];        /* HEAD of what anyone may GET (health checkers use it) */
        *path_methods |= table[i].methods;
        if (!strchr(table[i].pattern, '*')) {
            /* a path named exactly (/v1/identities/retry) is that route's, never a '*' of
             * another's (a user called "retry"): 405 unless a route of that same path takes it */
            for (size_t j = i + 1; j < sizeof table / sizeof table[0]; j++) {
                if (strcmp(table[j].pattern, table[i].pattern) != 0)
                    continue;
                if (table[j].methods & method)
                    return &table[j];
                *path_methods |= table[j].methods;
            }
            return NULL;
        }
    }
    if (*path_methods)
        return NULL;
    if (cfg->forward_unknown && proxy_forwardable(path, method)) {
        if (method != GET && settings_path(path))
            return v1 ? &forward_v1_settings : &forward_graph_settings;
        return v1 ? &forward_v1 : &forward_graph;
    }
    return NULL;
}

static bool graph_path(const struct config *cfg, const char *path)
{
    static const char *const own[] = { "/v1/", "/healthz", "/readyz", "/metrics", "/console", "/identity-change/" };
    if (!path || path[0] != '/' || path[1] == '\0' || path[1] == '?' ||
        strncmp(path, cfg->webhook_path, strlen(cfg->webhook_path)) == 0)
        return false;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strncmp(path, own[i], strlen(own[i])) == 0)
            return false;
    return true;
}

static const struct router router = { .resolve = resolve, .graph_path = graph_path };

const struct router *routes_router(void)
{
    return &router;
}
