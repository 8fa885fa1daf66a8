/* jsonx — a JSON request body read exactly one way.
 *
 * cJSON keeps the first of two equal keys, ignores what follows the first value, and
 * ends a string at an escaped NUL ("\u0000"); other parsers (the WABA client's, Graph's)
 * may take the last key, the whole body or the whole string.  A body that can be read
 * two ways could be decided for one user and delivered to another, so a request body is
 * refused when it holds any of these.  A webhook is read with jsonx_parse_one: a body
 * that is more than one value is refused, but a key twice makes only the object holding
 * it an item nobody can read (kept as a dead letter, the rest applied), and its strings
 * are what users typed (a NUL in one user's text must not keep another's change out). */
#ifndef WAGUARD_JSONX_H
#define WAGUARD_JSONX_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Parses body[0, len): one JSON value and nothing after it but whitespace, no key twice
 * in one object anywhere, no NUL inside a string.  Returns the value (the caller frees
 * it), or NULL with why (a sentence for the caller's developer). */
cJSON *jsonx_parse(const char *body, size_t len, char *why, size_t whylen);
/* Parses body[0, len): one JSON value and nothing after it but whitespace; keys twice
 * and NULs in strings are left to the caller (jsonx_duplicate_key, jsonx_own_duplicate).
 * Returns the value (the caller frees it), or NULL with why. */
cJSON *jsonx_parse_one(const char *body, size_t len, char *why, size_t whylen);

/* The first key that appears twice among object v's own keys (not its members'), or NULL. */
const char *jsonx_own_duplicate(const cJSON *v);

/* The first key that appears twice in one object anywhere in v, or NULL. */
const char *jsonx_duplicate_key(const cJSON *v);

/* Adds the integer v to obj as name, written exactly.  (cJSON 1.7.15 writes every
 * number with "%1.15g" and reads it back with sscanf to check it: a tenth of an
 * answer's CPU on the hot paths.)  name is a string constant (a literal): obj keeps the
 * pointer, not a copy.  Returns the item, or NULL (out of memory: obj without it, as
 * cJSON_AddNumberToObject leaves it). */
cJSON *jsonx_add_int(cJSON *obj, const char *name, long long v);

#endif
