/* Unit tests: webhook_parse — envelopes, item handlers and dead letters. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook_parse.h"
#include "unit.h"

static struct webhook_batch b;

static int parse(const char *body)
{
    char why[160];
    return webhook_parse(body, strlen(body), "1", &b, why, sizeof why);
}

/* The operations as objects {"k":kind, field:value…} (every value a string, as the
 * apply function reads them), made anew after each parse. */
static cJSON *view;

static const cJSON *op_at(int i)
{
    if (!view) {
        view = cJSON_CreateArray();
        enum op_kind k;
        const char *f[OPS_FIELDS_MAX];
        for (size_t at = ops_next(&b.ops, 0, &k, f); at; at = ops_next(&b.ops, at, &k, f)) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "k", ops_kind_name(k));
            for (int j = 0; j < ops_arity(k); j++)
                cJSON_AddStringToObject(o, ops_field_name(k, j), f[j]);
            cJSON_AddItemToArray(view, o);
        }
    }
    return cJSON_GetArrayItem(view, i);
}

static const char *s_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double n_of(const cJSON *o, const char *k)
{
    return strtod(s_of(o, k), NULL);
}

static void teardown(void)
{
    webhook_batch_free(&b);
    cJSON_Delete(view);
    view = NULL;
}

START_TEST(not_an_object)
{
    char why[160] = "";
    ck_assert_int_eq(webhook_parse("[1,2]", 5, "1", &b, why, sizeof why), -1);
    ck_assert_str_eq(why, "the body is not a JSON object");
    ck_assert_int_eq(webhook_parse("{\"a\":", 5, "1", &b, why, sizeof why), -1);
    ck_assert_int_eq(webhook_parse("", 0, "1", &b, why, sizeof why), -1);
    ck_assert_int_eq(webhook_parse("\"x\"", 3, "1", &b, why, sizeof why), -1);
    /* a second value after the first: cJSON alone would read {} and drop the change */
    const char *two = "{} {\"messages\":[{\"from\":\"16315551234\",\"id\":\"m\",\"type\":\"system\","
                      "\"system\":{\"type\":\"user_identity_changed\",\"identity\":\"H=\"}}]}";
    ck_assert_int_eq(webhook_parse(two, strlen(two), "1", &b, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "more than one JSON value"));
    ck_assert_int_eq(webhook_parse("{} \r\n", 5, "1", &b, why, sizeof why), 0);    /* whitespace after is none */
}
END_TEST

/* Whether the operations close user w's gate until its hash is known. */
static int closed(const char *w)
{
    int n = 0;
    for (int i = 0; op_at(i); i++)
        if (strcmp(s_of(op_at(i), "k"), "unk") == 0 && strcmp(s_of(op_at(i), "w"), w) == 0)
            n++;
    return n > 0;
}

/* A key twice: the object holding it is a dead letter (cJSON would take the first, another
 * reader the last), whatever level it is at; the rest of the body is applied. */
START_TEST(key_twice_is_a_dead_letter)
{
    const char *chg = "{\"from\":\"%s\",\"id\":\"m%s\",\"timestamp\":\"1602535238\",\"type\":\"system\","
                      "\"system\":{\"body\":\"x\",\"customer\":\"%s\",\"identity\":\"H%s=\","
                      "\"type\":\"user_identity_changed\"}}";
    char a[512], c2[512], body[2048];
    snprintf(a, sizeof a, chg, "447700900001", "1", "447700900001", "1");
    snprintf(c2, sizeof c2, chg, "919876543210", "2", "919876543210", "2");
    /* the envelope: "messages" twice at the top */
    snprintf(body, sizeof body, "{\"messages\":[%s],\"messages\":[%s]}", a, c2);
    ck_assert_int_eq(parse(body), 0);
    ck_assert_str_eq(s_of(op_at(0), "k"), "dead");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(0), "reason"), "\"messages\" appears twice"));
    ck_assert_int_eq(b.dead, 1);
    ck_assert_int_eq(b.identities, 0);
    /* ... and either reading's identity change closes its user's gate until the hash is known */
    ck_assert_int_eq(closed("447700900001"), 1);
    ck_assert_int_eq(closed("919876543210"), 1);
    teardown();
    /* one item with "from" twice: that item alone, the gates of both its senders closed;
     * the other change is applied */
    char bad[600];
    snprintf(bad, sizeof bad, "{\"from\":\"5511912345678\",%s", a + 1);
    snprintf(body, sizeof body, "{\"messages\":[%s,%s]}", bad, c2);
    ck_assert_int_eq(parse(body), 0);
    ck_assert_str_eq(s_of(op_at(0), "k"), "dead");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(0), "reason"), "\"from\" appears twice"));
    ck_assert_int_eq(closed("5511912345678"), 1);
    ck_assert_int_eq(closed("447700900001"), 1);
    ck_assert_int_eq(closed("919876543210"), 0);
    const cJSON *last = NULL;
    for (int i = 0; op_at(i); i++)
        last = op_at(i);
    ck_assert_str_eq(s_of(last, "k"), "id");
    ck_assert_str_eq(s_of(last, "w"), "919876543210");
    ck_assert_int_eq(b.identities, 1);
    teardown();
    /* an ordinary inbound text read two ways changes no gate: it is no identity change */
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"16315551234\",\"from\":\"16315551235\",\"id\":\"t\","
                           "\"type\":\"text\"}]}"), 0);
    ck_assert_int_eq(b.ops.count, 1);
    teardown();
    /* a Cloud contact whose identity_key_hash is there twice: its sender's message gives no
     * hash from it, and the sender waits for one */
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{"
                           "\"contacts\":[{\"wa_id\":\"2348031234567\",\"identity_key_hash\":\"A=\","
                           "\"identity_key_hash\":\"B=\"}],\"messages\":[{\"from\":\"2348031234567\","
                           "\"id\":\"wamid.n\",\"timestamp\":\"1700000000\",\"type\":\"text\"}]}}]}]}"), 0);
    ck_assert_int_eq(closed("2348031234567"), 1);
    ck_assert_int_eq(b.identities, 0);
    teardown();
    /* Cloud: a change with "value" twice; a value with "contacts" twice */
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":["
                           "{\"field\":\"messages\",\"value\":{},\"value\":{}},"
                           "{\"field\":\"messages\",\"value\":{\"contacts\":[],\"contacts\":[]}}]}]}"), 0);
    ck_assert_int_eq(b.ops.count, 2);
    ck_assert_int_eq(b.dead, 2);
}
END_TEST

/* A system object says what a message is when no type does: a change without "type". */
START_TEST(system_message_without_type)
{
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"819012345678\",\"id\":\"m1\",\"timestamp\":\"1602535238\","
                           "\"system\":{\"customer\":\"819012345678\",\"identity\":\"JP1=\","
                           "\"type\":\"user_identity_changed\"}}]}"), 0);
    ck_assert_int_eq(b.ops.count, 1);
    ck_assert_str_eq(s_of(op_at(0), "k"), "id");
    ck_assert_str_eq(s_of(op_at(0), "w"), "819012345678");
    ck_assert_int_eq(b.identities, 1);
}
END_TEST

/* A body of many items nobody can read keeps the first 100 and one saying how many more:
 * a bounded write, and still every item's count. */
START_TEST(dead_letters_bounded)
{
    enum { N = 250 };
    char body[N * 4 + 64];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"messages\":[");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "%s0", i ? "," : "");
    snprintf(body + n, sizeof body - n, "],\"statuses\":[7]}");
    ck_assert_int_eq(parse(body), 0);
    ck_assert_int_eq(b.dead, 101);
    ck_assert_int_eq(b.ops.count, 101);
    ck_assert_ptr_nonnull(strstr(s_of(op_at(100), "reason"), "151 more items"));
}
END_TEST

START_TEST(cloud_entry_not_an_array)
{
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\",\"entry\":{\"changes\":[{\"field\":"
                           "\"messages\",\"value\":{\"messages\":[]}}]}}"), 0);
    ck_assert_int_eq(b.ops.count, 1);
    ck_assert_str_eq(s_of(op_at(0), "k"), "dead");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(0), "reason"), "without an entry array"));
    teardown();
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\"}"), 0);
    ck_assert_int_eq(b.dead, 1);
}
END_TEST

/* A long contacts array is looked up through an index: the same contact as one by one
 * (the first that names the sender by wa_id or user id), for every message. */
START_TEST(many_contacts_indexed)
{
    enum { N = 40 };
    size_t cap = 64 * 1024;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":"
                                "[{\"field\":\"messages\",\"value\":{\"contacts\":[");
    for (int i = 0; i < N; i++)      /* contact i: wa_id 4477009000<i>, user id GB.<i>, key K<i>= */
        n += (size_t)snprintf(body + n, cap - n, "%s{\"wa_id\":\"4477009%05d\",\"user_id\":\"GB.%d\","
                              "\"identity_key_hash\":\"K%d=\"}", i ? "," : "", i, 7000 + i, i);
    /* a later contact for user 5 again: the first one found wins, as one by one */
    n += (size_t)snprintf(body + n, cap - n, ",{\"wa_id\":\"4477009%05d\",\"identity_key_hash\":\"LATE=\"}", 5);
    n += (size_t)snprintf(body + n, cap - n, "],\"messages\":[");
    const int from[] = { 37, 5, 0 };
    for (int i = 0; i < 3; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s{\"from\":\"4477009%05d\",\"id\":\"wamid.%d\",\"timestamp\":"
                              "\"1700000000\",\"type\":\"text\"}", i ? "," : "", from[i], i);
    /* by user id alone (a phone-hidden sender), and one nobody lists */
    n += (size_t)snprintf(body + n, cap - n, ",{\"from_user_id\":\"GB.%d\",\"id\":\"wamid.u\",\"timestamp\":"
                          "\"1700000000\",\"type\":\"text\"},{\"from\":\"5511912345678\",\"id\":\"wamid.x\","
                          "\"timestamp\":\"1700000000\",\"type\":\"text\"}]}}]}]}", 7012);
    ck_assert_int_eq(parse(body), 0);
    free(body);
    const char *want[] = { "K37=", "K5=", "K0=", "K12=" };
    int found = 0;
    for (int i = 0; op_at(i); i++) {
        if (strcmp(s_of(op_at(i), "k"), "id") != 0)
            continue;
        ck_assert_int_lt(found, 4);
        ck_assert_str_eq(s_of(op_at(i), "h"), want[found]);
        found++;
    }
    ck_assert_int_eq(found, 4);
}
END_TEST

START_TEST(identity_change_customer)
{
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"16315551234\",\"id\":\"m1\",\"timestamp\":\"1602535238\","
                           "\"type\":\"system\",\"system\":{\"body\":\"x\",\"customer\":\"16315551234\","
                           "\"identity\":\"Rc/eg9RQ0JA=\",\"type\":\"user_identity_changed\"}}]}"), 0);
    ck_assert_int_eq(b.ops.count, 1);
    const cJSON *o = op_at(0);
    ck_assert_str_eq(s_of(o, "k"), "id");
    ck_assert_str_eq(s_of(o, "w"), "16315551234");
    ck_assert_str_eq(s_of(o, "h"), "Rc/eg9RQ0JA=");
    ck_assert_double_eq(n_of(o, "t"), 1602535238000.0);
    ck_assert_str_eq(s_of(o, "src"), "system");
    ck_assert_str_eq(s_of(o, "mid"), "m1");
    ck_assert_int_eq(b.identities, 1);
}
END_TEST

START_TEST(identity_change_user_then_from)
{
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"111\",\"id\":\"m1\",\"timestamp\":1602535238,"
                           "\"type\":\"system\",\"system\":{\"user\":\"16315550001\",\"identity\":\"H1\","
                           "\"type\":\"user_identity_changed\"}},"
                           "{\"from\":\"16315550002\",\"id\":\"m2\",\"timestamp\":\"1602535239\",\"type\":\"system\","
                           "\"system\":{\"identity\":\"H2\",\"type\":\"user_identity_changed\"}}]}"), 0);
    ck_assert_str_eq(s_of(op_at(0), "w"), "16315550001");
    ck_assert_str_eq(s_of(op_at(1), "w"), "16315550002");
}
END_TEST

START_TEST(identity_change_incomplete_is_dead)
{
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"16315551234\",\"id\":\"m1\",\"timestamp\":\"1\","
                           "\"type\":\"system\",\"system\":{\"type\":\"user_identity_changed\"}},"
                           "{\"from\":\"16315551234\",\"id\":\"m2\",\"type\":\"system\","
                           "\"system\":{\"identity\":\"H\",\"type\":\"user_identity_changed\"}}]}"), 0);
    ck_assert_int_eq(b.dead, 2);
    ck_assert_str_eq(s_of(op_at(0), "k"), "dead");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(0), "reason"), "system.identity"));
    /* the user's gate closes all the same, until the hash is known */
    ck_assert_str_eq(s_of(op_at(1), "k"), "unk");
    ck_assert_str_eq(s_of(op_at(1), "w"), "16315551234");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(2), "reason"), "timestamp"));
    ck_assert_ptr_nonnull(strstr(s_of(op_at(2), "item"), "\"m2\""));
    ck_assert_str_eq(s_of(op_at(3), "k"), "unk");
}
END_TEST

START_TEST(inbound_with_identity)
{
    ck_assert_int_eq(parse("{\"contacts\":[{\"profile\":{\"name\":\"Ann\"},\"wa_id\":\"16315551234\"}],"
                           "\"messages\":[{\"from\":\"16315551234\",\"id\":\"m9\",\"timestamp\":\"1700000000\","
                           "\"type\":\"text\",\"text\":{\"body\":\"hi\"},\"identity\":{\"acknowledged\":true,"
                           "\"created_timestamp\":1602535238123,\"hash\":\"H9\"}}]}"), 0);
    ck_assert_int_eq(b.ops.count, 3);
    ck_assert_str_eq(s_of(op_at(0), "k"), "prof");
    ck_assert_str_eq(s_of(op_at(0), "name"), "Ann");
    ck_assert_str_eq(s_of(op_at(1), "k"), "in");
    ck_assert_double_eq(n_of(op_at(1), "t"), 1700000000000.0);
    ck_assert_str_eq(s_of(op_at(1), "type"), "text");
    const cJSON *id = op_at(2);
    ck_assert_str_eq(s_of(id, "k"), "id");
    ck_assert_str_eq(s_of(id, "src"), "message");
    ck_assert_double_eq(n_of(id, "t"), 1602535238123.0);
    ck_assert_str_eq(s_of(id, "ack"), "1");
}
END_TEST

START_TEST(number_change_and_other_system)
{
    ck_assert_int_eq(parse("{\"messages\":[{\"from\":\"16315551234\",\"id\":\"m1\",\"timestamp\":\"5\",\"type\":\"system\","
                           "\"system\":{\"body\":\"changed\",\"new_wa_id\":\"16315559999\",\"type\":\"user_changed_number\"}},"
                           "{\"from\":\"16315551234\",\"id\":\"m2\",\"type\":\"system\",\"system\":{\"type\":\"something_new\"}}]}"), 0);
    ck_assert_str_eq(s_of(op_at(0), "k"), "num");
    ck_assert_str_eq(s_of(op_at(0), "w"), "16315551234");
    ck_assert_str_eq(s_of(op_at(0), "nw"), "16315559999");
    ck_assert_str_eq(s_of(op_at(1), "k"), "sys");
    ck_assert_str_eq(s_of(op_at(1), "st"), "something_new");
}
END_TEST

START_TEST(contact_checks)
{
    ck_assert_int_eq(parse("{\"contacts\":[{\"input\":\"+1 631 555 1001\",\"status\":\"valid\",\"wa_id\":\"16315551001\"},"
                           "{\"input\":\"6315551002\",\"status\":\"invalid\"},"
                           "{\"input\":\"+163155588\",\"status\":\"failed\"},"
                           "{\"input\":\"6315551003\",\"status\":\"weird\"}]}"), 0);
    ck_assert_str_eq(s_of(op_at(0), "k"), "cc");
    ck_assert_str_eq(s_of(op_at(0), "in"), "16315551001");
    ck_assert_str_eq(s_of(op_at(0), "w"), "16315551001");
    ck_assert_str_eq(s_of(op_at(1), "in"), "16315551002");
    ck_assert_str_eq(s_of(op_at(1), "w"), "");
    ck_assert_str_eq(s_of(op_at(1), "st"), "invalid");
    ck_assert_str_eq(s_of(op_at(2), "st"), "failed");
    ck_assert_str_eq(s_of(op_at(3), "k"), "dead");
    ck_assert_int_eq(b.items, 3);
    ck_assert_int_eq(b.dead, 1);
}
END_TEST

START_TEST(statuses_errors_and_bad_arrays)
{
    ck_assert_int_eq(parse("{\"statuses\":[{\"id\":\"s1\",\"recipient_id\":\"16315551234\",\"status\":\"failed\","
                           "\"timestamp\":\"9\",\"errors\":[{\"code\":480,\"title\":\"x\"}]},{\"status\":\"sent\"}],"
                           "\"errors\":[{\"code\":1000,\"title\":\"Generic\",\"details\":\"d\"},7],"
                           "\"messages\":{\"not\":\"an array\"}}"), 0);
    /* messages come before statuses and errors */
    ck_assert_str_eq(s_of(op_at(0), "k"), "dead");
    ck_assert_ptr_nonnull(strstr(s_of(op_at(0), "reason"), "messages is not an array"));
    ck_assert_str_eq(s_of(op_at(1), "k"), "st");
    ck_assert_str_eq(s_of(op_at(1), "codes"), "480");
    ck_assert_str_eq(s_of(op_at(2), "k"), "dead");
    ck_assert_str_eq(s_of(op_at(3), "k"), "err");
    ck_assert_double_eq(n_of(op_at(3), "code"), 1000.0);
    ck_assert_str_eq(s_of(op_at(4), "k"), "dead");
}
END_TEST

START_TEST(cloud_envelope)
{
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"W\",\"changes\":["
                           "{\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\","
                           "\"messages\":[{\"from\":\"16315551234\",\"id\":\"wamid.1\",\"timestamp\":\"1\",\"type\":\"text\"}],"
                           "\"statuses\":[{\"id\":\"wamid.2\",\"status\":\"read\",\"recipient_id\":\"16315551234\"}]}},"
                           "{\"field\":\"messages\"}]}]}"), 0);
    ck_assert_int_eq(b.ops.count, 3);
    ck_assert_str_eq(s_of(op_at(0), "k"), "in");
    ck_assert_str_eq(s_of(op_at(1), "k"), "st");
    ck_assert_str_eq(s_of(op_at(2), "k"), "dead");
}
END_TEST

START_TEST(cloud_identity_key_hash)
{
    ck_assert_int_eq(parse("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{"
                           "\"contacts\":[{\"profile\":{\"name\":\"B\"},\"wa_id\":\"16315551234\","
                           "\"identity_key_hash\":\"K1\"}],"
                           "\"messages\":[{\"from\":\"16315551234\",\"id\":\"wamid.1\",\"timestamp\":\"1700000000\","
                           "\"type\":\"text\"}],"
                           "\"statuses\":[{\"id\":\"wamid.3\",\"status\":\"sent\",\"recipient_id\":\"16315551234\","
                           "\"timestamp\":\"1700000001\",\"recipient_identity_key_hash\":\"K2\"}]}}]}]}"), 0);
    ck_assert_int_eq(b.ops.count, 5);
    ck_assert_str_eq(s_of(op_at(0), "k"), "prof");
    ck_assert_str_eq(s_of(op_at(1), "k"), "in");
    const cJSON *id1 = op_at(2);
    ck_assert_str_eq(s_of(id1, "k"), "id");
    ck_assert_str_eq(s_of(id1, "src"), "cloud");
    ck_assert_str_eq(s_of(id1, "h"), "K1");
    ck_assert_str_eq(s_of(id1, "mid"), "wamid.1");          /* a duplicate message brings nothing back */
    ck_assert_double_eq(n_of(id1, "t"), 1700000000000.0);   /* ordered by the message's time */
    ck_assert_str_eq(s_of(op_at(3), "k"), "st");
    ck_assert_str_eq(s_of(op_at(4), "h"), "K2");
    ck_assert_str_eq(s_of(op_at(4), "mid"), "st:wamid.3:sent");
    ck_assert_int_eq(b.identities, 2);
}
END_TEST

START_TEST(empty_object)
{
    ck_assert_int_eq(parse("{}"), 0);
    ck_assert_int_eq(b.ops.count, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("webhook_parse");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, not_an_object);
    tcase_add_test(tc, key_twice_is_a_dead_letter);
    tcase_add_test(tc, cloud_entry_not_an_array);
    tcase_add_test(tc, system_message_without_type);
    tcase_add_test(tc, dead_letters_bounded);
    tcase_add_test(tc, many_contacts_indexed);
    tcase_add_test(tc, identity_change_customer);
    tcase_add_test(tc, identity_change_user_then_from);
    tcase_add_test(tc, identity_change_incomplete_is_dead);
    tcase_add_test(tc, inbound_with_identity);
    tcase_add_test(tc, number_change_and_other_system);
    tcase_add_test(tc, contact_checks);
    tcase_add_test(tc, statuses_errors_and_bad_arrays);
    tcase_add_test(tc, cloud_envelope);
    tcase_add_test(tc, cloud_identity_key_hash);
    tcase_add_test(tc, empty_object);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
