/* secret — see include/secret.h */
#include "secret.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

void secret_digest(const char *s, size_t len, unsigned char out[SECRET_DIGEST_LEN])
{
    SHA256((const unsigned char *)s, len, out);
}

bool secret_digest_equal(const unsigned char a[SECRET_DIGEST_LEN], const unsigned char b[SECRET_DIGEST_LEN])
{
    return CRYPTO_memcmp(a, b, SECRET_DIGEST_LEN) == 0;
}

bool secret_equal(const char *presented, size_t plen, const char *known)
{
    unsigned char a[SECRET_DIGEST_LEN], b[SECRET_DIGEST_LEN];
    secret_digest(presented, plen, a);
    secret_digest(known, strlen(known), b);
    return secret_digest_equal(a, b);
}
