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

/* SHA-256 made ready once, as the MAC below: OpenSSL looks the digest up when the
 * configuration is read, and its context is kept from digest to digest.  SHA256() looks
 * it up and makes a context on every call: for a token, that is more than the hashing
 * (about 5,600 instructions a token against 3,000).  A digest changes its context: one
 * loop uses it, one digest at a time.  Owned by whoever made it; secret_sha_free. */
struct secret_sha;
/* NULL when OpenSSL (or memory) fails. */
struct secret_sha *secret_sha_new(void);
void secret_sha_free(struct secret_sha *h);

/* The digest a secret of len bytes is compared by, into out; false when OpenSSL fails
 * (out is then all zero, and the caller must refuse: nothing was compared). */
bool secret_digest(struct secret_sha *h, const char *s, size_t len, unsigned char out[SECRET_DIGEST_LEN])
    __attribute__((warn_unused_result));
/* Whether two digests (or MACs) are the same, in constant time. */
bool secret_digest_equal(const unsigned char a[SECRET_DIGEST_LEN], const unsigned char b[SECRET_DIGEST_LEN]);
/* presented (plen bytes) against a known secret given by its digest (false, too, when
 * OpenSSL fails). */
bool secret_matches(struct secret_sha *h, const char *presented, size_t plen, const unsigned char known[SECRET_DIGEST_LEN]);
/* presented (plen bytes) against a known secret given as text (both are hashed). */
bool secret_equal(struct secret_sha *h, const char *presented, size_t plen, const char *known);

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
