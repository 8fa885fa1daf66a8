/* Unit tests: config_load — defaults, overrides, secrets and "file:line: key:" errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"

static char dir[64];
static char path[128];
static char err[2048];
static struct config cfg;

extern char **environ;

/* No WAGUARD_* variable of the caller's (make's WAGUARD_BIN, a developer's override) may
 * reach config_load: it would be refused as naming no key, or change the values tested. */
static void clear_waguard_env(void)
{
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "WAGUARD_", 8) != 0)
            e++;
        if (!*e)
            return;
        char name[128];
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), *e);
        unsetenv(name);
    }
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/waguard-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/w.conf", dir);
    unsetenv("CREDENTIALS_DIRECTORY");
    clear_waguard_env();
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_file(const char *name, const char *text)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static int load(const char *text)
{
    write_file("w.conf", text);
    return config_load(path, &cfg, err, sizeof err);
}

START_TEST(defaults)
{
    ck_assert_int_eq(load(""), 0);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:8080");
    ck_assert_int_eq(cfg.max_body_bytes, 1048576);
    ck_assert_str_eq(cfg.redis_url, "redis://127.0.0.1:6379/0");
    ck_assert_str_eq(cfg.key_prefix, "waguard");
    ck_assert_str_eq(cfg.webhook_path, "/webhook");
    ck_assert_int_eq(cfg.ack, ACK_AUTO);
    ck_assert_int_eq(cfg.retry_max_s, 900);
    ck_assert_int_eq(cfg.fail, FAIL_CLOSED);
    ck_assert(cfg.session_window);
    ck_assert(!cfg.require_valid_contact);
    ck_assert_str_eq(cfg.home_country_code, "1");
    ck_assert_int_eq(cfg.log_level, LOG_LVL_INFO);
    config_free(&cfg);
}
END_TEST

START_TEST(values_and_comments)
{
    ck_assert_int_eq(load("[server]\nlisten = unix:/run/w.sock ; inline comment\n"
                          "[identity]\nack = manual\n[gate]\nfail = open\nrequire_valid_contact = yes\n"
                          "session_window = off\nhome_country_code = +91\n[log]\nlevel = debug\nformat = json\n"), 0);
    ck_assert_str_eq(cfg.listen, "unix:/run/w.sock");
    ck_assert_int_eq(cfg.ack, ACK_MANUAL);
    ck_assert_int_eq(cfg.fail, FAIL_OPEN);
    ck_assert(cfg.require_valid_contact);
    ck_assert(!cfg.session_window);
    ck_assert_str_eq(cfg.home_country_code, "91");
    ck_assert_int_eq(cfg.log_format, LOG_FMT_JSON);
    config_free(&cfg);
}
END_TEST

START_TEST(errors_name_file_line_key)
{
    char want[256];
    ck_assert_int_eq(load("[server]\nlisten = 127.0.0.1:1\nmax_body_bytes = lots\n"), -1);
    snprintf(want, sizeof want, "%s:3: server.max_body_bytes:", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got: %s", err);

    ck_assert_int_eq(load("\n[gate]\nfial = open\n"), -1);
    snprintf(want, sizeof want, "%s:3: gate.fial: unknown key", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got: %s", err);

    ck_assert_int_eq(load("[nope]\na = b\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown section [nope]"));

    ck_assert_int_eq(load("[identity]\nack = sometimes\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "auto | manual"));

    ck_assert_int_eq(load("[upstream]\nurl = ftp://x\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "upstream.url"));

    ck_assert_int_eq(load("[server]\nmax_body_bytes = 1\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "out of range"));

    ck_assert_int_eq(load("this is not ini\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, ":1:"));
}
END_TEST

START_TEST(env_overrides)
{
    setenv("WAGUARD_SERVER_MAX_BODY_BYTES", "2048", 1);
    ck_assert_int_eq(load("[server]\nmax_body_bytes = 4096\n"), 0);
    ck_assert_int_eq(cfg.max_body_bytes, 2048);
    config_free(&cfg);
    setenv("WAGUARD_GATE_FAIL", "maybe", 1);
    ck_assert_int_eq(load(""), -1);
    ck_assert_msg(strncmp(err, "WAGUARD_GATE_FAIL: gate.fail:", 29) == 0, "got: %s", err);
    unsetenv("WAGUARD_GATE_FAIL");
    setenv("WAGUARD_GATE_FALI", "closed", 1);      /* names no key: refused, named */
    ck_assert_int_eq(load(""), -1);
    ck_assert_msg(strncmp(err, "WAGUARD_GATE_FALI: names no key", 31) == 0, "got: %s", err);
}
END_TEST

START_TEST(key_given_twice)
{
    ck_assert_int_eq(load("[log]\nlevel = info\n[log]\nlevel = debug\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "lines 2 and 4"));
    ck_assert_ptr_nonnull(strstr(err, "log.level"));
}
END_TEST

START_TEST(secrets_and_tokens)
{
    char cred[160];
    snprintf(cred, sizeof cred, "%s/cred", dir);
    ck_assert_int_eq(mkdir(cred, 0700), 0);
    write_file("cred/waba_password", "s3cret\n");
    write_file("waba_password", "beside-the-config\n");
    write_file("api_tokens", "# services\nbilling:abcdefgh12345678\nplainplaintoken1\n\n");
    setenv("CREDENTIALS_DIRECTORY", cred, 1);
    ck_assert_int_eq(load("[upstream]\nauth = login\npassword_file = waba_password\n"
                          "[api]\ntokens_file = api_tokens\n"), 0);
    ck_assert_str_eq(cfg.password, "s3cret");            /* $CREDENTIALS_DIRECTORY first */
    ck_assert_int_eq((int)cfg.api_tokens.n, 2);
    ck_assert_str_eq(cfg.api_tokens.v[0].name, "billing");
    ck_assert_str_eq(cfg.api_tokens.v[0].value, "abcdefgh12345678");
    ck_assert_str_eq(cfg.api_tokens.v[1].value, "plainplaintoken1");
    /* each token's digest is made as it is read: a request compares digests only */
    unsigned char d[SECRET_DIGEST_LEN];
    ck_assert(cfg.sha != NULL);
    ck_assert(secret_digest(cfg.sha, "abcdefgh12345678", 16, d));
    ck_assert(secret_digest_equal(d, cfg.api_tokens.v[0].digest));
    ck_assert(!secret_digest_equal(d, cfg.api_tokens.v[1].digest));
    ck_assert(secret_equal(cfg.sha, "plainplaintoken1", 16, cfg.api_tokens.v[1].value));
    ck_assert(!secret_equal(cfg.sha, "plainplaintoken", 15, cfg.api_tokens.v[1].value));
    /* the kept context gives SHA-256 itself, digest after digest (FIPS 180-2's "abc") */
    static const unsigned char abc[SECRET_DIGEST_LEN] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad };
    for (int i = 0; i < 3; i++) {
        ck_assert(secret_digest(cfg.sha, "abc", 3, d));
        ck_assert(secret_digest_equal(d, abc));
    }
    ck_assert(secret_matches(cfg.sha, "abc", 3, abc));
    ck_assert(!secret_matches(cfg.sha, "abd", 3, abc));
    /* no SHA-256 ready: nothing matches, and the digest is no digest of anything */
    ck_assert(!secret_digest(NULL, "abc", 3, d));
    ck_assert(!secret_matches(NULL, "abc", 3, abc));
    static const unsigned char zero[SECRET_DIGEST_LEN];
    ck_assert(secret_digest_equal(d, zero));
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
    ck_assert_int_eq(load("[upstream]\nauth = login\npassword_file = waba_password\n"), 0);
    ck_assert_str_eq(cfg.password, "beside-the-config"); /* then beside the file */
    config_free(&cfg);
    ck_assert_int_eq(load("[upstream]\nauth = login\npassword_file = missing\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "upstream.password_file: cannot read"));
    ck_assert_int_eq(load("[upstream]\nauth = login\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "needs [upstream] password_file"));
}
END_TEST

START_TEST(public_listener_needs_credentials)
{
    ck_assert_int_eq(load("[server]\nlisten = 0.0.0.0:8080\n"), -1);
    ck_assert_ptr_nonnull(strstr(err, "not a loopback address"));
    ck_assert_ptr_nonnull(strstr(err, "token_file or hmac_secret_file"));
    write_file("hook", "0123456789abcdef\n");
    write_file("toks", "svc:0123456789abcdef\n");
    ck_assert_int_eq(load("[server]\nlisten = 0.0.0.0:8080\n[webhook]\nhmac_secret_file = hook\n"
                          "[api]\ntokens_file = toks\nadmin_tokens_file = toks\n"), 0);
    config_free(&cfg);
    ck_assert(config_listen_is_local("127.0.0.2:80"));
    ck_assert(config_listen_is_local("[::1]:80"));
    ck_assert(config_listen_is_local("unix:/x"));
    ck_assert(!config_listen_is_local("10.0.0.1:80"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, values_and_comments);
    tcase_add_test(tc, errors_name_file_line_key);
    tcase_add_test(tc, env_overrides);
    tcase_add_test(tc, key_given_twice);
    tcase_add_test(tc, secrets_and_tokens);
    tcase_add_test(tc, public_listener_needs_credentials);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
