/* main — the daemon's life: options, configuration, the modules in order, signals
 * (on the event loop), sd_notify, reload and the two-stage shutdown. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "ack.h"
#include "blocksync.h"
#include "keycheck.h"
#include "app.h"
#include "metrics.h"
#include "routes.h"
#include "secnotify.h"
#include "server.h"
#include "store.h"
#include "upstream.h"

enum { EXIT_USAGE = 2, EXIT_CONFIG = 78 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: waguard [--config FILE] [--check-config]\n"
            "       waguard --list-keys | --version | --help\n"
            "\n"
            "Guards sends to WhatsApp users whose identity changed, beside a WhatsApp\n"
            "Business API client: takes its webhooks, keeps the state in Redis, answers\n"
            "send decisions and acknowledges identity changes.\n"
            "\n"
            "  -c, --config FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
            "  -t, --check-config  validate the configuration and exit\n"
            "      --list-keys     print every configuration key: section, key, default and\n"
            "                      whether a change needs a reload or a restart\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n"
            "\n"
            "Every key can be overridden by WAGUARD_<SECTION>_<KEY>.  See waguard(8).\n");
}

/* ---- reload ------------------------------------------------------------ */

/* Builds everything the new file needs (configuration with the restart-only keys put
 * back and validated, token files, the TLS context), and only then swaps it in; any
 * refusal keeps the running configuration whole and counts as a failed reload. */
static void reload(struct app *app)
{
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
               (unsigned long long)app_mono_ms() * 1000ULL, app->cfg->path);
    struct config *n = calloc(1, sizeof *n);
    struct upstream_prep *up = NULL;
    char err[1024] = "out of memory";
    if (!n || config_reload(app->cfg->path, app->cfg, n, err, sizeof err) != 0 ||
        upstream_prepare(n, &up, err, sizeof err) != 0) {
        if (n && n->path)
            config_free(n);
        free(n);
        app->metrics->reload_failures++;
        log_error(&app->log, "main", "reload refused, the running configuration stays: %s", err);
        sd_notify(0, "READY=1\nSTATUS=running; the last reload was refused (see the log)");
        return;
    }
    if (n->restart_kept[0])
        log_warn(&app->log, "main", "%s changed in %s: it needs a restart; keeping the running value",
                 n->restart_kept, n->path);
    if (app->prev_cfg) {
        config_free(app->prev_cfg);
        free(app->prev_cfg);
    }
    app->prev_cfg = app->cfg;
    app->cfg = n;
    app->log.level = n->log_level;
    app->log.format = n->log_format;
    server_reconfigure(app);
    upstream_apply(app, up);
    keycheck_run(app);       /* the numbers, or the check itself, may have changed */
    secnotify_run(app);
    for (size_t i = 0; i < n->nholds; i++)
        (void)metrics_hold(app->metrics, n->holds[i].name);    /* a zero line per category */
    app->metrics->reloads++;
    log_notice(&app->log, "main", "configuration reloaded from %s", n->path);
    sd_notify(0, "READY=1\nSTATUS=running");
}

/* ---- shutdown ----------------------------------------------------------- */

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    (void)fd;
    (void)what;
    int reqs = server_in_flight(app);
    long long acks = ack_in_flight(app);
    if (reqs == 0 && acks == 0) {
        log_notice(&app->log, "main", "drained; exiting");
        event_base_loopexit(app->base, NULL);
    } else if (app_mono_ms() >= app->stop_deadline_ms) {
        log_warn(&app->log, "main", "shutdown deadline reached with %d request(s) and %lld "
                 "acknowledgement(s) in flight; exiting (the acknowledgements are retried after their lease)",
                 reqs, acks);
        event_base_loopexit(app->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct app *app = arg;
    (void)what;
    if (sig == SIGHUP) {
        log_notice(&app->log, "main", "SIGHUP: reloading %s", app->cfg->path);
        reload(app);
        return;
    }
    if (app->stopping) {
        log_warn(&app->log, "main", "second stop signal: exiting now");
        event_base_loopbreak(app->base);
        return;
    }
    app->stopping = true;
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    log_notice(&app->log, "main", "%s: no longer accepting; finishing what is in flight (up to %ld s)",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", app->cfg->shutdown_timeout_s);
    server_stop_accepting(app);
    ack_stop(app);
    app->stop_deadline_ms = app_mono_ms() + app->cfg->shutdown_timeout_s * 1000;
    app->drain_timer = event_new(app->base, -1, EV_PERSIST, on_drain, app);
    struct timeval tv = { 0, 50 * 1000 };
    event_add(app->drain_timer, &tv);
    on_drain(-1, 0, app);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1");
}

/* ---- start and stop ----------------------------------------------------- */

static int start(struct app *app)
{
    char err[1024];
    if (store_new(app, err, sizeof err) != 0 || upstream_new(app, err, sizeof err) != 0 ||
        ack_new(app, err, sizeof err) != 0 || keycheck_new(app, err, sizeof err) != 0 ||
        blocksync_new(app, err, sizeof err) != 0 || secnotify_new(app, err, sizeof err) != 0 ||
        server_new(app, routes_router(), err, sizeof err) != 0) {
        log_error(&app->log, "main", "cannot start: %s", err);
        return -1;
    }
    app->sig_hup = evsignal_new(app->base, SIGHUP, on_signal, app);
    app->sig_term = evsignal_new(app->base, SIGTERM, on_signal, app);
    app->sig_int = evsignal_new(app->base, SIGINT, on_signal, app);
    event_add(app->sig_hup, NULL);
    event_add(app->sig_term, NULL);
    event_add(app->sig_int, NULL);
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
        app->watchdog = event_new(app->base, -1, EV_PERSIST, on_watchdog, app);
        struct timeval tv = { (time_t)(wd_usec / 2 / 1000000), (suseconds_t)(wd_usec / 2 % 1000000) };
        event_add(app->watchdog, &tv);
        log_info(&app->log, "main", "systemd watchdog every %llu ms", (unsigned long long)wd_usec / 2000);
    }
    return 0;
}

static void stop(struct app *app)
{
    struct event **evs[] = { &app->sig_hup, &app->sig_term, &app->sig_int, &app->watchdog, &app->drain_timer };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    /* Redis first: its pending callbacks (answered with NULL) still find the
     * server, the worker and the requests they belong to. */
    store_free(app);
    upstream_free(app);     /* its callbacks still find the worker and the server */
    blocksync_free(app);
    secnotify_free(app);
    keycheck_free(app);
    ack_free(app);
    server_free(app);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'V' },
        { "list-keys", no_argument, NULL, 'K' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = CONFIG_DEFAULT_PATH;
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': path = optarg; break;
        case 't': check = 1; break;
        case 'V': printf("waguard %s\n", WAGUARD_VERSION); return 0;
        case 'K': config_list_keys(stdout); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "waguard: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }

    struct app app = { 0 };
    struct metrics *metrics = calloc(1, sizeof *metrics);
    struct config *cfg = calloc(1, sizeof *cfg);
    char err[1024];
    if (!metrics || !cfg) {
        fprintf(stderr, "waguard: out of memory\n");
        return 1;
    }
    if (config_load(path, cfg, err, sizeof err) != 0) {
        /* Before the log exists; journald still gets the error priority. */
        const char *js = getenv("JOURNAL_STREAM");
        fprintf(stderr, "%swaguard: %s\n", js && *js ? "<3>" : "", err);
        free(cfg);
        free(metrics);
        return EXIT_CONFIG;
    }
    /* What the configuration needs beyond its keys (the TLS context from ca_file) is
     * built now, so that a file that cannot work stops here with EXIT_CONFIG. */
    struct upstream_prep *prep = NULL;
    if (upstream_prepare(cfg, &prep, err, sizeof err) != 0) {
        const char *js = getenv("JOURNAL_STREAM");
        fprintf(stderr, "%swaguard: %s: %s\n", js && *js ? "<3>" : "", path, err);
        config_free(cfg);
        free(cfg);
        free(metrics);
        return EXIT_CONFIG;
    }
    upstream_prep_free(prep);
    if (check) {
        printf("waguard: %s is valid\n", path);
        if (cfg->require_valid_contact)
            printf("waguard: note: [gate] require_valid_contact = true protects nothing on WABA client v2.39 "
                   "and later, which answers every contact check \"valid\" with a wa_id, WhatsApp user or not; "
                   "it still refuses numbers an older client said were invalid\n");
        if (cfg->check_budget == 0)
            printf("waguard: note: [contacts] check_budget = 0: contact checks are not limited; checking many "
                   "numbers without messaging them gets the business banned\n");
        config_free(cfg);
        free(cfg);
        free(metrics);
        return 0;
    }
    app.cfg = cfg;
    app.metrics = metrics;
    for (size_t i = 0; i < cfg->nholds; i++)
        (void)metrics_hold(metrics, cfg->holds[i].name);       /* a zero line per category */
    log_init(&app.log, cfg->log_level, cfg->log_format);
    signal(SIGPIPE, SIG_IGN);
    app.base = event_base_new();
    if (!app.base) {
        log_error(&app.log, "main", "cannot create the event loop");
        return 1;
    }
    char redis_where[600];
    if (cfg->redis_sentinels && cfg->redis_sentinels[0])
        snprintf(redis_where, sizeof redis_where, "master %s from sentinels %s", cfg->redis_master_name,
                 cfg->redis_sentinels);
    else
        snprintf(redis_where, sizeof redis_where, "%s", cfg->redis_url);
    log_notice(&app.log, "main", "waguard %s starting: listen %s, redis %s, upstream %s (%s), ack %s",
               WAGUARD_VERSION, cfg->listen, redis_where, cfg->upstream_url,
               cfg->api == API_CLOUD ? "cloud" : "onprem", cfg->ack == ACK_AUTO ? "auto" : "manual");
    int rc = 0;
    if (start(&app) != 0) {
        rc = 1;
    } else {
        sd_notify(0, "READY=1\nSTATUS=running");
        event_base_dispatch(app.base);
        sd_notify(0, "STOPPING=1");
    }
    stop(&app);
    event_base_free(app.base);
    config_free(app.cfg);
    free(app.cfg);
    if (app.prev_cfg) {
        config_free(app.prev_cfg);
        free(app.prev_cfg);
    }
    free(metrics);
    log_notice(&app.log, "main", "stopped");
    return rc;
}
