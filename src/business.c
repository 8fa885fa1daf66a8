/* business — see include/business.h */
#include "business.h"

#include <stdio.h>
#include <string.h>

bool business_number_valid(const char *n)
{
    size_t i = 0;
    for (; n[i]; i++) {
        char c = n[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') ||
            i >= BUSINESS_NUMBER_MAX - 1)
            return false;
    }
    return i > 0;
}

int business_numbers(const struct config *cfg, char (*out)[BUSINESS_NUMBER_MAX], int max)
{
    int n = 0;
    for (const char *p = cfg->phone_number_id; *p && n < max;) {
        p += strspn(p, ", ");
        size_t len = strcspn(p, ", ");
        if (len == 0)
            break;
        if (len < BUSINESS_NUMBER_MAX) {
            memcpy(out[n], p, len);
            out[n++][len] = '\0';
        }
        p += len;
    }
    return n;
}

void business_number_default(const struct config *cfg, char *out, size_t len)
{
    char first[1][BUSINESS_NUMBER_MAX];
    if (business_numbers(cfg, first, 1) == 1 && strlen(first[0]) < len)
        memcpy(out, first[0], strlen(first[0]) + 1);
    else if (len)
        out[0] = '\0';
}

void business_number_for(const struct config *cfg, const char *named, char *out, size_t len)
{
    if (named && *named)
        snprintf(out, len, "%s", named);
    else if (cfg->api == API_ONPREM)
        snprintf(out, len, "-");
    else
        business_number_default(cfg, out, len);
}
