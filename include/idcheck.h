/* idcheck — "did this user's identity change?" in the shape of the GSMA Open Gateway /
 * CAMARA SIM Swap API, so a fraud engine that asks a mobile operator about SIM swaps can
 * ask waguard about WhatsApp identity changes the same way:
 *   POST /identity-change/check          {"phoneNumber":"+…","maxAge":hours} → {"changed":bool}
 *   POST /identity-change/retrieve-date  {"phoneNumber":"+…"} → {"latestChange":RFC 3339|null}
 * phoneNumber is resolved like every recipient (recipient.h), the strictest known user
 * answering; errors come in CAMARA's {"status","code","message"}. */
#ifndef WAGUARD_IDCHECK_H
#define WAGUARD_IDCHECK_H

#include "request.h"

void idcheck_check(struct request *r);
void idcheck_retrieve_date(struct request *r);

#endif
