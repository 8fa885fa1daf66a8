/* fuzz_recipient — libFuzzer target for the recipient resolver (include/recipient.h).
 *
 * The first byte picks the home country code from a short list; the rest is the input as
 * a caller would give it.  Beyond "no crash, no leak, no undefined behaviour" it checks
 * what the gate script relies on:
 *   - an accepted input has 1 to RECIPIENT_FORMS forms, each a wa_id (1 to 15 digits, not
 *     starting with 0) or a user id (CC.alnum, up to 128), never empty;
 *   - recipient_spec() writes exactly "k:KEY" words with no space or control byte in a key
 *     (the script splits on spaces);
 *   - a refused input says why;
 *   - an input that is a handed-out id (recipient_from_whatsapp accepts it) is always
 *     accepted by recipient_parse, with that id among its forms (no wa_id WhatsApp gave
 *     can be looked up under another key only).
 * Replay one input: build/fuzz/fuzz_recipient FILE. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipient.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *rule, const char *in)
{
    fprintf(stderr, "fuzz_recipient: broken rule: %s\n  input: %s\n", rule, in);
    abort();
}

static int key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0)
        return 0;
    if (recipient_is_user_id(k))
        return 1;
    if (n > 15 || k[0] == '0')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)k[i]))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const ccs[] = { "1", "44", "91", "55", "49", "54", "52", "63", "62", "234" };
    if (size < 1 || size > 512)
        return 0;
    const char *cc = ccs[data[0] % (sizeof ccs / sizeof ccs[0])];
    char in[520];
    memcpy(in, data + 1, size - 1);
    in[size - 1] = '\0';
    if (strlen(in) != size - 1)
        return 0;               /* a NUL inside: a C string cannot carry it (the HTTP edge refuses %00) */

    struct recipient r;
    const char *why = NULL;
    int rc = recipient_parse(in, cc, &r, &why);
    char handed[RECIPIENT_MAX];
    int is_id = recipient_from_whatsapp(in, handed, NULL) == 0;
    if (rc != 0) {
        if (!why || !*why)
            broken("a refused input must say why", in);
        if (is_id)
            broken("an id WhatsApp could have handed out was refused as a recipient", in);
        return 0;
    }
    if (r.n < 1 || r.n > RECIPIENT_FORMS)
        broken("an accepted input has 1 to RECIPIENT_FORMS forms", in);
    int found = 0;
    for (int i = 0; i < r.n; i++) {
        if (r.form[i].kind != RECIPIENT_ID && r.form[i].kind != RECIPIENT_NUMBER)
            broken("a form of an unknown kind", in);
        if (!key_ok(r.form[i].key))
            broken("a form's key is not a wa_id or a user id", in);
        found |= strcmp(r.form[i].key, handed) == 0;
    }
    if (is_id && !found)
        broken("a handed-out id is not among its own forms", in);
    char spec[RECIPIENT_FORMS * (RECIPIENT_MAX + 4)];
    if (recipient_spec(&r, spec, sizeof spec) != 0)
        broken("the forms do not fit the spec buffer", in);
    for (const char *p = spec; *p; p++)
        if ((unsigned char)*p < 0x21 && *p != ' ')
            broken("a control byte in the spec", in);
    return 0;
}
