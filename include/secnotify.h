/* secnotify — On-Premises' show_security_notifications.  Without it the WABA client sends
 * no user_identity_changed and lets every send through, so waguard would never close a
 * gate: [upstream] security_notifications says what to do about it.
 *   ensure (default)  read at start and every [upstream] settings_check_s; when it is off,
 *                     turn it on (PATCH /v1/settings/application), logged
 *   check             read on the same schedule; while it is off, /readyz answers 503
 *                     and waguard_security_notifications says off
 *   off               not read (for a WABA client that does not serve the settings)
 * While it is off and could not be turned on, /readyz answers 503 in both modes.  A WABA
 * client that does not answer leaves the state as it was (unknown before the first read).
 * The Cloud API has no such setting: Meta's identity key check is keycheck.h's. */
#ifndef WAGUARD_SECNOTIFY_H
#define WAGUARD_SECNOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "app.h"

struct evbuffer;

int secnotify_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void secnotify_free(struct app *app);
/* Reads the setting now (start, reload). */
void secnotify_run(struct app *app);
/* Adds "security_notifications": {"policy":…,"state":"on"|"off"|"unknown"[,"why":…]} to o
 * (an answer being built); nothing when not On-Premises or off. */
void secnotify_add_status(const struct app *app, cJSON *o);
/* True, with why, when the WABA client says the setting is off (and it stays off). */
bool secnotify_not_ready(const struct app *app, const char **why);
/* Appends the metric lines (nothing when not On-Premises or off). */
void secnotify_metrics(const struct app *app, struct evbuffer *out);

#endif
