/* keycheck — turning Meta's identity key check on for each business number.
 *
 * With [upstream] identity_check = on (api = cloud), waguard calls
 * POST /{graph_version}/{phone_number_id}/settings with
 * {"user_identity_change":{"enable_identity_key_check":true}} for every number of
 * [upstream] phone_number_id, at start and after each reload, and again after a failure
 * (every minute).  The outcome per number is on /readyz and in
 * waguard_identity_check{phone_number_id,state}; a refusal is logged with Meta's message. */
#ifndef WAGUARD_KEYCHECK_H
#define WAGUARD_KEYCHECK_H

#include <cjson/cJSON.h>

#include "app.h"

int keycheck_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void keycheck_free(struct app *app);
/* Calls the settings route again for every configured number (start, reload). */
void keycheck_run(struct app *app);
/* Adds "identity_check": {"NUMBER":"on"|"pending"|"refused: …",…} to o (an answer being
 * built: /readyz, /v1/overview); nothing when the check is off. */
void keycheck_add_status(const struct app *app, cJSON *o);
/* Appends the metric lines to a Prometheus text being built. */
struct evbuffer;
void keycheck_metrics(const struct app *app, struct evbuffer *out);

#endif
