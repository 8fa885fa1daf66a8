/* config — see include/config.h
 *
 * Three passes: the file is read with inih into a table of raw values (each with the
 * line it came from), environment overrides replace raw values, then every value is
 * converted and checked, and secrets are read from their files.  Errors name where the
 * bad value came from: "file:line: key: what is wrong" or "WAGUARD_X_Y: key: …". */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>


enum ktype { K_STR, K_INT, K_BOOL, K_ENUM, K_SECRET, K_TOKENS, K_PATH, K_LEVEL, K_FORMAT };

struct key {
    const char *section;
    const char *name;
    enum ktype type;
    size_t off;                 /* offset of the field in struct config */
    const char *def;            /* default, as text */
    long min, max;              /* K_INT bounds */
    const char *const *enums;   /* K_ENUM names, index = value */
};

#define F(field) offsetof(struct config, field)
static const char *const e_api[] = { "onprem", "cloud", NULL };
static const char *const e_auth[] = { "none", "bearer", "login", "header", NULL };
static const char *const e_ack[] = { "auto", "manual", NULL };
static const char *const e_first[] = { "trust", "hold", NULL };
static const char *const e_fail[] = { "closed", "open", NULL };
static const char *const e_window[] = { "off", "enforce", NULL };   /* index = bool */
static const char *const e_onoff[] = { "off", "on", NULL };          /* index = bool */
static const char *const e_secnot[] = { "ensure", "check", "off", NULL };

static const struct key keys[] = {
    { "server", "listen", K_STR, F(listen), "127.0.0.1:8080", 0, 0, NULL },
    { "server", "max_body_bytes", K_INT, F(max_body_bytes), "1048576", 1024, 64L << 20, NULL },
    { "server", "max_header_bytes", K_INT, F(max_header_bytes), "16384", 1024, 1L << 20, NULL },
    { "server", "timeout_s", K_INT, F(timeout_s), "30", 1, 3600, NULL },
    { "server", "max_connections", K_INT, F(max_connections), "1024", 1, 1000000, NULL },
    { "server", "shutdown_timeout_s", K_INT, F(shutdown_timeout_s), "10", 0, 3600, NULL },
    { "redis", "url", K_STR, F(redis_url), "redis://127.0.0.1:6379/0", 0, 0, NULL },
    { "redis", "password_file", K_SECRET, F(redis_password), "", 0, 0, NULL },
    { "redis", "key_prefix", K_STR, F(key_prefix), "waguard", 0, 0, NULL },
    { "redis", "events_maxlen", K_INT, F(events_maxlen), "100000", 100, 100000000, NULL },
    { "redis", "timeout_ms", K_INT, F(redis_timeout_ms), "3000", 100, 600000, NULL },
    { "redis", "sentinels", K_STR, F(redis_sentinels), "", 0, 0, NULL },
    { "redis", "master_name", K_STR, F(redis_master_name), "", 0, 0, NULL },
    { "redis", "min_replicas", K_INT, F(redis_min_replicas), "0", 0, 100, NULL },
    { "upstream", "api", K_ENUM, F(api), "onprem", 0, 0, e_api },
    { "upstream", "url", K_STR, F(upstream_url), "https://127.0.0.1:9090", 0, 0, NULL },
    { "upstream", "auth", K_ENUM, F(auth), "none", 0, 0, e_auth },
    { "upstream", "username", K_STR, F(username), "admin", 0, 0, NULL },
    { "upstream", "password_file", K_SECRET, F(password), "", 0, 0, NULL },
    { "upstream", "token_file", K_SECRET, F(upstream_token), "", 0, 0, NULL },
    { "upstream", "header_name", K_STR, F(header_name), "D360-API-KEY", 0, 0, NULL },
    { "upstream", "ca_file", K_PATH, F(ca_file), "", 0, 0, NULL },
    { "upstream", "timeout_ms", K_INT, F(timeout_ms), "5000", 10, 600000, NULL },
    { "upstream", "max_in_flight", K_INT, F(max_in_flight), "16", 1, 1024, NULL },
    { "upstream", "queue_max", K_INT, F(queue_max), "1000", 1, 1000000, NULL },
    { "upstream", "phone_number_id", K_STR, F(phone_number_id), "", 0, 0, NULL },
    { "upstream", "graph_version", K_STR, F(graph_version), "v21.0", 0, 0, NULL },
    { "upstream", "identity_check", K_ENUM, F(identity_check), "off", 0, 0, e_onoff },
    { "upstream", "blocklist_sync_s", K_INT, F(blocklist_sync_s), "3600", 0, 604800, NULL },
    { "upstream", "security_notifications", K_ENUM, F(security_notifications), "ensure", 0, 0, e_secnot },
    { "upstream", "settings_check_s", K_INT, F(settings_check_s), "300", 10, 86400, NULL },
    { "webhook", "path", K_STR, F(webhook_path), "/webhook", 0, 0, NULL },
    { "webhook", "token_file", K_SECRET, F(webhook_token), "", 0, 0, NULL },
    { "webhook", "hmac_secret_file", K_SECRET, F(hmac_secret), "", 0, 0, NULL },
    { "webhook", "verify_token_file", K_SECRET, F(verify_token), "", 0, 0, NULL },
    { "api", "tokens_file", K_TOKENS, F(api_tokens), "", 0, 0, NULL },
    { "api", "admin_tokens_file", K_TOKENS, F(admin_tokens), "", 0, 0, NULL },
    { "identity", "ack", K_ENUM, F(ack), "auto", 0, 0, e_ack },
    { "identity", "retry_max_s", K_INT, F(retry_max_s), "900", 1, 86400, NULL },
    { "identity", "retry_base_ms", K_INT, F(retry_base_ms), "1000", 10, 3600000, NULL },
    { "identity", "lease_s", K_INT, F(lease_s), "30", 1, 3600, NULL },
    { "identity", "first_seen", K_ENUM, F(first_seen), "trust", 0, 0, e_first },
    { "proxy", "forward_unknown", K_BOOL, F(forward_unknown), "true", 0, 0, NULL },
    { "proxy", "sent_ttl_s", K_INT, F(sent_ttl_s), "604800", 0, 2592000, NULL },
    { "contacts", "check_budget", K_INT, F(check_budget), "10000", 0, 100000000, NULL },
    { "contacts", "check_window_s", K_INT, F(check_window_s), "604800", 1, 31536000, NULL },
    { "gate", "fail", K_ENUM, F(fail), "closed", 0, 0, e_fail },
    { "gate", "require_valid_contact", K_BOOL, F(require_valid_contact), "false", 0, 0, NULL },
    { "gate", "session_window", K_ENUM, F(session_window), "enforce", 0, 0, e_window },
    { "gate", "home_country_code", K_STR, F(home_country_code), "1", 0, 0, NULL },
    { "log", "level", K_LEVEL, F(log_level), "info", 0, 0, NULL },
    { "log", "format", K_FORMAT, F(log_format), "text", 0, 0, NULL },
};
#define NKEYS (sizeof keys / sizeof keys[0])
#undef F

/* A raw value and where it came from. */
struct raw {
    char *value;
    int line;                  /* 0: default or environment */
    char origin[128];          /* env variable name, or "default" */
};

/* A [hold] key: <category>_s or <category>_templates, any category name. */
struct hold_raw {
    char category[64];
    bool is_templates;
    char *value;
    int line;
    char origin[128];
};

struct parse_state {
    const char *path;
    FILE *fp;
    int line;                  /* lines handed to inih so far */
    struct raw raw[NKEYS];
    struct hold_raw hold[2 * CONFIG_HOLD_MAX];
    size_t nhold;
    char *err;
    size_t errlen;
    bool failed;
};

static void set_err(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_err(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    char what[PATH_MAX + 1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "%s:%d: %s: %s", ps->path, line, key, what);
}

static char *trim_dup(const char *s);

/* Records a [hold] key: <category>_s or <category>_templates, the category a lower-case
 * name.  Returns 1 (inih: go on), or 0 after setting the error. */
static int hold_key(struct parse_state *ps, const char *name, const char *value, int line, const char *origin)
{
    size_t n = strlen(name);
    bool tmpl = n > 10 && strcmp(name + n - 10, "_templates") == 0;
    bool secs = !tmpl && n > 2 && strcmp(name + n - 2, "_s") == 0;
    size_t cl = tmpl ? n - 10 : n - 2;
    char full[128];
    snprintf(full, sizeof full, "hold.%s", name);
    if ((!tmpl && !secs) || cl == 0 || cl >= sizeof ps->hold[0].category) {
        set_err(ps, line, full, "a [hold] key is <category>_s or <category>_templates");
        return 0;
    }
    char cat[64];
    memcpy(cat, name, cl);
    cat[cl] = '\0';
    if (!config_category_valid(cat)) {
        set_err(ps, line, full, "a category name is lower-case letters, digits and _");
        return 0;
    }
    struct hold_raw *h = NULL;
    bool category_known = false;
    size_t categories = 0;
    for (size_t i = 0; i < ps->nhold; i++) {
        bool same = strlen(ps->hold[i].category) == cl && strncmp(ps->hold[i].category, name, cl) == 0;
        category_known = category_known || same;
        if (same && ps->hold[i].is_templates == tmpl)
            h = &ps->hold[i];
        bool first = true;           /* count each category once */
        for (size_t j = 0; j < i; j++)
            if (strcmp(ps->hold[j].category, ps->hold[i].category) == 0)
                first = false;
        categories += first;
    }
    if (h && h->line > 0 && line > 0) {
        set_err(ps, line, full, "given twice (lines %d and %d): say it once", h->line, line);
        return 0;
    }
    if (!h) {
        if (!category_known && categories >= CONFIG_HOLD_MAX) {
            set_err(ps, line, full, "at most %d hold categories", CONFIG_HOLD_MAX);
            return 0;
        }
        h = &ps->hold[ps->nhold++];
        memcpy(h->category, name, cl);
        h->category[cl] = '\0';
        h->is_templates = tmpl;
    }
    free(h->value);
    h->value = strdup(value);
    h->line = line;
    snprintf(h->origin, sizeof h->origin, "%s", origin);
    return 1;
}

/* WAGUARD_HOLD_<CATEGORY>_S / _TEMPLATES override or add [hold] keys. */
static void hold_env(struct parse_state *ps)
{
    extern char **environ;
    for (char **e = environ; *e && !ps->failed; e++) {
        if (strncmp(*e, "WAGUARD_HOLD_", 13) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[128], var[128];
        size_t n = (size_t)(eq - (*e + 13));
        if (n == 0 || n >= sizeof name)
            continue;
        for (size_t i = 0; i < n; i++)
            name[i] = (char)tolower((unsigned char)(*e)[13 + i]);
        name[n] = '\0';
        snprintf(var, sizeof var, "%.*s", (int)(eq - *e), *e);
        hold_key(ps, name, eq + 1, 0, var);
    }
}

/* Turns the [hold] keys into cfg->holds. */
static void hold_convert(struct parse_state *ps, struct config *cfg)
{
    for (size_t i = 0; i < ps->nhold && !ps->failed; i++) {
        struct hold_raw *h = &ps->hold[i];
        struct hold_category *c = NULL;
        for (size_t j = 0; j < cfg->nholds && !c; j++)
            if (strcmp(cfg->holds[j].name, h->category) == 0)
                c = &cfg->holds[j];
        if (!c) {
            c = &cfg->holds[cfg->nholds++];
            c->name = strdup(h->category);
        }
        char key[128];
        snprintf(key, sizeof key, "hold.%s%s", h->category, h->is_templates ? "_templates" : "_s");
        if (!h->is_templates) {
            char *end;
            errno = 0;
            long v = strtol(h->value, &end, 10);
            if (errno || end == h->value || *end != '\0' || v < 0 || v > 30L * 86400) {
                if (h->origin[0]) {
                    ps->failed = true;
                    snprintf(ps->err, ps->errlen, "%s: %s: '%s' is not a whole number of seconds (0 to 2592000)",
                             h->origin, key, h->value);
                } else {
                    set_err(ps, h->line, key, "'%s' is not a whole number of seconds (0 to 2592000)", h->value);
                }
                return;
            }
            c->seconds = v;
            continue;
        }
        /* a comma-separated list of template names */
        char *list = strdup(h->value), *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *name = trim_dup(t);
            if (!name[0]) {
                free(name);
                continue;
            }
            for (char *q = name; *q; q++) /* matched as config_hold_for_template matches */
                *q = (char)tolower((unsigned char)*q);
            char **nt = realloc(c->templates, (c->ntemplates + 1) * sizeof *nt);
            if (!nt) {
                free(name);
                break;
            }
            c->templates = nt;
            c->templates[c->ntemplates++] = name;
        }
        free(list);
    }
    /* A template belongs to one category. */
    for (size_t a = 0; a < cfg->nholds && !ps->failed; a++)
        for (size_t i = 0; i < cfg->holds[a].ntemplates; i++)
            for (size_t b = a + 1; b < cfg->nholds; b++)
                for (size_t j = 0; j < cfg->holds[b].ntemplates; j++)
                    if (strcmp(cfg->holds[a].templates[i], cfg->holds[b].templates[j]) == 0) {
                        set_err(ps, 0, "hold", "template %s is in both %s and %s", cfg->holds[a].templates[i],
                                cfg->holds[a].name, cfg->holds[b].name);
                        return;
                    }
}

bool config_number_valid(const char *n)
{
    size_t i = 0;
    for (; n[i]; i++) {
        char c = n[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') ||
            i >= CONFIG_NUMBER_MAX - 1)
            return false;
    }
    return i > 0;
}

bool config_category_valid(const char *c)
{
    size_t n = strlen(c);
    return n > 0 && n < 64 && strspn(c, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

const struct hold_category *config_hold(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nholds; i++)
        if (strcmp(cfg->holds[i].name, name) == 0)
            return &cfg->holds[i];
    return NULL;
}

/* A template name as [hold] names it: without spaces around, in any case (Meta's template
 * names are lower case; "OTP_Login " names the same template as otp_login).  The configured
 * names are kept lower case and trimmed (hold_key's list), so one side needs the work. */
const struct hold_category *config_hold_for_template(const struct config *cfg, const char *template_name)
{
    while (isspace((unsigned char)*template_name))
        template_name++;
    size_t n = strlen(template_name);
    while (n && isspace((unsigned char)template_name[n - 1]))
        n--;
    for (size_t i = 0; i < cfg->nholds; i++)
        for (size_t j = 0; j < cfg->holds[i].ntemplates; j++) {
            const char *t = cfg->holds[i].templates[j];
            if (strlen(t) == n && strncasecmp(t, template_name, n) == 0)
                return &cfg->holds[i];
        }
    return NULL;
}

/* inih asks for one line at a time: counting the calls gives the line of each value. */
static char *reader(char *buf, int size, void *stream)
{
    struct parse_state *ps = stream;
    char *r = fgets(buf, size, ps->fp);
    if (r)
        ps->line++;
    return r;
}

static int hold_key(struct parse_state *ps, const char *name, const char *value, int line, const char *origin);

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *ps = user;
    if (strcmp(section, "hold") == 0)
        return hold_key(ps, name, value, ps->line, "");
    bool known_section = false;
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        known_section = true;
        if (strcmp(keys[i].name, name) != 0)
            continue;
        if (ps->raw[i].line > 0) {
            char full[256];
            snprintf(full, sizeof full, "%s.%s", section, name);
            set_err(ps, ps->line, full, "given twice (lines %d and %d): the last would win silently; say it once",
                    ps->raw[i].line, ps->line);
            return 0;
        }
        free(ps->raw[i].value);
        ps->raw[i].value = strdup(value);
        ps->raw[i].line = ps->line;
        ps->raw[i].origin[0] = '\0';
        return 1;
    }
    char full[256];
    snprintf(full, sizeof full, "%s.%s", section, name);
    if (!known_section)
        set_err(ps, ps->line, full, "unknown section [%s]", section);
    else
        set_err(ps, ps->line, full, "unknown key in [%s]", section);
    return 0;
}

/* Reports a bad value with its origin: the file and line, or the environment variable. */
static void bad_value(struct parse_state *ps, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bad_value(struct parse_state *ps, size_t i, const char *fmt, ...)
{
    if (ps->failed)
        return;
    char what[PATH_MAX + 1024], key[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(key, sizeof key, "%s.%s", keys[i].section, keys[i].name);
    ps->failed = true;
    if (ps->raw[i].origin[0])
        snprintf(ps->err, ps->errlen, "%s: %s: %s", ps->raw[i].origin, key, what);
    else
        snprintf(ps->err, ps->errlen, "%s:%d: %s: %s", ps->path, ps->raw[i].line, key, what);
}

static char *trim_dup(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
}

/* Reads a secret file whole; a relative name is looked up in $CREDENTIALS_DIRECTORY
 * first, then beside the configuration file.  Returns a trimmed copy, or NULL with
 * errno's text in why. */
/* The file a `_file` key names, opened: an absolute name as it is; a relative one in
 * $CREDENTIALS_DIRECTORY first (systemd LoadCredential=), then beside the configuration
 * file cfgpath.  The path tried last is in path; NULL with why set when none opens. */
static FILE *open_named(const char *cfgpath, const char *name, char *path, size_t pathlen, char *why, size_t whylen)
{
    const char *cred = getenv("CREDENTIALS_DIRECTORY");
    FILE *fp = NULL;
    if (name[0] == '/') {
        snprintf(path, pathlen, "%s", name);
        fp = fopen(path, "r");
    } else {
        if (cred && *cred) {
            snprintf(path, pathlen, "%s/%s", cred, name);
            fp = fopen(path, "r");
        }
        if (!fp) {
            const char *slash = strrchr(cfgpath, '/');
            if (slash)
                snprintf(path, pathlen, "%.*s/%s", (int)(slash - cfgpath), cfgpath, name);
            else
                snprintf(path, pathlen, "%s", name);
            fp = fopen(path, "r");
        }
    }
    if (!fp)
        snprintf(why, whylen, "cannot read %s: %s%s", path, strerror(errno),
                 (cred && *cred && name[0] != '/') ? " (looked in $CREDENTIALS_DIRECTORY first)" : "");
    return fp;
}

static char *read_secret(const char *cfgpath, const char *name, char *why, size_t whylen,
                         char *used, size_t usedlen)
{
    char path[PATH_MAX];
    FILE *fp = open_named(cfgpath, name, path, sizeof path, why, whylen);
    snprintf(used, usedlen, "%s", path);
    if (!fp)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    char chunk[4096];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (len + r + 1 > cap) {
            cap = (len + r + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                snprintf(why, whylen, "out of memory reading %s", path);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + len, chunk, r);
        len += r;
    }
    fclose(fp);
    if (!buf)
        return strdup("");
    buf[len] = '\0';
    char *t = trim_dup(buf);
    free(buf);
    return t;
}

/* Parses a token file: one token a line, optionally NAME:TOKEN; '#' starts a comment. */
static int parse_tokens(struct secret_sha *sha, const char *text, struct token_list *out, char *why, size_t whylen)
{
    out->v = NULL;
    out->n = 0;
    const char *p = text;
    int lineno = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        lineno++;
        char *line = strndup(p, n);
        char *t = trim_dup(line);
        free(line);
        p += n + (e ? 1 : 0);
        if (t[0] == '\0' || t[0] == '#') {
            free(t);
            continue;
        }
        char *colon = strchr(t, ':');
        char *name, *value;
        if (colon) {
            *colon = '\0';
            name = trim_dup(t);
            value = trim_dup(colon + 1);
        } else {
            char nm[32];
            snprintf(nm, sizeof nm, "token%d", lineno);
            name = strdup(nm);
            value = strdup(t);
        }
        free(t);
        if (value[0] == '\0' || strlen(value) < 8) {
            snprintf(why, whylen, "line %d: token too short (8 characters at least)", lineno);
            free(name);
            free(value);
            return -1;
        }
        struct token *nv = realloc(out->v, (out->n + 1) * sizeof *nv);
        if (!nv) {
            free(name);
            free(value);
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        out->v = nv;
        out->v[out->n].name = name;
        out->v[out->n].value = value;
        out->n++;
        if (!secret_digest(sha, value, strlen(value), out->v[out->n - 1].digest)) {
            snprintf(why, whylen, "OpenSSL could not hash the token on line %d (is libcrypto's default "
                     "provider there?)", lineno);
            return -1;
        }
    }
    return 0;
}

static void tokens_free(struct token_list *tl)
{
    for (size_t i = 0; i < tl->n; i++) {
        free(tl->v[i].name);
        free(tl->v[i].value);
    }
    free(tl->v);
    tl->v = NULL;
    tl->n = 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Converts raw value i into its field. */
static void convert(struct parse_state *ps, size_t i, struct config *cfg)
{
    const struct key *k = &keys[i];
    const char *v = ps->raw[i].value;
    char *field = (char *)cfg + k->off;
    char why[PATH_MAX + 512], used[PATH_MAX];

    switch (k->type) {
    case K_STR:
        *(char **)field = strdup(v);
        break;
    case K_INT: {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end != '\0') {
            bad_value(ps, i, "'%s' is not a whole number", v);
            return;
        }
        if (n < k->min || n > k->max) {
            bad_value(ps, i, "%ld is out of range (%ld to %ld)", n, k->min, k->max);
            return;
        }
        *(long *)field = n;
        break;
    }
    case K_BOOL:
        if (parse_bool(v, (bool *)field) != 0)
            bad_value(ps, i, "'%s' is not a boolean (true or false)", v);
        break;
    case K_ENUM: {
        for (int e = 0; k->enums[e]; e++) {
            if (strcmp(v, k->enums[e]) == 0) {
                if (k->enums == e_window || k->enums == e_onoff)
                    *(bool *)field = e == 1;
                else
                    *(int *)field = e;
                return;
            }
        }
        char allowed[128] = "";
        for (int e = 0; k->enums[e]; e++) {
            strncat(allowed, e ? " | " : "", sizeof allowed - strlen(allowed) - 1);
            strncat(allowed, k->enums[e], sizeof allowed - strlen(allowed) - 1);
        }
        bad_value(ps, i, "'%s' is not one of %s", v, allowed);
        break;
    }
    case K_LEVEL:
        if (log_level_parse(v, (enum log_level *)field) != 0)
            bad_value(ps, i, "'%s' is not a level (debug | info | notice | warning | error)", v);
        break;
    case K_FORMAT:
        if (strcmp(v, "text") == 0)
            *(enum log_format *)field = LOG_FMT_TEXT;
        else if (strcmp(v, "json") == 0)
            *(enum log_format *)field = LOG_FMT_JSON;
        else
            bad_value(ps, i, "'%s' is not text or json", v);
        break;
    case K_PATH: {
        /* a file read by another module later (ca_file: the TLS context): found now as a
         * secret is, and kept by the path that opened (waguard never changes its working
         * directory), so that a relative name never means the working directory's file */
        if (v[0] == '\0') {
            *(char **)field = strdup("");
            return;
        }
        FILE *fp = open_named(ps->path, v, used, sizeof used, why, sizeof why);
        if (!fp) {
            bad_value(ps, i, "%s", why);
            return;
        }
        fclose(fp);
        *(char **)field = strdup(used);
        break;
    }
    case K_SECRET:
    case K_TOKENS: {
        if (v[0] == '\0')
            return;
        char *text = read_secret(ps->path, v, why, sizeof why, used, sizeof used);
        if (!text) {
            bad_value(ps, i, "%s", why);
            return;
        }
        if (k->type == K_SECRET) {
            if (text[0] == '\0') {
                bad_value(ps, i, "%s is empty", used);
                free(text);
                return;
            }
            *(char **)field = text;
        } else {
            if (parse_tokens(cfg->sha, text, (struct token_list *)field, why, sizeof why) != 0)
                bad_value(ps, i, "%s: %s", used, why);
            else if (((struct token_list *)field)->n == 0)
                bad_value(ps, i, "%s holds no token", used);
            free(text);
        }
        break;
    }
    }
}

int config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

bool config_listen_is_local(const char *listen)
{
    if (strncmp(listen, "unix:", 5) == 0)
        return true;
    char host[256];
    int port;
    if (config_split_hostport(listen, host, sizeof host, &port) != 0)
        return false;
    if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
        return true;
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1)
        return (ntohl(a.s_addr) >> 24) == 127;
    return false;
}

static bool url_ok(const char *u, const char *const *schemes)
{
    for (size_t i = 0; schemes[i]; i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(u, schemes[i], n) == 0 && u[n] != '\0')
            return true;
    }
    return false;
}

static size_t key_index(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return i;
    abort(); /* a programming error: every name used here is in the table */
}

/* Keys that take effect only at a start: a reload keeps their running values, and
 * puts them back *before* validating, so every check sees what will really run. */
static const char *const restart_only[][2] = {
    { "server", "listen" }, { "redis", "url" }, { "redis", "key_prefix" },
    { "redis", "password_file" }, { "webhook", "path" },
    { "redis", "sentinels" }, { "redis", "master_name" },
};

static bool restart_needed(const char *section, const char *name)
{
    for (size_t r = 0; r < sizeof restart_only / sizeof restart_only[0]; r++)
        if (strcmp(restart_only[r][0], section) == 0 && strcmp(restart_only[r][1], name) == 0)
            return true;
    return false;
}

void config_list_keys(FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        fprintf(out, "%s\t%s\t%s\t%s\n", keys[i].section, keys[i].name, keys[i].def,
                restart_needed(keys[i].section, keys[i].name) ? "restart" : "reload");
        if (strcmp(keys[i].section, "gate") == 0 && (i + 1 == NKEYS || strcmp(keys[i + 1].section, "gate") != 0))
            fprintf(out, "hold\t<category>_s\t0\treload\nhold\t<category>_templates\t\treload\n");
    }
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

static void keep_running(struct config *cfg, const struct config *running)
{
    cfg->restart_kept[0] = '\0';
    for (size_t r = 0; r < sizeof restart_only / sizeof restart_only[0]; r++) {
        const struct key *k = &keys[key_index(restart_only[r][0], restart_only[r][1])];
        char **nv = (char **)((char *)cfg + k->off);
        char *const *ov = (char *const *)((const char *)running + k->off);
        if (same_str(*nv, *ov))
            continue;
        free(*nv);
        *nv = *ov ? strdup(*ov) : NULL;
        size_t used = strlen(cfg->restart_kept);
        snprintf(cfg->restart_kept + used, sizeof cfg->restart_kept - used, "%s%s.%s",
                 used ? ", " : "", k->section, k->name);
    }
}

/* [redis] sentinels: host:port,host:port (at most CONFIG_MAX_SENTINELS), and then a
 * master_name; master_name alone is a mistake.  With sentinels, url's host and port
 * are not used (its /db still is). */
static void validate_sentinels(struct parse_state *ps, const struct config *cfg)
{
    size_t i_s = key_index("redis", "sentinels"), i_m = key_index("redis", "master_name");
    const char *list = cfg->redis_sentinels;
    if (!list[0]) {
        if (cfg->redis_master_name[0])
            bad_value(ps, i_m, "'%s' needs [redis] sentinels (host:port,…) to ask for it",
                      cfg->redis_master_name);
        return;
    }
    if (!cfg->redis_master_name[0] || strpbrk(cfg->redis_master_name, " \t\r\n"))
        bad_value(ps, i_m, "'%s': with [redis] sentinels, name the Sentinel service (its "
                  "'sentinel monitor' name, no spaces)", cfg->redis_master_name);
    int n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char one[300], host[256];
        int port;
        while (len && (*p == ' ')) {
            p++;
            len--;
        }
        size_t l = len;
        while (l && p[l - 1] == ' ')
            l--;
        if (l == 0 || l >= sizeof one) {
            bad_value(ps, i_s, "'%s': an empty or too long entry (host:port,host:port)", list);
            return;
        }
        memcpy(one, p, l);
        one[l] = '\0';
        if (config_split_hostport(one, host, sizeof host, &port) != 0) {
            bad_value(ps, i_s, "'%s' is not host:port (Sentinel's port is usually 26379)", one);
            return;
        }
        if (++n > CONFIG_MAX_SENTINELS) {
            bad_value(ps, i_s, "more than %d sentinels", CONFIG_MAX_SENTINELS);
            return;
        }
        p += len;
        if (*p == ',')
            p++;
    }
}

/* Checks that concern several keys, or the shape of one beyond its type. */
static void validate(struct parse_state *ps, struct config *cfg)
{
    size_t i_listen = key_index("server", "listen"), i_url = key_index("redis", "url"),
           i_up = key_index("upstream", "url"), i_path = key_index("webhook", "path"),
           i_cc = key_index("gate", "home_country_code"), i_auth = key_index("upstream", "auth"),
           i_prefix = key_index("redis", "key_prefix");
    char host[256];
    int port;
    if (strncmp(cfg->listen, "unix:", 5) == 0) {
        if (cfg->listen[5] == '\0')
            bad_value(ps, i_listen, "unix: needs a path");
    } else if (config_split_hostport(cfg->listen, host, sizeof host, &port) != 0) {
        bad_value(ps, i_listen, "'%s' is not host:port or unix:/path", cfg->listen);
    }
    static const char *const redis_schemes[] = { "redis://", "unix:", NULL };
    if (!url_ok(cfg->redis_url, redis_schemes))
        bad_value(ps, i_url, "'%s' is not redis://host:port/db or unix:/path", cfg->redis_url);
    else if (strchr(cfg->redis_url, '@'))
        bad_value(ps, i_url, "holds user info: put the password in [redis] password_file");
    validate_sentinels(ps, cfg);
    static const char *const http_schemes[] = { "http://", "https://", NULL };
    if (!url_ok(cfg->upstream_url, http_schemes))
        bad_value(ps, i_up, "'%s' is not an http:// or https:// URL", cfg->upstream_url);
    if (cfg->webhook_path[0] != '/' || strchr(cfg->webhook_path, '?'))
        bad_value(ps, i_path, "'%s' must start with / and hold no query", cfg->webhook_path);
    if (cfg->key_prefix[0] == '\0' || strpbrk(cfg->key_prefix, " {}"))
        bad_value(ps, i_prefix, "'%s' must be non-empty without spaces or braces", cfg->key_prefix);
    const char *cc = cfg->home_country_code;
    if (cc[0] == '+')
        cc++;
    size_t ccl = strlen(cc);
    if (ccl == 0 || ccl > 3 || strspn(cc, "0123456789") != ccl || cc[0] == '0')
        bad_value(ps, i_cc, "'%s' is not a country calling code (1 to 3 digits)", cfg->home_country_code);
    else if (cc != cfg->home_country_code)
        memmove(cfg->home_country_code, cc, ccl + 1);
    if (cfg->lease_s * 1000 <= 2 * cfg->timeout_ms) {
        /* Name the key the operator set: a default lease_s is not where to look. */
        size_t i_lease = key_index("identity", "lease_s"), i_tmo = key_index("upstream", "timeout_ms");
        if (strcmp(ps->raw[i_lease].origin, "default") == 0)
            bad_value(ps, i_tmo, "%ld ms must be under half of [identity] lease_s (%ld s, the default): raise "
                      "lease_s too, or a second worker could send while the first still waits",
                      cfg->timeout_ms, cfg->lease_s);
        else
            bad_value(ps, i_lease, "%ld s must be more than twice [upstream] timeout_ms (%ld ms), or a second "
                      "worker could send while the first still waits", cfg->lease_s, cfg->timeout_ms);
    }
    size_t i_pnid = key_index("upstream", "phone_number_id");
    cfg->nnumbers = 0;
    for (const char *p = cfg->phone_number_id; *p;) {
        p += strspn(p, ", ");
        size_t len = strcspn(p, ", ");
        if (!len)
            break;
        char one[CONFIG_NUMBER_MAX];
        snprintf(one, sizeof one, "%.*s", (int)(len < sizeof one - 1 ? len : sizeof one - 1), p);
        if (len >= CONFIG_NUMBER_MAX || !config_number_valid(one)) {
            bad_value(ps, i_pnid, "'%.*s' is not a phone number id (1 to 63 letters, digits, _ or -; several "
                      "are separated by commas)", (int)len, p);
            break;
        }
        if (cfg->nnumbers == CONFIG_NUMBERS_MAX) {
            bad_value(ps, i_pnid, "more than %d business numbers", CONFIG_NUMBERS_MAX);
            break;
        }
        memcpy(cfg->numbers[cfg->nnumbers++], one, len + 1);
        p += len;
    }
    if (cfg->identity_check && cfg->api != API_CLOUD)
        bad_value(ps, key_index("upstream", "identity_check"), "on needs api = cloud (Meta's identity check "
                  "is a Cloud API setting)");
    if (cfg->identity_check && !cfg->phone_number_id[0])
        bad_value(ps, key_index("upstream", "identity_check"), "on needs [upstream] phone_number_id: the "
                  "number(s) to turn the check on for");
    const char *gv = cfg->graph_version;
    if (gv[0] != 'v' || strspn(gv + 1, "0123456789.") != strlen(gv + 1) || !gv[1])
        bad_value(ps, key_index("upstream", "graph_version"), "'%s' is not a Graph API version such as v21.0", gv);
    if (cfg->webhook_token && !secret_digest(cfg->sha, cfg->webhook_token, strlen(cfg->webhook_token),
                                             cfg->webhook_token_digest))
        bad_value(ps, key_index("webhook", "token_file"), "OpenSSL could not hash it (is libcrypto's default "
                  "provider there?)");
    if (cfg->hmac_secret && !(cfg->hmac_key = secret_mac_new(cfg->hmac_secret)))
        bad_value(ps, key_index("webhook", "hmac_secret_file"), "OpenSSL could not make an HMAC-SHA256 key of "
                  "it (is libcrypto's default provider there?)");
    if (cfg->auth == AUTH_LOGIN && !cfg->password)
        bad_value(ps, i_auth, "auth = login needs [upstream] password_file");
    if ((cfg->auth == AUTH_BEARER || cfg->auth == AUTH_HEADER) && !cfg->upstream_token)
        bad_value(ps, i_auth, "auth = %s needs [upstream] token_file", cfg->auth == AUTH_BEARER ? "bearer" : "header");
    if (!config_listen_is_local(cfg->listen)) {
        if (!cfg->webhook_token && !cfg->hmac_secret)
            bad_value(ps, i_listen, "'%s' is not a loopback address, so the webhook needs "
                      "[webhook] token_file or hmac_secret_file", cfg->listen);
        else if (cfg->api_tokens.n == 0 || cfg->admin_tokens.n == 0)
            bad_value(ps, i_listen, "'%s' is not a loopback address, so the API needs "
                      "[api] %s", cfg->listen, cfg->api_tokens.n == 0 ? "tokens_file" : "admin_tokens_file");
    }
}

/* A WAGUARD_* variable that names no key would be ignored silently (a misspelt override
 * that the operator believes is in force): refused, naming it. */
static void unknown_env(struct parse_state *ps)
{
    extern char **environ;
    for (char **e = environ; *e && !ps->failed; e++) {
        if (strncmp(*e, "WAGUARD_", 8) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        if (n > 13 && strncmp(*e, "WAGUARD_HOLD_", 13) == 0)
            continue;                /* hold_env reads and checks those */
        bool known = false;
        for (size_t i = 0; i < NKEYS && !known; i++) {
            char env[128];
            snprintf(env, sizeof env, "WAGUARD_%s_%s", keys[i].section, keys[i].name);
            for (char *c = env; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            known = strlen(env) == n && strncmp(env, *e, n) == 0;
        }
        if (!known) {
            ps->failed = true;
            snprintf(ps->err, ps->errlen, "%.*s: names no key of waguard's configuration (WAGUARD_<SECTION>_<KEY>, "
                     "e.g. WAGUARD_LOG_LEVEL; see waguard(8)): unset it or spell it right", (int)(n < 100 ? n : 100), *e);
        }
    }
}

static int load(const char *path, const struct config *running, struct config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    struct parse_state ps = { .path = path, .err = err, .errlen = errlen };
    err[0] = '\0';
    if (!(cfg->sha = secret_sha_new())) {
        snprintf(err, errlen, "%s: OpenSSL could not make SHA-256 ready for the tokens (is libcrypto's "
                 "default provider there?)", path);
        return -1;
    }

    ps.fp = fopen(path, "r");
    if (!ps.fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        secret_sha_free(cfg->sha);
        cfg->sha = NULL;
        return -1;
    }
    int rc = ini_parse_stream(reader, &ps, handler, &ps);
    fclose(ps.fp);
    if (rc > 0 && !ps.failed)
        set_err(&ps, rc, "-", "not a valid INI line (expected [section] or key = value)");
    else if (rc < 0 && !ps.failed)
        set_err(&ps, 0, "-", "cannot parse the file");

    /* Defaults, then environment overrides. */
    for (size_t i = 0; i < NKEYS && !ps.failed; i++) {
        char env[128];
        snprintf(env, sizeof env, "WAGUARD_%s_%s", keys[i].section, keys[i].name);
        for (char *c = env; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        const char *ev = getenv(env);
        if (ev) {
            free(ps.raw[i].value);
            ps.raw[i].value = strdup(ev);
            ps.raw[i].line = 0;
            snprintf(ps.raw[i].origin, sizeof ps.raw[i].origin, "%s", env);
        } else if (!ps.raw[i].value) {
            ps.raw[i].value = strdup(keys[i].def);
            snprintf(ps.raw[i].origin, sizeof ps.raw[i].origin, "default");
        }
    }
    if (!ps.failed)
        unknown_env(&ps);
    for (size_t i = 0; i < NKEYS && !ps.failed; i++)
        convert(&ps, i, cfg);
    if (!ps.failed)
        hold_env(&ps);
    if (!ps.failed)
        hold_convert(&ps, cfg);
    for (size_t i = 0; i < ps.nhold; i++)
        free(ps.hold[i].value);
    cfg->path = strdup(path);
    if (!ps.failed && running)
        keep_running(cfg, running);
    if (!ps.failed)
        validate(&ps, cfg);
    for (size_t i = 0; i < NKEYS; i++)
        free(ps.raw[i].value);
    if (ps.failed) {
        config_free(cfg);
        return -1;
    }
    return 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
    return load(path, NULL, cfg, err, errlen);
}

int config_reload(const char *path, const struct config *running, struct config *cfg, char *err, size_t errlen)
{
    return load(path, running, cfg, err, errlen);
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char *field = (char *)cfg + keys[i].off;
        if (keys[i].type == K_STR || keys[i].type == K_SECRET || keys[i].type == K_PATH) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (keys[i].type == K_TOKENS) {
            tokens_free((struct token_list *)field);
        }
    }
    for (size_t i = 0; i < cfg->nholds; i++) {
        free(cfg->holds[i].name);
        for (size_t j = 0; j < cfg->holds[i].ntemplates; j++)
            free(cfg->holds[i].templates[j]);
        free(cfg->holds[i].templates);
    }
    memset(cfg->holds, 0, sizeof cfg->holds);
    cfg->nholds = 0;
    secret_mac_free(cfg->hmac_key);
    cfg->hmac_key = NULL;
    secret_sha_free(cfg->sha);
    cfg->sha = NULL;
    free(cfg->path);
    cfg->path = NULL;
}
