/* config — the INI file, environment overrides and secret files.
 *
 * config_load() reads the file with inih, applies WAGUARD_<SECTION>_<KEY> overrides,
 * validates every value and reads every *_file secret.  On failure it returns -1 and
 * writes "file:line: key: what is wrong" to err.  A loaded config owns all its strings;
 * release it with config_free(). */
#ifndef WAGUARD_CONFIG_H
#define WAGUARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"
#include "secret.h"

enum ack_policy { ACK_AUTO = 0, ACK_MANUAL = 1 };
enum first_seen { FIRST_SEEN_TRUST = 0, FIRST_SEEN_HOLD = 1 };
enum fail_mode { FAIL_CLOSED = 0, FAIL_OPEN = 1 };
enum upstream_api { API_ONPREM = 0, API_CLOUD = 1 };
enum upstream_auth { AUTH_NONE = 0, AUTH_BEARER, AUTH_LOGIN, AUTH_HEADER };
/* [upstream] security_notifications (On-Premises' show_security_notifications) */
enum secnot_policy { SECNOT_ENSURE = 0, SECNOT_CHECK = 1, SECNOT_OFF = 2 };

/* One bearer token with the name used in logs and the audit trail. */
struct token {
    char *name;
    char *value;
    unsigned char digest[SECRET_DIGEST_LEN];   /* of value, made when the file is read */
};

struct token_list {
    struct token *v;
    size_t n;
};

/* [hold]: a sensitive category of sends, held for a while after an identity change. */
#define CONFIG_HOLD_MAX 16
#define CONFIG_NUMBER_MAX 64         /* a business number's id, NUL included */
#define CONFIG_NUMBERS_MAX 16        /* business numbers in [upstream] phone_number_id */
struct hold_category {
    char *name;                /* "authentication", or any name the operator gives */
    long seconds;              /* <name>_s: the hold time; 0 = off */
    char **templates;          /* <name>_templates: template names in the category */
    size_t ntemplates;
};

struct config {
    char *path;                /* the file it came from */

    /* [server] */
    char *listen;              /* "host:port" or "unix:/path" */
    long max_body_bytes;
    long max_header_bytes;
    long timeout_s;
    long max_connections;
    long shutdown_timeout_s;

    /* [redis] */
    char *redis_url;
    char *redis_password;      /* from password_file, or NULL */
    char *key_prefix;
    long events_maxlen;
    long redis_timeout_ms;     /* the handshake and every command; then reconnect */
    char *redis_sentinels;     /* "host:port,host:port" or "": ask Sentinel for the primary */
    char *redis_master_name;   /* the Sentinel service name ("" without sentinels) */
    long redis_min_replicas;   /* WAIT for this many replicas after a webhook's write */

    /* [upstream] */
    enum upstream_api api;
    char *upstream_url;
    enum upstream_auth auth;
    char *username;
    char *password;            /* from password_file */
    char *upstream_token;      /* from token_file */
    char *header_name;
    char *ca_file;
    long timeout_ms;
    long max_in_flight;
    long queue_max;            /* requests waiting for a connection, at most */
    char *phone_number_id;     /* Cloud: the business number(s), comma separated; the first is
                                  the default for paths and decisions that name none */
    char numbers[CONFIG_NUMBERS_MAX][CONFIG_NUMBER_MAX];   /* phone_number_id's, read and checked */
    int nnumbers;
    char *graph_version;       /* Cloud: the Graph API version of waguard's own calls */
    bool identity_check;       /* turn Meta's identity key check on at start and reload */
    long blocklist_sync_s;     /* read the blocklist from the WABA client this often; 0 off */
    enum secnot_policy security_notifications;
    long settings_check_s;     /* read show_security_notifications again this often */

    struct secret_sha *sha;    /* SHA-256 made ready (secret.h): every token's digest, the
                                  known ones here and the ones presented to this config;
                                  owned */

    /* [webhook] */
    char *webhook_path;
    char *webhook_token;       /* from token_file, or NULL */
    unsigned char webhook_token_digest[SECRET_DIGEST_LEN];   /* of webhook_token, when there is one */
    char *hmac_secret;         /* from hmac_secret_file, or NULL */
    struct secret_mac *hmac_key;   /* hmac_secret made ready (secret.h), when there is one; owned */
    char *verify_token;        /* from verify_token_file, or NULL */

    /* [api] */
    struct token_list api_tokens;
    struct token_list admin_tokens;

    /* [identity] */
    enum ack_policy ack;
    long retry_max_s;
    long retry_base_ms;
    long lease_s;
    enum first_seen first_seen;

    /* [proxy] */
    bool forward_unknown;      /* other /v1 and Cloud /{version} paths forwarded unchanged */
    long sent_ttl_s;           /* how long a forwarded send's message id is remembered (0 off) */

    /* [contacts] */
    long check_budget;         /* numbers checked and never sent to, within the window; 0 off */
    long check_window_s;

    /* [gate] */
    enum fail_mode fail;
    bool require_valid_contact;
    bool session_window;
    char *home_country_code;

    /* [hold] */
    struct hold_category holds[CONFIG_HOLD_MAX];
    size_t nholds;

    /* [log] */
    enum log_level log_level;
    enum log_format log_format;

    /* config_reload: the restart-only keys whose new values were not taken ("" none) */
    char restart_kept[256];
};

#define CONFIG_DEFAULT_PATH "/etc/waguard/waguard.conf"
#define CONFIG_MAX_SENTINELS 16

/* Loads and validates path into *cfg (zeroed first).  Returns 0, or -1 with err set. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* As config_load, for a reload beside the running configuration: keys that need a
 * restart keep running's values (named in cfg->restart_kept), and are put back before
 * validation, so that no check passes on a value that will not run. */
int config_reload(const char *path, const struct config *running, struct config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void config_free(struct config *cfg);
/* Every key, one line each: section TAB key TAB default TAB "reload" or "restart" (what a
 * change needs), in the order of the configuration table; [hold]'s two per-category keys
 * as <category>_s and <category>_templates.  (waguard --list-keys) */
void config_list_keys(FILE *out);

/* A business number's id (the Cloud API's phone_number_id) as it may name state, in the
 * configuration, a path, a query or a webhook: 1 to 63 letters, digits, '_' or '-'. */
bool config_number_valid(const char *n);

/* A category name as [hold], ?category= and a release name it: 1 to 63 lower-case
 * letters, digits or _. */
bool config_category_valid(const char *c);
/* The [hold] category named name, or NULL. */
const struct hold_category *config_hold(const struct config *cfg, const char *name);
/* The [hold] category whose templates include template_name (spaces around it and case
 * ignored), or NULL. */
const struct hold_category *config_hold_for_template(const struct config *cfg, const char *template_name);

/* True when listen names a loopback address (127.0.0.0/8, ::1, localhost) or a unix socket. */
bool config_listen_is_local(const char *listen);

/* Splits "host:port" / "[v6]:port" into parts.  Returns 0, or -1 when malformed. */
int config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
    __attribute__((warn_unused_result));

#endif
