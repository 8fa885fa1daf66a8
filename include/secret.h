/* secret — a presented secret (an API or admin token, the webhook's token) compared with a
 * known one in a time that tells nothing of where they differ or how long either is: both
 * are compared by their SHA-256 digests, with CRYPTO_memcmp.  A known secret's digest is
 * made once, when the configuration is read (include/config.h), so that a request hashes
 * only what it presents, once, whatever the number of tokens it is checked against. */
#ifndef WAGUARD_SECRET_H
#define WAGUARD_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#define SECRET_DIGEST_LEN 32

/* The digest a secret of len bytes is compared by. */
void secret_digest(const char *s, size_t len, unsigned char out[SECRET_DIGEST_LEN]);
/* Whether two digests are the same, in constant time. */
bool secret_digest_equal(const unsigned char a[SECRET_DIGEST_LEN], const unsigned char b[SECRET_DIGEST_LEN]);
/* presented (plen bytes) against a known secret given as text (both are hashed). */
bool secret_equal(const char *presented, size_t plen, const char *known);

#endif
