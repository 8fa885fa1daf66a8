/* idcheck — see include/idcheck.h */
#include "idcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "jsonx.h"
#include "recipient.h"
#include "wtime.h"

#define MAX_AGE_DEFAULT 240     /* hours, as CAMARA's SIM Swap */
#define MAX_AGE_MAX 2400

struct ask {
    bool check;                  /* /check, else /retrieve-date */
    long max_age_h;
};

/* CAMARA's error body. */
static void camara_error(struct request *r, int status, const char *code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    jsonx_add_int(o, "status", status);
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddStringToObject(o, "message", message);
    request_reply_json(r, status, o);
}

static void on_users(struct app *app, const struct gate_user *users, int n, void *arg)
{
    struct request *r = arg;
    struct ask *a = r->data;
    (void)app;
    if (n < 0) {
        camara_error(r, 503, "UNAVAILABLE", "the store is unavailable; try again later");
        return;
    }
    /* The newest change among the known users the number names: the strictest. */
    long long latest = 0;
    bool known = false;
    for (int i = 0; i < n; i++) {
        if (!users[i].known)
            continue;
        known = true;
        if (users[i].facts.changed_ms > latest)
            latest = users[i].facts.changed_ms;
    }
    if (!known) {
        camara_error(r, 404, "IDENTIFIER_NOT_FOUND", "waguard has never seen a WhatsApp user with this phone number");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (a->check) {
        bool changed = latest > 0 && app_wall_ms() - latest <= a->max_age_h * 3600LL * 1000;
        cJSON_AddBoolToObject(o, "changed", changed);
    } else if (latest > 0) {
        char when[40];
        wtime_rfc3339(latest, when, sizeof when);
        cJSON_AddStringToObject(o, "latestChange", when);
    } else {
        cJSON_AddNullToObject(o, "latestChange");
    }
    request_reply_json(r, 200, o);
}

static void handle(struct request *r, bool check)
{
    size_t len;
    const char *body = request_body(r, &len);
    char bad[200];
    cJSON *in = jsonx_parse(body, len, bad, sizeof bad);
    const cJSON *pn = cJSON_GetObjectItemCaseSensitive(in, "phoneNumber");
    const cJSON *age = cJSON_GetObjectItemCaseSensitive(in, "maxAge");
    char why[400] = "";
    long max_age = MAX_AGE_DEFAULT;
    struct recipient rcpt;
    const char *rwhy;
    if (!cJSON_IsObject(in)) {
        snprintf(why, sizeof why, "the body must be a JSON object%s%s", in ? "" : ": ", in ? "" : bad);
    } else if (!cJSON_IsString(pn)) {
        snprintf(why, sizeof why, "phoneNumber is required: a string in E.164 format, +CCNNN…");
    } else if (pn->valuestring[0] != '+' || strlen(pn->valuestring) < 6 || strlen(pn->valuestring) > 16 ||
               pn->valuestring[1] == '0' ||
               strspn(pn->valuestring + 1, "0123456789") != strlen(pn->valuestring + 1)) {
        snprintf(why, sizeof why, "phoneNumber must match ^\\+[1-9][0-9]{4,14}$");
    } else if (recipient_parse(pn->valuestring, r->app->cfg->home_country_code, &rcpt, &rwhy) != 0) {
        snprintf(why, sizeof why, "phoneNumber: %s", rwhy);
    } else if (check && age && !(cJSON_IsNumber(age) && age->valuedouble >= -1e9 && age->valuedouble <= 1e9 &&
                                 age->valuedouble == (double)(long)age->valuedouble)) {
        /* the range first: a double beyond long's is undefined to convert */
        snprintf(why, sizeof why, "maxAge must be a whole number of hours (1 to %d)", MAX_AGE_MAX);
    }
    if (why[0]) {
        cJSON_Delete(in);
        camara_error(r, 400, "INVALID_ARGUMENT", why);
        return;
    }
    if (check && age) {
        if (age->valuedouble < 1 || age->valuedouble > MAX_AGE_MAX) {
            cJSON_Delete(in);
            camara_error(r, 400, "OUT_OF_RANGE", "maxAge must be between 1 and 2400 hours");
            return;
        }
        max_age = (long)age->valuedouble;
    }
    cJSON_Delete(in);
    struct ask *a = calloc(1, sizeof *a);
    if (!a) {
        camara_error(r, 500, "INTERNAL", "out of memory");
        return;
    }
    a->check = check;
    a->max_age_h = max_age;
    r->data = a;
    r->free_data = free;
    if (gate_fetch(r->app, &rcpt, on_users, r) != 0)
        camara_error(r, 500, "INTERNAL", "out of memory");
}

void idcheck_check(struct request *r)
{
    handle(r, true);
}

void idcheck_retrieve_date(struct request *r)
{
    handle(r, false);
}
