/* fuzz_config — libFuzzer target for the configuration loader (src/config.c).
 *
 * Each input is written as a configuration file in a private directory and loaded with
 * config_load(), the path the daemon takes at start and on SIGHUP, so config.c needs no
 * entry point of its own.  The directory holds the secret files the example
 * configuration names (api_tokens, admin_tokens, webhook_token, verify_token,
 * hmac_secret, waba_password), so inputs can reach the token parser too.  Checks:
 *   - no crash, leak or undefined behaviour (ASan, LSan, UBSan);
 *   - a refusal says why as "file:line: key: what is wrong" (non-empty, starting with
 *     the file's path or with WAGUARD_…), and a success gives the fields every module
 *     dereferences without a check (listen, redis url, key prefix, upstream url,
 *     webhook path, home country code) and numeric limits above zero.
 * Inputs naming device or kernel files (/dev, /proc, /sys, /run, ..) are skipped: a
 * *_file key pointing at /dev/zero would read for ever, which is the operator's choice,
 * not a bug.
 *
 * Build and run: `make fuzz`; replay one input: build/fuzz/fuzz_config FILE. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];      /* the private directory (made once) */
static char path[128];    /* dir/waguard.conf */

static void broken(const char *rule, const char *detail)
{
    fprintf(stderr, "fuzz_config: broken rule: %s\n  %s\n", rule, detail ? detail : "");
    abort();
}

static void put(const char *name, const char *text)
{
    char p[192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(p);
        exit(1);
    }
}

static void remove_dir(void)
{
    static const char *names[] = { "waguard.conf", "api_tokens", "admin_tokens", "webhook_token",
                                   "verify_token", "hmac_secret", "waba_password", NULL };
    char p[192];
    for (int i = 0; names[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/waguard-fuzz-config-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof path, "%s/waguard.conf", dir);
    put("api_tokens", "# internal services\nsvc:apitoken-A1b2C3d4\nbare-token-2\n");
    put("admin_tokens", "ops:admintoken-E5f6G7h8\n");
    put("webhook_token", "webhooktoken-I9j0K1l2\n");
    put("verify_token", "verifytoken-M3n4O5p6\n");
    put("hmac_secret", "hmacsecret-Q7r8S9t0\n");
    put("waba_password", "secret-Tg66\n");
    atexit(remove_dir);
    /* The loader reads these from the environment: the input alone must decide. */
    unsetenv("CREDENTIALS_DIRECTORY");
    extern char **environ;
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "WAGUARD_", 8) == 0) {
                char name[256];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
    return 0;
}

static int names_system_files(const uint8_t *data, size_t size)
{
    static const char *bad[] = { "/dev", "/proc", "/sys", "/run", "..", NULL };
    for (int i = 0; bad[i]; i++)
        if (memmem(data, size, bad[i], strlen(bad[i])))
            return 1;
    return 0;
}

static void check_loaded(const struct config *c)
{
    if (!c->listen || !c->redis_url || !c->key_prefix || !c->upstream_url || !c->webhook_path
        || !c->home_country_code || !c->path)
        broken("a loaded configuration lacks a field the modules use without a check", NULL);
    if (c->max_body_bytes <= 0 || c->timeout_s <= 0 || c->timeout_ms <= 0 || c->max_in_flight <= 0
        || c->max_connections <= 0 || c->events_maxlen <= 0)
        broken("a loaded configuration has a limit of zero or less", c->path);
    (void)config_listen_is_local(c->listen);
    char host[256];
    int port;
    if (strncmp(c->listen, "unix:", 5) != 0
        && config_split_hostport(c->listen, host, sizeof host, &port) != 0)
        broken("a loaded listen address does not split into host and port", c->listen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (names_system_files(data, size))
        return 0;
    FILE *f = fopen(path, "w");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    struct config cfg;
    char err[2048];
    if (config_load(path, &cfg, err, sizeof err) == 0) {
        check_loaded(&cfg);
        config_free(&cfg);
    } else if (err[0] == '\0' || (strncmp(err, path, strlen(path)) != 0
                                   && strncmp(err, "WAGUARD_", 8) != 0)) {
        broken("a refusal must name the file (or variable) and say what is wrong", err);
    }

    /* The address helpers on the raw text as well (NUL-terminated copy). */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char host[256];
    int port = 0;
    (void)config_listen_is_local(s);
    if (config_split_hostport(s, host, sizeof host, &port) == 0 && (port < 0 || port > 65535))
        broken("config_split_hostport accepted a port outside 0..65535", s);
    free(s);
    return 0;
}
