/* phone — phone numbers as a person types them, read by the contacts seed's rule.
 *
 * The seed's rule (the contacts node, "Phone Number Formats"): a leading '+' carries the
 * country code; without it the WABA client puts the country code of its own number in
 * front ([gate] home_country_code), whatever digits follow ("1-631-555-1002" from an
 * Indian number is +9116315551002).  Spaces, '-', '(', ')' and '.' are punctuation.
 * That reading is the number's one key (phone_dial): the contact-check mapping is kept
 * under it, so two inputs share a mapping only when the rule makes them one number.
 *
 * A person may mean something else by what they typed, and the WABA client's own parser
 * is not documented; phone_readings() also gives the readings ITU-T Recommendation E.164
 * describes, so that the gate can refuse for every user an input could name (never to
 * allow more):
 *   - a national (trunk) prefix '0' before a national number ("07700 900123" from the
 *     United Kingdom: +44 7700 900123); E.164 does not include it in the number;
 *   - the international prefix "00" ("0044 7700 900123": +44 7700 900123), the one ITU-T
 *     Recommendation E.164 (Annex) recommends;
 *   - "(0)" written after the country code ("+44 (0)7700 900123"), the trunk prefix
 *     shown in brackets, which the international number leaves out;
 *   - the home country code written without '+' ("1-631-555-1005" from a US number:
 *     +1 631 555 1005), the digits as the international number they spell. */
#ifndef WAGUARD_PHONE_H
#define WAGUARD_PHONE_H

#include <stddef.h>

#define PHONE_MAX 24          /* 15 digits and room */
#define PHONE_READINGS 3

/* The seed's reading of in: the digits of the international number, into out.
 * home_cc: the country code put in front of a number without '+'.  Returns 0, or -1
 * with a reason in why when in is not a dialable number. */
int phone_dial(const char *in, const char *home_cc, char *out, size_t outlen, const char **why)
    __attribute__((warn_unused_result));

/* Every reading of in that is a number: the seed's first (when it is one: the same as
 * phone_dial), then the ones above that differ from it.  Returns how many (at least 1),
 * or -1 with why when none is a number. */
int phone_readings(const char *in, const char *home_cc, char out[PHONE_READINGS][PHONE_MAX], const char **why)
    __attribute__((warn_unused_result));

#endif
