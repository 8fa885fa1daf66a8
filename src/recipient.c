/* recipient — see include/recipient.h */
#include "recipient.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "phone.h"

bool recipient_is_user_id(const char *s)
{
    if (!isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1]) || s[2] != '.')
        return false;
    size_t n = 0;
    for (const char *p = s + 3; *p; p++, n++)
        if (!isalnum((unsigned char)*p) || n >= RECIPIENT_USER_ID_MAX)
            return false;
    return n > 0;
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
        snprintf(out, RECIPIENT_MAX, "%s", raw);
        return 0;
    }
    const char *d = raw[0] == '+' ? raw + 1 : raw;
    size_t n;
    if (!all_digits(d, &n) || n < 7 || n > 15 || d[0] == '0') {
        *why = "not a wa_id (7 to 15 digits, no leading 0) nor a user id (CC.…)";
        return -1;
    }
    memcpy(out, d, n + 1);
    return 0;
}

int recipient_from_entry(const cJSON *entry, char out[RECIPIENT_MAX])
{
    static const char *const keys[] = { "wa_id", "user_id" };
    for (size_t k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, keys[k]);
        if (cJSON_IsString(v) && recipient_from_whatsapp(v->valuestring, out, NULL) == 0)
            return 0;
    }
    return -1;
}

int recipient_dial(const char *raw, const char *home_cc, char out[RECIPIENT_MAX], const char **why)
{
    return phone_normalise(raw, home_cc, out, RECIPIENT_MAX, why);
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
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *why = "control characters in a recipient";
            return -1;
        }
    if (recipient_is_user_id(in)) {
        out->form[0].kind = RECIPIENT_ID;
        snprintf(out->form[0].key, RECIPIENT_MAX, "%s", in);
        out->n = 1;
        return 0;
    }
    size_t n;
    if (all_digits(in, &n) && n >= 7 && n <= 15 && in[0] != '0') {
        /* Bare digits: most likely a wa_id handed out by WhatsApp; it may also be a
         * number dialled without its country code. */
        out->form[out->n].kind = RECIPIENT_ID;
        memcpy(out->form[out->n].key, in, n + 1);
        out->n++;
    }
    char d[RECIPIENT_MAX];
    const char *dwhy = NULL;
    if (recipient_dial(in, home_cc, d, &dwhy) == 0) {
        /* Always asked as well: the number may map to a wa_id by a contact check. */
        out->form[out->n].kind = RECIPIENT_DIALLED;
        memcpy(out->form[out->n].key, d, strlen(d) + 1);
        out->n++;
    }
    if (out->n == 0) {
        *why = dwhy ? dwhy : "not a wa_id, a user id or a dialable phone number";
        return -1;
    }
    return 0;
}

int recipient_spec(const struct recipient *r, char *buf, size_t len)
{
    size_t used = 0;
    for (int i = 0; i < r->n; i++) {
        int w = snprintf(buf + used, len - used, "%s%c:%s", i ? " " : "", (char)r->form[i].kind, r->form[i].key);
        if (w < 0 || (size_t)w >= len - used)
            return -1;
        used += (size_t)w;
    }
    return 0;
}
