/* envelope — see include/envelope.h */
#include "envelope.h"

#include <stdio.h>
#include <string.h>

#include "jsonx.h"
#include "ops.h"

cJSON *envelope_waba(int code, const char *title, const char *details)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *errs = cJSON_AddArrayToObject(o, "errors");
    cJSON *e = cJSON_CreateObject();
    if (!o || !errs || !e) {
        cJSON_Delete(o);
        cJSON_Delete(e);
        return NULL;
    }
    jsonx_add_int(e, "code", code);
    cJSON_AddStringToObject(e, "title", title);
    cJSON_AddStringToObject(e, "details", details);
    cJSON_AddItemToArray(errs, e);
    return o;
}

cJSON *envelope_graph(int code, int subcode, const char *type, const char *message, const char *details,
                      const char *trace)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    if (!o || !e) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    jsonx_add_int(e, "code", code);
    if (subcode)
        jsonx_add_int(e, "error_subcode", subcode);
    cJSON *data = cJSON_AddObjectToObject(e, "error_data");
    cJSON_AddStringToObject(data, "messaging_product", "whatsapp");
    cJSON_AddStringToObject(data, "details", details);
    cJSON_AddStringToObject(e, "fbtrace_id", trace);
    return o;
}

bool envelope_ok(int status, const cJSON *body)
{
    if (status / 100 != 2)
        return false;
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(body, "errors");
    if (cJSON_IsArray(errs) && cJSON_GetArraySize(errs) > 0)
        return false;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(body, "error");
    return !(err && !cJSON_IsNull(err));
}

void envelope_identity_codes(const cJSON *body, char *buf, size_t len)
{
    ops_identity_codes(cJSON_GetObjectItemCaseSensitive(body, "errors"), buf, len);
    if (buf[0])
        return;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
    long long c;
    if (cJSON_IsObject(e) && ops_code(e, &c) && ops_is_identity_code(c))
        snprintf(buf, len, "%lld", c);
}

void envelope_describe(const cJSON *body, char *buf, size_t len)
{
    buf[0] = '\0';
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "errors"), 0);
    if (!e)
        e = cJSON_GetObjectItemCaseSensitive(body, "error");
    static const char *const keys[] = { "details", "title", "message" };
    for (size_t i = 0; e && i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, keys[i]);
        if (cJSON_IsString(v) && v->valuestring[0]) {
            long long c = 0;
            if (ops_code(e, &c))
                snprintf(buf, len, "%lld: %.300s", c, v->valuestring);
            else
                snprintf(buf, len, "%.300s", v->valuestring);
            return;
        }
    }
}
