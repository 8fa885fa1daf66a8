/* blocksync — the blocklist reaches the gate even when blocks were made elsewhere.
 *
 * At start and every [upstream] blocklist_sync_s seconds, waguard reads the whole
 * blocklist from the WABA client (On-Premises: GET /v1/contacts/blocklist, paginated by
 * offset; Cloud: GET /{graph_version}/{phone_number_id}/block_users for each configured
 * number, paginated by cursor) and hands it to src/lua/blocksync.lua, which blocks the
 * users listed and unblocks those the mirror holds that are no longer listed, except a
 * user blocked through waguard after the read began.  An answer that fails, or carries
 * errors[], ends that read without changing anything (counted as failed). */
#ifndef WAGUARD_BLOCKSYNC_H
#define WAGUARD_BLOCKSYNC_H

#include <stddef.h>

#include "app.h"

int blocksync_new(struct app *app, char *err, size_t errlen) __attribute__((warn_unused_result));
void blocksync_free(struct app *app);
/* Reads the blocklist now (unless a read is running), then on the schedule again. */
void blocksync_now(struct app *app);

#endif
