/* output — see ctl/ctl.h
 *
 * What waguard stores came partly from webhooks (a profile name, an error text), so every
 * text printed for a person goes through fmt_safe: a control character (an escape
 * sequence meant for the operator's terminal) is shown as '?'. */
#include "ctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Display characters of UTF-8 text (continuation bytes do not count). */
static size_t display_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

const char *fmt_safe(const char *s, size_t max, char *buf, size_t len)
{
    if (!s || !*s) {
        snprintf(buf, len, "-");
        return buf;
    }
    size_t o = 0, chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < len; p++) {
        bool start = (*p & 0xC0) != 0x80;
        if (start && max && chars == max) {
            /* cut: the last character becomes "…" */
            while (o > 0 && (((unsigned char)buf[o - 1]) & 0xC0) == 0x80)
                o--;
            if (o > 0)
                o--;
            memcpy(buf + o, "\xE2\x80\xA6", 3);
            o += 3;
            break;
        }
        if (start)
            chars++;
        if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {    /* a C1 control (U+0080 to U+009F) */
            buf[o++] = '?';
            p++;
            continue;
        }
        buf[o++] = (*p < 0x20 || *p == 0x7F) ? '?' : (char)*p;
    }
    buf[o] = '\0';
    return buf;
}

const char *fmt_time(long long seconds, char *buf, size_t len)
{
    if (seconds <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t t = (time_t)seconds;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", seconds);
    return buf;
}

const char *fmt_duration(long long s, char *buf, size_t len)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(buf, len, "%llds", s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
    return buf;
}

/* ---- tables ------------------------------------------------------------------------ */

void table_init(struct table *t, size_t ncols, const char *const *head)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols < TABLE_MAX_COLS ? ncols : TABLE_MAX_COLS;
    for (size_t i = 0; i < t->ncols; i++)
        t->head[i] = head[i];
}

void table_add(struct table *t, const char *const *cells)
{
    if (t->failed)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **nc = realloc(t->cells, cap * t->ncols * sizeof *nc);
        if (!nc) {
            t->failed = true;
            return;
        }
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        char buf[4096];
        row[i] = strdup(fmt_safe(cells[i], 0, buf, sizeof buf));
        if (!row[i]) {
            for (size_t j = 0; j < i; j++)
                free(row[j]);
            t->failed = true;
            return;
        }
    }
    t->nrows++;
}

static void print_row(FILE *out, const char *indent, size_t ncols, const char *const *cells, const size_t *width)
{
    fputs(indent, out);
    for (size_t i = 0; i < ncols; i++) {
        fputs(cells[i], out);
        if (i + 1 < ncols)
            fprintf(out, "%*s", (int)(width[i] - display_len(cells[i]) + 2), "");
    }
    fputc('\n', out);
}

int table_print(const struct table *t, FILE *out, const char *indent)
{
    size_t width[TABLE_MAX_COLS];
    for (size_t i = 0; i < t->ncols; i++) {
        width[i] = display_len(t->head[i]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = display_len(t->cells[r * t->ncols + i]);
            if (w > width[i])
                width[i] = w;
        }
    }
    print_row(out, indent, t->ncols, t->head, width);
    for (size_t r = 0; r < t->nrows; r++)
        print_row(out, indent, t->ncols, (const char *const *)t->cells + r * t->ncols, width);
    return t->failed ? -1 : 0;
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ---- key: value blocks ---------------------------------------------------------------- */

void kv_add(struct kv *b, const char *label, const char *fmt, ...)
{
    if (b->n >= sizeof b->label / sizeof b->label[0])
        return;
    char raw[4096], safe[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    char *l = strdup(label), *v = strdup(fmt_safe(raw, 0, safe, sizeof safe));
    if (!l || !v) {
        free(l);
        free(v);
        return;
    }
    b->label[b->n] = l;
    b->value[b->n] = v;
    b->n++;
}

void kv_print(struct kv *b, FILE *out)
{
    size_t w = 0;
    for (size_t i = 0; i < b->n; i++)
        if (display_len(b->label[i]) > w)
            w = display_len(b->label[i]);
    for (size_t i = 0; i < b->n; i++) {
        fprintf(out, "%s:%*s %s\n", b->label[i], (int)(w - display_len(b->label[i])), "", b->value[i]);
        free(b->label[i]);
        free(b->value[i]);
    }
    b->n = 0;
}

/* ---- JSON ------------------------------------------------------------------------------ */

const char *js_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

long long js_num(const cJSON *o, const char *key, long long dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : dflt;
}

bool js_bool(const cJSON *o, const char *key, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static void scalar_text(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsString(v))
        snprintf(buf, len, "%s", v->valuestring);
    else if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble)
        snprintf(buf, len, "%lld", (long long)v->valuedouble);
    else if (cJSON_IsNumber(v))
        snprintf(buf, len, "%g", v->valuedouble);
    else if (cJSON_IsBool(v))
        snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (!v || cJSON_IsNull(v))
        snprintf(buf, len, "-");
    else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, len, "%s", s ? s : "?");
        cJSON_free(s);
    }
}

const char *js_text(const cJSON *o, const char *key, char *buf, size_t len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsObject(v)) {
        scalar_text(v, buf, len);
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (const cJSON *m = v->child; m && used + 1 < len; m = m->next) {
        char one[512];
        scalar_text(m, one, sizeof one);
        int n = snprintf(buf + used, len - used, "%s%s=%s", used ? ", " : "", m->string, one);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    if (!used)
        snprintf(buf, len, "-");
    return buf;
}

void js_print(const cJSON *doc, FILE *out)
{
    char *s = cJSON_Print(doc);
    if (s) {
        fputs(s, out);
        fputc('\n', out);
        cJSON_free(s);
    }
}
