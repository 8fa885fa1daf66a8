/* log — levelled lines on stderr, readable under journald.
 *
 * Lines are "LEVEL module: message".  With JOURNAL_STREAM set (systemd connected
 * stderr to the journal) each line starts with the "<N>" priority prefix journald
 * reads; with format=json each line is one JSON object for log shippers.  The level
 * is checked before anything is formatted. */
#ifndef WAGUARD_LOG_H
#define WAGUARD_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARNING = 4, LOG_LVL_NOTICE = 5,
                 LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON = 1 };

struct log {
    enum log_level level;
    enum log_format format;
    bool journal;            /* JOURNAL_STREAM was set: emit <N> prefixes, no time */
};

void log_init(struct log *lg, enum log_level level, enum log_format format);
/* Parses "debug|info|notice|warning|error"; returns 0, or -1 when unknown. */
int log_level_parse(const char *s, enum log_level *out) __attribute__((warn_unused_result));
const char *log_level_name(enum log_level l);

void log_write(const struct log *lg, enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lg, lvl, mod, ...) \
    do { if ((lg)->level >= (lvl)) log_write((lg), (lvl), (mod), __VA_ARGS__); } while (0)
#define log_debug(lg, mod, ...)  LOG_AT(lg, LOG_LVL_DEBUG, mod, __VA_ARGS__)
#define log_info(lg, mod, ...)   LOG_AT(lg, LOG_LVL_INFO, mod, __VA_ARGS__)
#define log_notice(lg, mod, ...) LOG_AT(lg, LOG_LVL_NOTICE, mod, __VA_ARGS__)
#define log_warn(lg, mod, ...)   LOG_AT(lg, LOG_LVL_WARNING, mod, __VA_ARGS__)
#define log_error(lg, mod, ...)  LOG_AT(lg, LOG_LVL_ERROR, mod, __VA_ARGS__)

#endif
