/* business — see include/business.h */
#include "business.h"

#include <string.h>

#include "text.h"

int business_numbers(const struct config *cfg, char (*out)[BUSINESS_NUMBER_MAX], int max)
{
    int n = 0;
    for (; n < max && n < cfg->nnumbers; n++)
        memcpy(out[n], cfg->numbers[n], BUSINESS_NUMBER_MAX);
    return n;
}

void business_number_default(const struct config *cfg, char *out, size_t len)
{
    if (cfg->nnumbers > 0 && strlen(cfg->numbers[0]) < len)
        memcpy(out, cfg->numbers[0], strlen(cfg->numbers[0]) + 1);
    else if (len)
        out[0] = '\0';
}

void business_number_for(const struct config *cfg, const char *named, char *out, size_t len)
{
    if (named && *named)
        text_copy(out, len, named);
    else if (cfg->api == API_ONPREM)
        text_copy(out, len, "-");
    else
        business_number_default(cfg, out, len);
}
