/* log — see include/log.h */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

static const char *const level_names[] = {
    [LOG_LVL_ERROR] = "error", [LOG_LVL_WARNING] = "warning", [LOG_LVL_NOTICE] = "notice",
    [LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",
};

void log_init(struct log *lg, enum log_level level, enum log_format format)
{
    const char *js = getenv("JOURNAL_STREAM");
    lg->level = level;
    lg->format = format;
    lg->journal = js != NULL && *js != '\0';
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int l = LOG_LVL_ERROR; l <= LOG_LVL_DEBUG; l++) {
        if (strcmp(s, level_names[l]) == 0) {
            *out = (enum log_level)l;
            return 0;
        }
    }
    if (strcmp(s, "warn") == 0) {
        *out = LOG_LVL_WARNING;
        return 0;
    }
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return (l >= LOG_LVL_ERROR && l <= LOG_LVL_DEBUG) ? level_names[l] : "?";
}

void log_write(const struct log *lg, enum log_level lvl, const char *module, const char *fmt, ...)
{
    char raw[2048], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* Messages carry text from the network: a control character must not start a
     * forged line of its own. */
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p && len + 5 < sizeof msg; p++) {
        if (*p < 0x20 || *p == 0x7f)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "\\x%02x", *p);
        else
            msg[len++] = (char)*p;
    }
    msg[len] = '\0';

    char ts[40] = "";
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    if (lg->format == LOG_FMT_JSON) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "time", ts);
        cJSON_AddStringToObject(o, "level", log_level_name(lvl));
        cJSON_AddStringToObject(o, "module", module);
        cJSON_AddStringToObject(o, "msg", msg);
        char *s = cJSON_PrintUnformatted(o);
        if (s) {
            if (lg->journal)
                fprintf(stderr, "<%d>%s\n", (int)lvl, s);
            else
                fprintf(stderr, "%s\n", s);
            cJSON_free(s);
        }
        cJSON_Delete(o);
    } else if (lg->journal) {
        fprintf(stderr, "<%d>%s: %s\n", (int)lvl, module, msg);
    } else {
        fprintf(stderr, "%s %s %s: %s\n", ts, log_level_name(lvl), module, msg);
    }
}
