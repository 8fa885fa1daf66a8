/* recipient — who a recipient is: the one place that turns what callers and WhatsApp
 * say about a user into the names waguard keeps records under (its Lua half is
 * src/lua/users.lua).
 *
 * WhatsApp names a user by a wa_id (the international number's digits, no '+', no
 * country code added) or by a business-scoped user id ("CC." and up to 128 letters or
 * digits; a parent id is "CC.ENT." and the same).  A value that WhatsApp or the WABA
 * client handed out is that user, taken as it is.  A phone number that a person typed is
 * read by the contacts seed's rule (phone.h), and also names the wa_id that a contact
 * check mapped it to (kept in Redis).  So a caller's input becomes a short list of
 * *forms*, and the store turns the forms into the users they name and decides for the
 * strictest of those it knows: an input that could name more than one user never
 * allows more than the strictest of them would. */
#ifndef WAGUARD_RECIPIENT_H
#define WAGUARD_RECIPIENT_H

#include <stdbool.h>
#include <stddef.h>

#define RECIPIENT_USER_ID_MAX 128
/* "CC.ENT." (7) and 128, and a NUL */
#define RECIPIENT_MAX 136
#define RECIPIENT_FORMS 4          /* a number's readings (phone.h), and a send's "recipient" */

enum recipient_form_kind {
    RECIPIENT_ID = 'i',        /* a wa_id or user id, taken as it is */
    RECIPIENT_NUMBER = 'd',    /* a phone number's digits: the wa_id a contact check mapped
                                  it to, then the wa_id of the same digits */
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

/* A business-scoped user id: two upper-case letters, '.', optionally "ENT." (a parent
 * id), then 1 to 128 letters or digits. */
bool recipient_is_user_id(const char *s);
bool recipient_is_parent_id(const char *s);

/* A value WhatsApp or the WABA client handed out (from, wa_id, recipient_id, user_id, a
 * contact check's wa_id): 7 to 15 digits not starting with 0, or a user id; a leading
 * '+' is tolerated.  Writes it to out and returns 0, or returns -1 (why set when not
 * NULL) when it is neither. */
int recipient_from_whatsapp(const char *raw, char out[RECIPIENT_MAX], const char **why)
    __attribute__((warn_unused_result));

/* The user an answer's entry names ({"wa_id":…} or {"user_id":…}, as blocklists and block
 * answers give them): the wa_id if valid, else the user id, else a wa_id written as a
 * WhatsApp address ("16315551000@s.whatsapp.net"); with keep_any, any other printable
 * value of wa_id as it is (a blocklist keeps what the WABA client listed).  Returns 0,
 * or -1 when there is nothing to keep. */
struct cJSON;
int recipient_from_entry(const struct cJSON *entry, bool keep_any, char out[RECIPIENT_MAX])
    __attribute__((warn_unused_result));

/* A phone number as a person typed it, read by the seed's rule: the key of the
 * contact-check mapping.  Returns 0, or -1 with why. */
int recipient_dial(const char *raw, const char *home_cc, char out[RECIPIENT_MAX], const char **why)
    __attribute__((warn_unused_result));

/* A caller's input (a gate path, a send's "to" or "recipient", a CAMARA phoneNumber, a
 * block path, an operator's argument):
 *   - a user id: that user;
 *   - bare digits: the wa_id as it is (and the number of the same digits, which a
 *     contact check may have mapped), and the same digits dialled by the seed's rule;
 *   - a number with '+' or punctuation: its seed's reading, and the other readings of
 *     phone.h (each a form the store considers as well).
 * Whitespace before or after, control characters, or anything longer than a user id
 * are refused: an input is read exactly one way or not at all.  Returns 0 with out
 * filled (at least one form), or -1 with why when the input can name no one. */
int recipient_parse(const char *in, const char *home_cc, struct recipient *out, const char **why)
    __attribute__((warn_unused_result));

/* The one form of a name WhatsApp handed out (taken as it is). */
void recipient_exact(const char *id, struct recipient *out);

/* The forms as the store's functions take them: "i:KEY d:KEY".  Returns 0, or -1 when buf
 * is too small (RECIPIENT_SPEC_MAX always fits). */
#define RECIPIENT_SPEC_MAX (RECIPIENT_FORMS * (RECIPIENT_MAX + 4))
int recipient_spec(const struct recipient *r, char *buf, size_t len) __attribute__((warn_unused_result));

#endif
