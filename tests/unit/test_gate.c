/* Unit tests: the send decision, the retry backoff, the webhook signature and the
 * metrics text. */
#include <check.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ack.h"
#include "gate.h"
#include "metrics.h"
#include "webhook.h"
#include "unit.h"

static struct config cfg;
static const long long NOW = 1700000000;

static void setup(void)
{
    memset(&cfg, 0, sizeof cfg);
    cfg.session_window = true;
    cfg.fail = FAIL_CLOSED;
}

static struct gate_decision decide(const struct gate_facts *f, const char *type)
{
    struct gate_decision d;
    struct gate_ask ask = { .type = type };
    gate_decide(&cfg, f, &ask, NOW * 1000, &d);
    return d;
}

START_TEST(allowed_when_nothing_stands_in_the_way)
{
    struct gate_facts f = { .last_in = NOW - 60 };
    struct gate_decision d = decide(&f, "text");
    ck_assert(d.allowed);
    for (int i = 0; i < REASON_COUNT; i++)
        ck_assert(!d.reason[i]);
}
END_TEST

START_TEST(identity_unacknowledged)
{
    struct gate_facts f = { .hash = "H", .ts_ms = 1, .state = GATE_ID_PENDING, .last_in = NOW };
    struct gate_decision d = decide(&f, "template");
    ck_assert(!d.allowed);
    ck_assert(d.reason[REASON_IDENTITY_UNACKNOWLEDGED]);
    f.state = GATE_ID_ACKNOWLEDGED;
    ck_assert(decide(&f, "template").allowed);
    /* every other state keeps it closed (I4), a hash or not */
    enum gate_identity closed[] = { GATE_ID_PENDING, GATE_ID_FAILED, GATE_ID_HASH_UNKNOWN };
    for (size_t i = 0; i < 3; i++) {
        f.state = closed[i];
        ck_assert(decide(&f, "template").reason[REASON_IDENTITY_UNACKNOWLEDGED]);
        f.hash = NULL;
        ck_assert(decide(&f, "template").reason[REASON_IDENTITY_UNACKNOWLEDGED]);
        f.hash = "H";
    }
    /* a retired user id is refused as a number change */
    f.state = GATE_ID_ACKNOWLEDGED;
    f.retired_to = "US.2";
    ck_assert(decide(&f, "template").reason[REASON_NUMBER_CHANGED]);
}
END_TEST

START_TEST(session_window)
{
    struct gate_facts f = { 0 };
    ck_assert(decide(&f, "text").reason[REASON_OUTSIDE_SESSION_WINDOW]);
    ck_assert(decide(&f, "template").allowed);
    f.last_in = NOW - 86400;
    ck_assert(decide(&f, "image").allowed);
    f.last_in = NOW - 86401;
    ck_assert(!decide(&f, "image").allowed);
    cfg.session_window = false;
    ck_assert(decide(&f, "image").allowed);
}
END_TEST

START_TEST(blocked_moved_and_contact)
{
    struct gate_facts f = { .last_in = NOW, .blocked = true, .moved_to = "16315559999" };
    struct gate_decision d = decide(&f, "text");
    ck_assert(d.reason[REASON_BLOCKED]);
    ck_assert(d.reason[REASON_NUMBER_CHANGED]);
    ck_assert(!d.reason[REASON_CONTACT_INVALID]);       /* off unless required */
    cfg.require_valid_contact = true;
    struct gate_facts g = { .contact = "invalid" };
    ck_assert(decide(&g, "template").reason[REASON_CONTACT_INVALID]);
    g.contact = "valid";
    ck_assert(decide(&g, "template").allowed);
    struct gate_facts h = { .last_in = NOW - 3600 };    /* wrote to us: a real user */
    ck_assert(decide(&h, "template").allowed);
}
END_TEST

START_TEST(store_unavailable)
{
    struct gate_facts f = { .store_down = true };
    struct gate_decision d = decide(&f, "text");
    ck_assert(!d.allowed);
    ck_assert(d.reason[REASON_STORE_UNAVAILABLE]);
    cfg.fail = FAIL_OPEN;
    d = decide(&f, "text");
    ck_assert(d.allowed);
    ck_assert(!d.reason[REASON_STORE_UNAVAILABLE]);
}
END_TEST

START_TEST(decision_json_shape)
{
    struct gate_facts f = { .hash = "Rc/eg9RQ0JA=", .ts_ms = 1602535238000LL, .state = GATE_ID_PENDING };
    struct gate_decision d = decide(&f, "text");
    cJSON *o = gate_decision_json("16315551234", &f, &d);
    char *s = cJSON_PrintUnformatted(o);
    ck_assert_str_eq(s, "{\"wa_id\":\"16315551234\",\"allowed\":false,\"reasons\":[\"identity_unacknowledged\","
                        "\"outside_session_window\"],\"identity\":{\"hash\":\"Rc/eg9RQ0JA=\","
                        "\"created_timestamp\":1602535238,\"acknowledged\":false}}");
    cJSON_free(s);
    cJSON_Delete(o);
}
END_TEST

START_TEST(backoff_grows_capped_with_jitter)
{
    ck_assert_int_eq(ack_backoff_ms(1000, 900000, 1, 0), 500);
    ck_assert_int_eq(ack_backoff_ms(1000, 900000, 1, 500), 1000);
    ck_assert_int_eq(ack_backoff_ms(1000, 900000, 4, 0), 4000);
    ck_assert_int_eq(ack_backoff_ms(1000, 900000, 40, 0), 450000);
    for (unsigned r = 0; r < 2000; r += 37) {
        long long d = ack_backoff_ms(1000, 900000, 3, r * 2654435761u);
        ck_assert(d >= 2000 && d <= 4000);
    }
}
END_TEST

START_TEST(signature)
{
    const char *body = "{\"a\":\"\\u00e9\"}";
    unsigned char mac[32];
    unsigned int n;
    HMAC(EVP_sha256(), "secret", 6, (const unsigned char *)body, strlen(body), mac, &n);
    char hdr[80] = "sha256=";
    for (int i = 0; i < 32; i++)
        snprintf(hdr + 7 + 2 * i, 3, "%02x", mac[i]);
    struct secret_mac *key = secret_mac_new("secret"), *other = secret_mac_new("other");
    ck_assert(key && other);
    ck_assert(webhook_signature_ok(hdr, body, strlen(body), key));
    ck_assert(webhook_signature_ok(hdr, body, strlen(body), key));   /* a key serves every body */
    ck_assert(!webhook_signature_ok(hdr, body, strlen(body), other));
    ck_assert(!webhook_signature_ok(hdr, body, strlen(body) - 1, key));
    ck_assert(webhook_signature_ok(hdr, body, strlen(body), key));   /* unchanged by a wrong one */
    ck_assert(!webhook_signature_ok("sha256=zz", body, strlen(body), key));
    ck_assert(!webhook_signature_ok(NULL, body, strlen(body), key));
    secret_mac_free(key);
    secret_mac_free(other);
}
END_TEST

START_TEST(metrics_text)
{
    struct metrics *m = calloc(1, sizeof *m);
    m->requests[ROUTE_WEBHOOK][200] = 3;
    m->duplicates = 2;
    metrics_observe(&m->latency[ROUTE_WEBHOOK], 0.003);
    struct metrics_gauges g = { .redis_up = 1, .pending = 4, .queued = 1, .oldest_age_s = 2.5 };
    struct evbuffer *out = evbuffer_new();
    ck_assert_int_eq(metrics_render(m, &g, "9.9", out), 0);
    evbuffer_add(out, "", 1);
    char *t = (char *)evbuffer_pullup(out, -1);
    ck_assert_ptr_nonnull(strstr(t, "waguard_build_info{version=\"9.9\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_http_requests_total{route=\"webhook\",code=\"200\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_http_request_duration_seconds_bucket{route=\"webhook\",le=\"0.005\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_http_request_duration_seconds_bucket{route=\"webhook\",le=\"0.0025\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_webhook_duplicates_total 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_identities_pending 4\n"));
    ck_assert_ptr_nonnull(strstr(t, "waguard_ack_queue_oldest_age_seconds 2.500\n"));
    evbuffer_free(out);
    free(m);
}
END_TEST

/* [hold]: a held category is refused for its hold time after the newest change,
 * acknowledged or not, unless an operator lifted it for that change. */
START_TEST(hold_after_change)
{
    char *tmpl[] = { "otp_login" };
    struct hold_category h = { .name = "authentication", .seconds = 600, .templates = tmpl, .ntemplates = 1 };
    struct gate_facts f = { .hash = "H", .state = GATE_ID_ACKNOWLEDGED, .last_in = NOW, .changed_ms = (NOW - 60) * 1000 };
    struct gate_ask ask = { .type = "template", .hold = &h };
    struct gate_decision d;
    gate_decide(&cfg, &f, &ask, NOW * 1000, &d);
    ck_assert(!d.allowed && d.reason[REASON_IDENTITY_RECENTLY_CHANGED]);
    ck_assert_int_eq(d.hold_until, NOW - 60 + 600);
    gate_decide(&cfg, &f, &ask, (NOW + 600) * 1000, &d);          /* the hold is over */
    ck_assert(d.allowed);
    f.hold_released = "999:*";                                       /* lifted for another change */
    gate_decide(&cfg, &f, &ask, NOW * 1000, &d);
    ck_assert(!d.allowed);
    char rel[64];
    snprintf(rel, sizeof rel, "%lld:authentication", (long long)(NOW - 60) * 1000);
    f.hold_released = rel;
    gate_decide(&cfg, &f, &ask, NOW * 1000, &d);
    ck_assert(d.allowed);
    ask.hold = NULL;                                                 /* other sends: unaffected */
    f.hold_released = NULL;
    gate_decide(&cfg, &f, &ask, NOW * 1000, &d);
    ck_assert(d.allowed);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gate");
    TCase *tc = tcase_create("decide");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, hold_after_change);
    tcase_add_test(tc, allowed_when_nothing_stands_in_the_way);
    tcase_add_test(tc, identity_unacknowledged);
    tcase_add_test(tc, session_window);
    tcase_add_test(tc, blocked_moved_and_contact);
    tcase_add_test(tc, store_unavailable);
    tcase_add_test(tc, decision_json_shape);
    tcase_add_test(tc, backoff_grows_capped_with_jitter);
    tcase_add_test(tc, signature);
    tcase_add_test(tc, metrics_text);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
