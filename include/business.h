/* business — the business's own numbers (Cloud API phone_number_id): the ones
 * [upstream] phone_number_id configures, and which one a decision or a send is for.
 * On-Premises has one number per WABA client and names none. */
#ifndef WAGUARD_BUSINESS_H
#define WAGUARD_BUSINESS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define BUSINESS_NUMBER_MAX CONFIG_NUMBER_MAX
#define BUSINESS_NUMBERS_MAX CONFIG_NUMBERS_MAX

/* (Whether a string is a business number's id: config_number_valid, the configuration's
 * rule, which names the numbers first.) */

/* The numbers of [upstream] phone_number_id, at most max, into out.  Returns how many. */
int business_numbers(const struct config *cfg, char (*out)[BUSINESS_NUMBER_MAX], int max);

/* The number a decision or a send is for, into out: the one named (a path's or a
 * query's, already checked with config_number_valid), else [upstream] phone_number_id's
 * first, else "" (the store then takes the one number webhooks came for, or the strictest
 * of those seen); On-Premises: "-" (its one number, the plain fields). */
void business_number_for(const struct config *cfg, const char *named, char *out, size_t len);

/* The first configured number into out; "" when none.  (The number Cloud paths that
 * name none are for.) */
void business_number_default(const struct config *cfg, char *out, size_t len);

#endif
