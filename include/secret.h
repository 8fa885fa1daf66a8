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
/* Whether two digests (or MACs) are the same, in constant time. */
bool secret_digest_equal(const unsigned char a[SECRET_DIGEST_LEN], const unsigned char b[SECRET_DIGEST_LEN]);
/* presented (plen bytes) against a known secret given by its digest. */
bool secret_matches(const char *presented, size_t plen, const unsigned char known[SECRET_DIGEST_LEN]);
/* presented (plen bytes) against a known secret given as text (both are hashed). */
bool secret_equal(const char *presented, size_t plen, const char *known);

/* An HMAC-SHA256 key made ready once (Meta's X-Hub-Signature-256 signs each webhook body
 * with the app secret): OpenSSL looks the MAC and the digest up and takes the key when the
 * configuration is read, not for every body (HMAC() does both each call, twice the cost
 * of the MAC itself).  Owned by whoever made it; secret_mac_free. */
struct secret_mac;
/* NULL when OpenSSL (or memory) fails. */
struct secret_mac *secret_mac_new(const char *key);
/* The MAC of body (len bytes) into out; false when OpenSSL fails.  m is not changed. */
bool secret_mac_sum(const struct secret_mac *m, const char *body, size_t len, unsigned char out[SECRET_DIGEST_LEN]);
void secret_mac_free(struct secret_mac *m);

#endif
