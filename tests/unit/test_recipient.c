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
    /* A wa_id from another country is taken as it is, and also tried as dialled at home. */
    ck_assert_str_eq(spec("447700900123", "1"), "i:447700900123 d:1447700900123");
    ck_assert_str_eq(spec("5491156121008", "1"), "i:5491156121008 d:15491156121008");
    /* '+' and punctuation: a dialled number (its digits name a user by themselves too). */
    ck_assert_str_eq(spec("+44 7700 900123", "1"), "d:447700900123");
    ck_assert_str_eq(spec("+52 55 1234 5678", "1"), "d:525512345678");
    ck_assert_str_eq(spec("+54 9 11 5612-1008", "91"), "d:5491156121008");
    ck_assert_str_eq(spec("00 49 151 23456789", "1"), "d:4915123456789");
    ck_assert_str_eq(spec("07700 900123", "44"), "d:447700900123");
    /* The ambiguous bare number: a Philippine wa_id and a US number dialled at home. */
    ck_assert_str_eq(spec("6315551234", "1"), "i:6315551234 d:16315551234");
    ck_assert_str_eq(spec("16315551234", "1"), "i:16315551234 d:16315551234");
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

START_TEST(ops_are_typed)
{
    cJSON *ops = cJSON_CreateArray();
    ops_identity(ops, (struct ops_user){ "447700900123", "GB.1" }, "H=", 5, OPS_MESSAGE, true, "m1", true);
    ops_status(ops, "s1", "failed", (struct ops_user){ "", NULL }, 7000, NULL);
    char *s = cJSON_PrintUnformatted(ops);
    ck_assert_str_eq(s, "[{\"k\":\"id\",\"w\":\"447700900123\",\"u\":\"GB.1\",\"h\":\"H=\",\"t\":5,"
                        "\"src\":\"message\",\"ack\":true,\"mid\":\"m1\",\"part\":true},"
                        "{\"k\":\"st\",\"id\":\"s1\",\"st\":\"failed\",\"w\":\"\",\"t\":7,\"codes\":[]}]");
    cJSON_free(s);
    cJSON_Delete(ops);
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
        { .wa_id = "16315551234", .known = true, .facts = { .last_in = now - 10, .hash = "H", .acked = false } },
        { .wa_id = "nobody", .known = false },
    };
    struct gate_decision d;
    int at = gate_decide_all(&cfg, u, 3, &text, now * 1000, &d);
    ck_assert(!d.allowed);
    ck_assert_int_eq(at, 1);
    ck_assert(d.reason[REASON_IDENTITY_UNACKNOWLEDGED]);
    ck_assert(!d.reason[REASON_OUTSIDE_SESSION_WINDOW]);    /* the unknown user does not count */
    ck_assert_int_eq(d.nconsidered, 2);
    u[1].facts.acked = true;
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
