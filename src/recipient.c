/* recipient — see include/recipient.h */
#include "recipient.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "phone.h"
#include "text.h"

static bool alnum_run(const char *p)
{
    size_t n = 0;
    for (; *p; p++, n++)
        if (!isalnum((unsigned char)*p) || n >= RECIPIENT_USER_ID_MAX)
            return false;
    return n > 0;
}

bool recipient_is_parent_id(const char *s)
{
    return isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]) && strncmp(s + 2, ".ENT.", 5) == 0 &&
           alnum_run(s + 7);
}

bool recipient_is_user_id(const char *s)
{
    if (!isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1]) || s[2] != '.')
        return false;
    return alnum_run(s + 3) || recipient_is_parent_id(s);
}

static bool all_digits(const char *s, size_t *n)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    *n = i;
    return i > 0;
}

static bool wa_id_shape(const char *d, size_t *n)
{
    return all_digits(d, n) && *n >= 7 && *n <= 15 && d[0] != '0';
}

int recipient_from_whatsapp(const char *raw, char out[RECIPIENT_MAX], const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!raw || !*raw) {
        *why = "no user named";
        return -1;
    }
    if (recipient_is_user_id(raw)) {
        text_copy(out, RECIPIENT_MAX, raw);
        return 0;
    }
    const char *d = raw[0] == '+' ? raw + 1 : raw;
    size_t n;
    if (!wa_id_shape(d, &n)) {
        *why = "not a wa_id (7 to 15 digits, no leading 0) nor a user id (CC.…)";
        return -1;
    }
    memcpy(out, d, n + 1);
    return 0;
}

int recipient_from_entry(const cJSON *entry, bool keep_any, char out[RECIPIENT_MAX])
{
    static const char *const keys[] = { "wa_id", "user_id", "user" };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, keys[k]);
        if (cJSON_IsString(v) && recipient_from_whatsapp(v->valuestring, out, NULL) == 0)
            return 0;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, "wa_id");
    if (!cJSON_IsString(v))
        return -1;
    /* a WhatsApp address: the wa_id before the '@' */
    const char *at = strchr(v->valuestring, '@');
    size_t n;
    if (at && (size_t)(at - v->valuestring) < RECIPIENT_MAX) {
        char d[RECIPIENT_MAX];
        memcpy(d, v->valuestring, (size_t)(at - v->valuestring));
        d[at - v->valuestring] = '\0';
        if (wa_id_shape(d, &n)) {
            memcpy(out, d, n + 1);
            return 0;
        }
    }
    if (!keep_any)
        return -1;
    size_t len = strlen(v->valuestring);
    if (len == 0 || len >= RECIPIENT_MAX)
        return -1;
    for (const char *p = v->valuestring; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '{' || *p == '}')
            return -1;
    memcpy(out, v->valuestring, len + 1);
    return 0;
}

int recipient_dial(const char *raw, const char *home_cc, char out[RECIPIENT_MAX], const char **why)
{
    return phone_dial(raw, home_cc, out, RECIPIENT_MAX, why);
}

static void add_form(struct recipient *out, enum recipient_form_kind kind, const char *key)
{
    for (int i = 0; i < out->n; i++)
        if (out->form[i].kind == kind && strcmp(out->form[i].key, key) == 0)
            return;
    if (out->n >= RECIPIENT_FORMS)
        return;
    out->form[out->n].kind = kind;
    text_copy(out->form[out->n].key, RECIPIENT_MAX, key);
    out->n++;
}

void recipient_exact(const char *id, struct recipient *out)
{
    memset(out, 0, sizeof *out);
    add_form(out, RECIPIENT_ID, id);
}

int recipient_parse(const char *in, const char *home_cc, struct recipient *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(out, 0, sizeof *out);
    if (!in || !*in) {
        *why = "empty recipient";
        return -1;
    }
    size_t len = strlen(in);
    if (len >= RECIPIENT_MAX) {
        *why = "longer than any wa_id, phone number or user id";
        return -1;
    }
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *why = "control characters in a recipient";
            return -1;
        }
    if (isspace((unsigned char)in[0]) || isspace((unsigned char)in[len - 1])) {
        *why = "space before or after the recipient: send it without";
        return -1;
    }
    if (recipient_is_user_id(in)) {
        add_form(out, RECIPIENT_ID, in);
        return 0;
    }
    size_t n;
    if (wa_id_shape(in, &n)) {
        /* Bare digits: most likely a wa_id handed out by WhatsApp (or the same number
         * without its '+', which a contact check may have mapped to another wa_id); it
         * may also be a number dialled without its country code. */
        add_form(out, RECIPIENT_NUMBER, in);
    }
    char r[PHONE_READINGS][PHONE_MAX];
    const char *dwhy = NULL;
    int k = phone_readings(in, home_cc, r, &dwhy);
    for (int i = 0; i < k; i++)
        add_form(out, RECIPIENT_NUMBER, r[i]);
    if (out->n == 0) {
        *why = dwhy ? dwhy : "not a wa_id, a user id or a dialable phone number";
        return -1;
    }
    return 0;
}

int recipient_spec(const struct recipient *r, char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (int i = 0; i < r->n; i++) {
        int w = snprintf(buf + used, len - used, "%s%c:%s", i ? " " : "", (char)r->form[i].kind, r->form[i].key);
        if (w < 0 || (size_t)w >= len - used)
            return -1;
        used += (size_t)w;
    }
    return 0;
}
