/* app — the one object the whole daemon shares.  Every module takes it; nothing else
 * is global.  main.c owns it: it creates the modules in order and frees them in reverse. */
#ifndef WAGUARD_APP_H
#define WAGUARD_APP_H

#include <stdbool.h>

#include "config.h"
#include "log.h"

struct event_base;
struct event;
struct server;
struct store;
struct upstream;
struct ack;
struct metrics;
struct keycheck;
struct blocksync;
struct secnotify;

struct app {
    struct event_base *base;
    struct config *cfg;          /* the running configuration (owned) */
    struct config *prev_cfg;     /* the one before the last reload, kept for one more
                                    reload so that work in flight never sees it freed */
    struct log log;
    struct metrics *metrics;
    struct store *store;
    struct upstream *upstream;
    struct ack *ack;
    struct server *server;
    struct keycheck *keycheck;   /* Meta's identity key check per number (Cloud) */
    struct blocksync *blocksync; /* the blocklist read from the WABA client */
    struct secnotify *secnotify; /* On-Premises' show_security_notifications */

    struct event *sig_hup, *sig_term, *sig_int, *watchdog, *drain_timer;
    bool stopping;               /* SIGTERM seen: draining */
    long stop_deadline_ms;       /* monotonic ms after which we exit anyway */
    /* The Date header of every answer (request.c), written again when the second changes:
     * libevent formats it for each answer otherwise (3,500 instructions, a twentieth of a
     * gate decision's). */
    char http_date[40];
    long long http_date_s;
};

/* Monotonic and wall clocks in milliseconds. */
long long app_mono_ms(void);
long long app_wall_ms(void);

#endif
