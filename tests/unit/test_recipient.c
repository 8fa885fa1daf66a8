/* Unit tests: recipient (who an input names), wtime (one rule for a time's unit), ops
 * (the typed operations), and the gate's strictest-of-known-users decision. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "ops.h"
#include "recipient.h"
#include "unit.h"
#include "wtime.h"

static char spec_buf[512];

static const char *spec(const char *in, const char *cc)
{
    struct recipient r;
    const char *why;
    if (recipient_parse(in, cc, &r, &why) != 0 || recipient_spec(&r, spec_buf, sizeof spec_buf) != 0)
        return NULL;
    return spec_buf;
}

START_TEST(forms_from_many_countries)
{
    /* A wa_id from another country is taken as it is (and as the number of the same
     * digits, which a contact check may have mapped), and also as dialled at home. */
    ck_assert_str_eq(spec("447700900123", "1"), "d:447700900123 d:1447700900123");
    ck_assert_str_eq(spec("541156121008", "1"), "d:541156121008 d:1541156121008");
    /* '+' and punctuation: the seed's reading, and the others (phone.h) */
    ck_assert_str_eq(spec("+44 7700 900123", "1"), "d:447700900123");
    ck_assert_str_eq(spec("+52 55 1234 5678", "1"), "d:525512345678");
    ck_assert_str_eq(spec("+54 9 11 5612-1008", "91"), "d:5491156121008");
    ck_assert_str_eq(spec("00 49 151 23456789", "1"), "d:4915123456789");
    ck_assert_str_eq(spec("07700 900123", "44"), "d:4407700900123 d:447700900123");
    ck_assert_str_eq(spec("+44 (0)7700 900123", "1"), "d:4407700900123 d:447700900123");
    /* The ambiguous bare number: a Philippine wa_id and a US number dialled at home. */
    ck_assert_str_eq(spec("6315551234", "1"), "d:6315551234 d:16315551234");
    ck_assert_str_eq(spec("16315551234", "1"), "d:16315551234 d:116315551234");
    /* A parent user id. */
    ck_assert_str_eq(spec("US.ENT.11815799212886844830", "1"), "i:US.ENT.11815799212886844830");
    /* Not read two ways: no space around it. */
    ck_assert_ptr_null(spec(" 447700900123", "1"));
    ck_assert_ptr_null(spec("447700900123 ", "1"));
    /* A business-scoped user id, up to 128 characters after the dot. */
    ck_assert_str_eq(spec("US.13491208655302741918", "1"), "i:US.13491208655302741918");
    char uid[140] = "BR.";
    memset(uid + 3, '7', 128);
    uid[131] = '\0';
    ck_assert_ptr_nonnull(spec(uid, "1"));
    uid[131] = '7';
    uid[132] = '\0';
    ck_assert_ptr_null(spec(uid, "1"));
}
END_TEST

START_TEST(refusals)
{
    ck_assert_ptr_null(spec("", "1"));
    ck_assert_ptr_null(spec("1631555\x01" "1234", "1"));
    ck_assert_ptr_null(spec("abc", "1"));
    ck_assert_ptr_null(spec("+0044123", "1"));
    char out[RECIPIENT_MAX];
    ck_assert_int_eq(recipient_from_whatsapp("447700900123", out, NULL), 0);
    ck_assert_str_eq(out, "447700900123");
    ck_assert_int_eq(recipient_from_whatsapp("+447700900123", out, NULL), 0);
    ck_assert_int_eq(recipient_from_whatsapp("0447700900123", out, NULL), -1);
    ck_assert_int_eq(recipient_from_whatsapp("1234567890123456", out, NULL), -1);
    ck_assert_int_eq(recipient_from_whatsapp("44 7700 900123", out, NULL), -1);
    ck_assert_int_eq(recipient_from_whatsapp("us.123", out, NULL), -1);
}
END_TEST

static long long ms_of(const char *json)
{
    cJSON *v = cJSON_Parse(json);
    long long ms = -42;
    if (wtime_parse(v, &ms) != 0)
        ms = -1;
    cJSON_Delete(v);
    return ms;
}

START_TEST(time_unit_decided_once)
{
    ck_assert_int_eq(ms_of("1602535238"), 1602535238000LL);
    ck_assert_int_eq(ms_of("\"1602535238\""), 1602535238000LL);
    ck_assert_int_eq(ms_of("1600132094000"), 1600132094000LL);
    ck_assert_int_eq(ms_of("\"1600132094000\""), 1600132094000LL);
    ck_assert_int_eq(ms_of("-5"), -1);
    ck_assert_int_eq(ms_of("1e400"), -1);
    ck_assert_int_eq(ms_of("\"12a\""), -1);
    ck_assert_int_eq(ms_of("99999999999999999"), -1);
    ck_assert_int_eq(ms_of("null"), -1);
}
END_TEST

/* The flat arguments of the apply function: each operation its kind, then its fields in
 * the schema's order; an allocation that fails voids the whole thing. */
static const char *flat(const struct ops *o)
{
    static char buf[512];
    buf[0] = '\0';
    for (size_t i = 0; i < o->n; i++) {
        strcat(buf, i ? "|" : "");
        strcat(buf, ops_arg(o, i, NULL));
    }
    return buf;
}

START_TEST(ops_are_typed)
{
    struct ops ops;
    ops_init(&ops);
    ops_identity(&ops, (struct ops_user){ "447700900123", "GB.1", NULL }, "H=", 5, OPS_MESSAGE, true, "m1", true);
    ops_status(&ops, "s1", "failed", (struct ops_user){ "", NULL, NULL }, "480", "PN1");
    ck_assert_str_eq(flat(&ops), "id|447700900123|GB.1|H=|5|message|1|m1|1|st|s1|failed|||480|PN1");
    ck_assert_int_eq(ops.count, 2);
    ck_assert_int_eq(ops.of_kind[OP_IDENTITY], 1);
    enum op_kind k;
    const char *fl[OPS_FIELDS_MAX];
    size_t at = ops_next(&ops, 0, &k, fl);
    ck_assert(at > 0 && k == OP_IDENTITY && strcmp(fl[2], "H=") == 0);
    at = ops_next(&ops, at, &k, fl);
    ck_assert(at > 0 && k == OP_STATUS && strcmp(fl[4], "480") == 0);
    ck_assert_int_eq(ops_next(&ops, at, &k, fl), 0);
    ops_free(&ops);
    /* codes as numbers or digit strings; only 480 and 137000 are identity codes */
    cJSON *errs = cJSON_Parse("[{\"code\":131047},{\"code\":\"480\"},{\"code\":137000},{\"code\":\"x\"}]");
    char codes[64];
    ops_codes(errs, codes, sizeof codes);
    ck_assert_str_eq(codes, "131047,480,137000");
    ops_identity_codes(errs, codes, sizeof codes);
    ck_assert_str_eq(codes, "480,137000");
    cJSON_Delete(errs);
    cJSON *t = cJSON_CreateTrue(), *ts = cJSON_CreateString("true"), *f = cJSON_CreateString("yes");
    ck_assert(ops_acknowledged(t) && ops_acknowledged(ts) && !ops_acknowledged(f));
    cJSON_Delete(t);
    cJSON_Delete(ts);
    cJSON_Delete(f);
    ck_assert(ops_hash_valid("Rc/eg9RQ0JA="));
    ck_assert(!ops_hash_valid("bad\"hash"));
    ck_assert(!ops_hash_valid("caf\xc3\xa9"));
    ck_assert(!ops_hash_valid(""));
}
END_TEST

START_TEST(strictest_of_known_users)
{
    struct config cfg = { .fail = FAIL_CLOSED, .session_window = true };
    long long now = 1700000000;
    struct gate_ask text = { .type = "text" }, tmpl = { .type = "template" };
    struct gate_user u[3] = {
        { .wa_id = "6315551234", .known = true, .facts = { .last_in = now - 10 } },
        { .wa_id = "16315551234", .known = true, .facts = { .last_in = now - 10, .hash = "H", .state = GATE_ID_PENDING } },
        { .wa_id = "nobody", .known = false },
    };
    struct gate_decision d;
    int at = gate_decide_all(&cfg, u, 3, &text, now * 1000, &d);
    ck_assert(!d.allowed);
    ck_assert_int_eq(at, 1);
    ck_assert(d.reason[REASON_IDENTITY_UNACKNOWLEDGED]);
    ck_assert(!d.reason[REASON_OUTSIDE_SESSION_WINDOW]);    /* the unknown user does not count */
    ck_assert_int_eq(d.nconsidered, 2);
    u[1].facts.state = GATE_ID_ACKNOWLEDGED;
    at = gate_decide_all(&cfg, u, 3, &text, now * 1000, &d);
    ck_assert(d.allowed);
    ck_assert_int_eq(at, 0);
    /* nobody known: the most likely user decides, with no record */
    at = gate_decide_all(&cfg, u + 2, 1, &tmpl, now * 1000, &d);
    ck_assert(d.allowed);
    ck_assert_int_eq(d.nconsidered, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("recipient");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, forms_from_many_countries);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, time_unit_decided_once);
    tcase_add_test(tc, ops_are_typed);
    tcase_add_test(tc, strictest_of_known_users);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(suite());
}
