/* wtime — see include/wtime.h */
#include "wtime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

#define SECONDS_BELOW 1e11

int wtime_from_number(double v, long long *ms)
{
    if (!isfinite(v) || v < 0)
        return -1;
    double m = v < SECONDS_BELOW ? v * 1000.0 : v;
    if (m >= (double)WTIME_MAX_MS)
        return -1;
    *ms = (long long)m;
    return 0;
}

int wtime_parse(const cJSON *v, long long *ms)
{
    if (cJSON_IsNumber(v))
        return wtime_from_number(v->valuedouble, ms);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return -1;
    const char *s = v->valuestring;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    long long n = strtoll(s, NULL, 10);
    if (errno)
        return -1;
    return wtime_from_number((double)n, ms);
}

void wtime_rfc3339(long long ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (!strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) && len)
        buf[0] = '\0';
}
