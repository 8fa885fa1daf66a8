/* recipient — who a recipient is: the one place that turns what callers and WhatsApp
 * say about a user into the names waguard keeps records under.
 *
 * WhatsApp names a user by a wa_id (the international number's digits, no '+', no
 * country code added) or by a business-scoped user id ("CC.…", Cloud API, up to 128
 * characters after the dot).  A value that WhatsApp or the WABA client handed out is
 * that user, taken as it is.  A dialable phone number that a person typed goes through
 * the contacts seed's rule (phone.h), and then through the contact-check mapping that
 * waguard recorded (normalised number → wa_id), which lives in Redis: so a caller's
 * input becomes a short list of *forms*, and the store turns the forms into the users
 * they name (src/lua/gate.lua) and decides for the strictest of those it knows. */
#ifndef WAGUARD_RECIPIENT_H
#define WAGUARD_RECIPIENT_H

#include <stdbool.h>
#include <stddef.h>

/* A wa_id (7 to 15 digits) or a user id ("CC." and up to 128 letters or digits). */
#define RECIPIENT_MAX 136
#define RECIPIENT_USER_ID_MAX 128
#define RECIPIENT_FORMS 2

enum recipient_form_kind {
    RECIPIENT_ID = 'i',        /* a wa_id or user id, taken as it is */
    RECIPIENT_DIALLED = 'd',   /* a normalised dialled number: itself, or the wa_id it maps to */
};

struct recipient_form {
    enum recipient_form_kind kind;
    char key[RECIPIENT_MAX];
};

/* Every user one input could name, most likely first. */
struct recipient {
    int n;
    struct recipient_form form[RECIPIENT_FORMS];
};

/* True for a business-scoped user id: two upper-case letters, '.', 1 to 128 letters
 * or digits. */
bool recipient_is_user_id(const char *s);

/* A value WhatsApp or the WABA client handed out (from, wa_id, recipient_id, user_id,
 * a contact check's wa_id): 7 to 15 digits not starting with 0, or a user id; a
 * leading '+' is tolerated.  Writes it to out and returns 0, or returns -1 (why set
 * when not NULL) when it is neither. */
int recipient_from_whatsapp(const char *raw, char out[RECIPIENT_MAX], const char **why)
    __attribute__((warn_unused_result));

/* The user an answer's entry names ({"wa_id":…} or {"user_id":…}, as blocklists and
 * block answers give them): the wa_id if valid, else the user id.  Returns 0, or -1
 * when neither is there. */
struct cJSON;
int recipient_from_entry(const struct cJSON *entry, char out[RECIPIENT_MAX]) __attribute__((warn_unused_result));

/* A dialable phone number as a person typed it, normalised by the seed's rule (the
 * key of the contact-check mapping).  Returns 0, or -1 with why. */
int recipient_dial(const char *raw, const char *home_cc, char out[RECIPIENT_MAX], const char **why)
    __attribute__((warn_unused_result));

/* A caller's input (a gate path, a send's "to", a CAMARA phoneNumber, a block path):
 *   - a user id: that user (RECIPIENT_ID);
 *   - bare digits: the wa_id as it is, and the same digits dialled from home_cc;
 *   - '+', "00" or punctuation: a dialled number only (its digits are also the wa_id
 *     of a user with that number, which the store considers as well).
 * Returns 0 with out filled (at least one form), or -1 with why when the input can
 * name no one. */
int recipient_parse(const char *in, const char *home_cc, struct recipient *out, const char **why)
    __attribute__((warn_unused_result));

/* The forms as the gate script takes them: "i:KEY d:KEY".  Returns 0, or -1 when buf
 * is too small (RECIPIENT_SPEC_MAX always fits). */
#define RECIPIENT_SPEC_MAX (RECIPIENT_FORMS * (RECIPIENT_MAX + 4))
int recipient_spec(const struct recipient *r, char *buf, size_t len) __attribute__((warn_unused_result));

#endif
