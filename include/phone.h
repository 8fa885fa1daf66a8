/* phone — phone numbers and WhatsApp user ids in one canonical form.
 *
 * The rule of the contacts seed: a leading '+' carries the country code; without it the
 * configured home country code is put in front.  Two refinements a WABA client makes
 * as well: a bare number that already starts with the home country code and is 11 or
 * more digits long is taken as international (a wa_id such as 16315551234), and a
 * national trunk '0' or an international "00" prefix is understood.  Business-scoped
 * user ids ("US.13491208655302741918", Cloud API) pass through unchanged. */
#ifndef WAGUARD_PHONE_H
#define WAGUARD_PHONE_H

#include <stddef.h>

#define PHONE_MAX 64

/* Writes the canonical id of in to out (digits only, or the BSUID as given).
 * home_cc NULL means in is a wa_id as WhatsApp sends it: international, no '+'.
 * Returns 0, or -1 with a reason in why when in is not a dialable number. */
int phone_normalise(const char *in, const char *home_cc, char *out, size_t outlen,
                    const char **why) __attribute__((warn_unused_result));

#endif
