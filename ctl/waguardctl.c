/* waguardctl — see ctl/ctl.h: options, usage, the command table and the configuration. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"

/* Where systemd's LoadCredential= takes waguard's secrets from (README, Deploying). */
#define CREDSTORE "/etc/credstore"

/* What a command takes besides its arguments. */
enum {
    TAKES_REASON = 1 << 0,
    NEEDS_REASON = 1 << 1,
    TAKES_ALL = 1 << 2,
    TAKES_LIMIT = 1 << 3,
};

struct command {
    const char *name;
    int min_args, max_args;
    unsigned takes;
    const char *args;          /* for the messages: "USER CATEGORY" */
    int (*run)(struct ctl *c, int argc, char **argv);
};

static const struct command commands[] = {
    { "status", 0, 0, 0, "", cmd_status },
    { "pending", 0, 0, 0, "", cmd_pending },
    { "failed", 0, 0, 0, "", cmd_failed },
    { "held", 0, 0, 0, "", cmd_held },
    { "show", 1, 1, 0, "USER", cmd_show },
    { "ack", 1, 1, TAKES_REASON | NEEDS_REASON, "USER", cmd_ack },
    { "release", 2, 2, TAKES_REASON | NEEDS_REASON, "USER CATEGORY", cmd_release },
    { "retry", 0, 1, TAKES_REASON | TAKES_ALL, "USER", cmd_retry },
    { "audit", 0, 1, TAKES_LIMIT, "[USER]", cmd_audit },
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: waguardctl [--config FILE] [--json] COMMAND [ARGS]\n"
            "       waguardctl --version | --help\n"
            "\n"
            "Shows and acts on the identity state of a running waguard, through its admin API.\n"
            "It reads waguard's configuration (secret files included) to learn where waguard\n"
            "listens and presents the first token of [api] admin_tokens_file.\n"
            "\n"
            "commands:\n"
            "  status                          counts, Redis and WABA client health, readiness\n"
            "  pending                         identity changes not acknowledged yet\n"
            "  failed                          acknowledgements waguard gave up retrying\n"
            "  held                            users whose [hold] categories are held\n"
            "  show USER                       one user: identity, history, acknowledgements\n"
            "  ack USER --reason TEXT          acknowledge USER's newest identity now\n"
            "  release USER CATEGORY --reason TEXT\n"
            "                                  lift USER's [hold] for CATEGORY (or all)\n"
            "  retry USER | --all              ask again for one, or every failed, acknowledgement\n"
            "  audit [USER] [--limit N]        the newest audit entries (of USER)\n"
            "\n"
            "USER is a wa_id, a +number, a dialled number or a user id, as the gate reads it.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   waguard's configuration (default " CONFIG_DEFAULT_PATH ")\n"
            "  -j, --json          print the API's JSON instead of tables\n"
            "  -r, --reason TEXT   why (ack, release, retry): the audit trail keeps it\n"
            "  -a, --all           retry: every failed acknowledgement\n"
            "  -n, --limit N       audit: at most N entries (1 to 1000)\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n"
            "\n"
            "Exit status: 0 done, 1 refused (by waguard, waguard unreachable, or the\n"
            "configuration), 2 usage error.  See waguardctl(8).\n");
}

/* A usage error: what is wrong and what to do, on stderr.  Returns CTL_USAGE. */
static int bad_usage(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad_usage(struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("waguardctl: ", c->err);
    vfprintf(c->err, fmt, ap);
    va_end(ap);
    fputs("\n", c->err);
    return CTL_USAGE;
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* The command's arguments and options, before anything is read or asked.  Returns 0, or
 * CTL_USAGE after saying what is wrong. */
static int check_usage(struct ctl *c, const struct command *cmd, int argc, char **argv, bool limit_given)
{
    const char *n = cmd->name;
    if (c->reason && !(cmd->takes & TAKES_REASON))
        return bad_usage(c, "%s takes no --reason (only ack, release and retry do)", n);
    if (c->all && !(cmd->takes & TAKES_ALL))
        return bad_usage(c, "%s takes no --all (only retry does)", n);
    if (limit_given && !(cmd->takes & TAKES_LIMIT))
        return bad_usage(c, "%s takes no --limit (only audit does)", n);
    if (strcmp(n, "retry") == 0) {
        if (c->all && argc > 0)
            return bad_usage(c, "retry takes USER or --all, not both");
        if (!c->all && argc == 0)
            return bad_usage(c, "retry needs USER (a wa_id, +number, dialled number or user id) or --all");
    } else if (argc < cmd->min_args) {
        return bad_usage(c, "%s needs %s%s", n, cmd->args,
                         strcmp(n, "release") == 0 ? " (CATEGORY: a [hold] category, or all)"
                                                   : " (a wa_id, +number, dialled number or user id)");
    }
    if (argc > cmd->max_args)
        return bad_usage(c, "%s takes %s%s; unexpected '%s'", n, cmd->max_args ? cmd->args : "no arguments",
                         cmd->max_args ? " only" : "", argv[cmd->max_args]);
    for (int i = 0; i < argc; i++)
        if (argv[i][0] == '\0')
            return bad_usage(c, "%s: an empty %s names no one", n, i == 1 ? "CATEGORY" : "USER");
    if ((cmd->takes & NEEDS_REASON) && !c->reason)
        return bad_usage(c, "%s needs --reason TEXT (the audit trail keeps it)", n);
    if (c->reason) {
        size_t l = strlen(c->reason);
        if (strspn(c->reason, " \t\r\n") == l)
            return bad_usage(c, "%s: --reason must say why (the audit trail keeps it)", n);
        if (l > CTL_REASON_MAX)
            return bad_usage(c, "%s: --reason is %zu bytes; waguard keeps at most %d", n, l, CTL_REASON_MAX);
    }
    if (strcmp(n, "release") == 0 && strcmp(argv[1], "all") != 0 && !config_category_valid(argv[1]))
        return bad_usage(c, "release: '%s' is not a category name (lower-case letters, digits and _, "
                         "as in [hold]; or all for every category)", argv[1]);
    return 0;
}

/* Loads the configuration as waguard does.  Without $CREDENTIALS_DIRECTORY (waguard has it
 * from systemd's LoadCredential=), a secret that is not beside the file is looked for in
 * /etc/credstore, where the unit takes it from.  Returns 0, or CTL_REFUSED after saying why. */
static int load_config(struct ctl *c)
{
    char err[2048];
    if (config_load(c->config_path, &c->cfg, err, sizeof err) != 0) {
        const char *cred = getenv("CREDENTIALS_DIRECTORY");
        struct stat st;
        bool retried = false;
        if ((!cred || !*cred) && stat(CREDSTORE, &st) == 0 && S_ISDIR(st.st_mode) &&
            setenv("CREDENTIALS_DIRECTORY", CREDSTORE, 1) == 0) {
            retried = true;
            char err2[2048];
            if (config_load(c->config_path, &c->cfg, err2, sizeof err2) == 0)
                goto loaded;
            unsetenv("CREDENTIALS_DIRECTORY");
            snprintf(err, sizeof err, "%s", err2);
        }
        fprintf(c->err, "waguardctl: %s\n", err);
        fprintf(c->err, "waguardctl: it reads waguard's configuration, secret files included, to find waguard and "
                "its admin token: run it as a user who can read them (root), name another file with --config FILE, "
                "or the secrets' directory with CREDENTIALS_DIRECTORY=DIR%s\n",
                retried ? " (" CREDSTORE " was tried too)" : "");
        return CTL_REFUSED;
    }
loaded:
    c->cfg_loaded = true;
    if (c->cfg.admin_tokens.n > 0) {
        c->token = c->cfg.admin_tokens.v[0].value;
        c->token_name = c->cfg.admin_tokens.v[0].name;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "json", no_argument, NULL, 'j' },
        { "reason", required_argument, NULL, 'r' },
        { "all", no_argument, NULL, 'a' },
        { "limit", required_argument, NULL, 'n' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct ctl c = { .config_path = CONFIG_DEFAULT_PATH, .timeout_ms = CTL_TIMEOUT_MS,
                     .out = stdout, .err = stderr };
    bool limit_given = false;
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":c:jr:an:Vh", opts, NULL)) != -1) {
        switch (o) {
        case 'c': c.config_path = optarg; break;
        case 'j': c.json = true; break;
        case 'r': c.reason = optarg; break;
        case 'a': c.all = true; break;
        case 'n': {
            char *end;
            c.limit = strtol(optarg, &end, 10);
            limit_given = true;
            if (*end || end == optarg || c.limit < 1 || c.limit > 1000)
                return bad_usage(&c, "--limit takes a number from 1 to 1000, not '%s'", optarg);
            break;
        }
        case 'V': printf("waguardctl %s\n", WAGUARD_VERSION); return CTL_OK;
        case 'h': usage(stdout); return CTL_OK;
        case ':':
            return bad_usage(&c, "%s needs a value (see waguardctl --help)", argv[optind - 1]);
        default: {
            const char *a = argv[optind - 1];
            if (strncmp(a, "--", 2) == 0 && strchr(a, '=') && optopt)
                return bad_usage(&c, "option '%.*s' takes no value (see waguardctl --help)", (int)strcspn(a, "="), a);
            if (strncmp(a, "--", 2) == 0)
                return bad_usage(&c, "unknown option '%.*s' (see waguardctl --help)", (int)strcspn(a, "="), a);
            return bad_usage(&c, "unknown option '-%c' (see waguardctl --help)", optopt ? optopt : '?');
        }
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return bad_usage(&c, "no command given: try waguardctl status");
    }
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        usage(stdout);
        return CTL_OK;
    }
    const struct command *cmd = find_command(name);
    if (!cmd)
        return bad_usage(&c, "unknown command '%s' (commands: status, pending, failed, held, show, ack, release, "
                         "retry, audit; see waguardctl --help)", name);
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;
    int rc = check_usage(&c, cmd, nargs, args, limit_given);
    if (rc != 0)
        return rc;
    rc = load_config(&c);
    if (rc != 0)
        return rc;
    rc = cmd->run(&c, nargs, args);
    if (fflush(c.out) != 0 && rc == CTL_OK) {
        fprintf(c.err, "waguardctl: cannot write the output\n");
        rc = CTL_REFUSED;
    }
    config_free(&c.cfg);
    return rc;
}
