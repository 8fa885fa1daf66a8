/* phone — see include/phone.h */
#include "phone.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

/* A national number with its country code: 7 to 15 digits, the first not 0 (E.164). */
static bool e164_ok(const char *d)
{
    size_t n = strlen(d);
    return n >= 7 && n <= 15 && d[0] != '0';
}

/* The digits of in after an optional '+', with "(0)" noted; -1 when another character
 * than the punctuation appears. */
static int digits_of(const char *in, bool *plus, bool *bracket0, char *d, size_t dlen, const char **why)
{
    *plus = *in == '+';
    *bracket0 = false;
    const char *p = in + (*plus ? 1 : 0);
    size_t n = 0;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isdigit(c)) {
            if (n + 1 >= dlen) {
                *why = "more than 15 digits";
                return -1;
            }
            d[n++] = (char)c;
        } else if (c == '(' && strncmp(p, "(0)", 3) == 0 && *plus && n > 0) {
            if (n + 1 >= dlen) {
                *why = "more than 15 digits";
                return -1;
            }
            *bracket0 = true;     /* the trunk prefix written after the country code */
            d[n++] = '0';
            p += 2;
        } else if (c != ' ' && c != '-' && c != '(' && c != ')' && c != '.') {
            *why = "only digits, a leading +, spaces and - ( ) . may appear in a phone number";
            return -1;
        }
    }
    d[n] = '\0';
    if (n == 0) {
        *why = "no digits";
        return -1;
    }
    return 0;
}

static void add(char out[PHONE_READINGS][PHONE_MAX], int *n, const char *a, const char *b);
static int phone_readings_of(const char *in, const char *home_cc, char out[PHONE_READINGS][PHONE_MAX], bool *seed_ok,
                             const char **why);

int phone_dial(const char *in, const char *home_cc, char *out, size_t outlen, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;           /* callers that only need yes or no pass NULL */
    char r[PHONE_READINGS][PHONE_MAX];
    bool seed_ok;
    int n = phone_readings_of(in, home_cc, r, &seed_ok, why);
    if (n < 0)
        return -1;
    if (!seed_ok) {
        *why = "by the seed's rule (the country code after '+', else home_country_code in front) this is not "
               "a number of 7 to 15 digits";
        return -1;
    }
    if (strlen(r[0]) >= outlen) {
        *why = "number too long";
        return -1;
    }
    memcpy(out, r[0], strlen(r[0]) + 1);
    return 0;
}

static void add(char out[PHONE_READINGS][PHONE_MAX], int *n, const char *a, const char *b)
{
    char x[PHONE_MAX];
    if (text_join(x, sizeof x, a, b, (char *)NULL) >= sizeof x || !e164_ok(x) || *n >= PHONE_READINGS)
        return;
    for (int i = 0; i < *n; i++)
        if (strcmp(out[i], x) == 0)
            return;
    memcpy(out[(*n)++], x, sizeof x);
}

/* The readings, the seed's first when it is a number (seed_ok). */
static int phone_readings_of(const char *in, const char *home_cc, char out[PHONE_READINGS][PHONE_MAX], bool *seed_ok,
                             const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    bool plus, bracket0;
    char d[32];
    *seed_ok = false;
    if (!in || digits_of(in, &plus, &bracket0, d, sizeof d, why) != 0)
        return -1;
    int n = 0;
    /* the seed's reading */
    if (plus)
        add(out, &n, d, "");
    else
        add(out, &n, home_cc, d);
    *seed_ok = n == 1;
    if (plus && bracket0) {
        /* "+44 (0)7700 …": the number without the bracketed 0 */
        char nob[32];
        const char *z = strstr(in, "(0)");
        size_t before = 0;
        for (const char *p = in + 1; p < z; p++)
            before += isdigit((unsigned char)*p) ? 1 : 0;
        snprintf(nob, sizeof nob, "%.*s%s", (int)before, d, d + before + 1);
        add(out, &n, nob, "");
    } else if (!plus && strncmp(d, "00", 2) == 0) {
        add(out, &n, d + 2, "");                 /* the international prefix */
    } else if (!plus && d[0] == '0') {
        add(out, &n, home_cc, d + 1);            /* the national (trunk) prefix */
    } else if (!plus && strncmp(d, home_cc, strlen(home_cc)) == 0) {
        add(out, &n, d, "");                     /* the home country code written without '+' */
    }
    if (n == 0) {
        *why = "a phone number with its country code has 7 to 15 digits and does not start with 0";
        return -1;
    }
    return n;
}

int phone_readings(const char *in, const char *home_cc, char out[PHONE_READINGS][PHONE_MAX], const char **why)
{
    bool seed_ok;
    return phone_readings_of(in, home_cc, out, &seed_ok, why);
}
