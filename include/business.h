/* business — the business's own numbers (Cloud API phone_number_id): their shape, the
 * ones [upstream] phone_number_id configures, and which one a decision or a send is for.
 * On-Premises has one number per WABA client and names none. */
#ifndef WAGUARD_BUSINESS_H
#define WAGUARD_BUSINESS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define BUSINESS_NUMBER_MAX 64
#define BUSINESS_NUMBERS_MAX 16

/* A business number's id as it may name state: 1 to 63 letters, digits, '_' or '-'. */
bool business_number_valid(const char *n);

/* The numbers of [upstream] phone_number_id, at most max, into out.  Returns how many. */
int business_numbers(const struct config *cfg, char (*out)[BUSINESS_NUMBER_MAX], int max);

/* The number a decision or a send is for, into out: the one named (a path's or a
 * query's, already checked with business_number_valid), else [upstream] phone_number_id's
 * first, else "" (the store then takes the one number webhooks came for, or the strictest
 * of those seen); On-Premises: "-" (its one number, the plain fields). */
void business_number_for(const struct config *cfg, const char *named, char *out, size_t len);

/* The first configured number into out; "" when none.  (The number Cloud paths that
 * name none are for.) */
void business_number_default(const struct config *cfg, char *out, size_t len);

#endif
