/* phone — see include/phone.h */
#include "phone.h"

#include <ctype.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

static bool is_bsuid(const char *s)
{
    /* CC.DIGITS: two upper-case letters, a dot, then letters or digits. */
    if (!isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1]) || s[2] != '.')
        return false;
    size_t n = strlen(s + 3);
    if (n == 0 || n > 48)
        return false;
    for (const char *p = s + 3; *p; p++)
        if (!isalnum((unsigned char)*p))
            return false;
    return true;
}

int phone_normalise(const char *in, const char *home_cc, char *out, size_t outlen, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    while (isspace((unsigned char)*in))
        in++;
    if (is_bsuid(in)) {
        if (strlen(in) >= outlen) {
            *why = "user id too long";
            return -1;
        }
        strcpy(out, in);
        return 0;
    }
    bool plus = false;
    if (*in == '+') {
        plus = true;
        in++;
    }
    char digits[PHONE_MAX];
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isdigit(c)) {
            if (n + 1 >= sizeof digits) {
                *why = "too many digits";
                return -1;
            }
            digits[n++] = (char)c;
        } else if (c == ' ' || c == '-' || c == '(' || c == ')' || c == '.' || c == '/') {
            continue;
        } else {
            *why = "only digits, spaces, + - ( ) . / may appear in a phone number";
            return -1;
        }
    }
    digits[n] = '\0';
    const char *d = digits;
    if (!plus && strncmp(d, "00", 2) == 0) {        /* international prefix */
        plus = true;
        d += 2;
    }
    char res[PHONE_MAX];
    size_t cclen = home_cc ? strlen(home_cc) : 0;
    if (plus || !home_cc) {
        snprintf(res, sizeof res, "%s", d);
    } else if (strncmp(d, home_cc, cclen) == 0 && strlen(d) >= 11) {
        snprintf(res, sizeof res, "%s", d);        /* already international, as a wa_id */
    } else {
        if (d[0] == '0')                            /* national trunk prefix */
            d++;
        snprintf(res, sizeof res, "%s%s", home_cc, d);
    }
    size_t rl = strlen(res);
    if (rl < 7 || rl > 15) {
        *why = "a phone number with its country code has 7 to 15 digits";
        return -1;
    }
    if (res[0] == '0') {
        *why = "a country code cannot start with 0";
        return -1;
    }
    if (rl >= outlen) {
        *why = "number too long";
        return -1;
    }
    memcpy(out, res, rl + 1);
    return 0;
}
