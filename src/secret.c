/* secret — see include/secret.h */
#include "secret.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

struct secret_sha {
    EVP_MD *md;            /* SHA-256, fetched once */
    EVP_MD_CTX *ctx;       /* set up again for each digest */
};

struct secret_sha *secret_sha_new(void)
{
    struct secret_sha *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = h->md ? EVP_MD_CTX_new() : NULL;
    if (!h->ctx) {
        secret_sha_free(h);
        return NULL;
    }
    return h;
}

void secret_sha_free(struct secret_sha *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h);
}

bool secret_digest(struct secret_sha *h, const char *s, size_t len, unsigned char out[SECRET_DIGEST_LEN])
{
    unsigned int n = 0;
    if (h && EVP_DigestInit_ex2(h->ctx, h->md, NULL) && EVP_DigestUpdate(h->ctx, s, len) &&
        EVP_DigestFinal_ex(h->ctx, out, &n) && n == SECRET_DIGEST_LEN)
        return true;
    memset(out, 0, SECRET_DIGEST_LEN);
    return false;
}

bool secret_digest_equal(const unsigned char a[SECRET_DIGEST_LEN], const unsigned char b[SECRET_DIGEST_LEN])
{
    return CRYPTO_memcmp(a, b, SECRET_DIGEST_LEN) == 0;
}

bool secret_matches(struct secret_sha *h, const char *presented, size_t plen, const unsigned char known[SECRET_DIGEST_LEN])
{
    unsigned char d[SECRET_DIGEST_LEN];
    return secret_digest(h, presented, plen, d) && secret_digest_equal(d, known);
}

bool secret_equal(struct secret_sha *h, const char *presented, size_t plen, const char *known)
{
    unsigned char k[SECRET_DIGEST_LEN];
    return secret_digest(h, known, strlen(known), k) && secret_matches(h, presented, plen, k);
}

struct secret_mac {
    EVP_MAC *mac;
    EVP_MAC_CTX *keyed;       /* initialised with the key: each sum works on a copy */
};

struct secret_mac *secret_mac_new(const char *key)
{
    struct secret_mac *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                            OSSL_PARAM_construct_end() };
    m->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    m->keyed = m->mac ? EVP_MAC_CTX_new(m->mac) : NULL;
    if (!m->keyed || !EVP_MAC_init(m->keyed, (const unsigned char *)key, strlen(key), params)) {
        secret_mac_free(m);
        return NULL;
    }
    return m;
}

bool secret_mac_sum(const struct secret_mac *m, const char *body, size_t len, unsigned char out[SECRET_DIGEST_LEN])
{
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_dup(m->keyed) : NULL;     /* no key: no MAC, refused */
    size_t n = 0;
    bool ok = c && EVP_MAC_update(c, (const unsigned char *)body, len) &&
              EVP_MAC_final(c, out, &n, SECRET_DIGEST_LEN) && n == SECRET_DIGEST_LEN;
    EVP_MAC_CTX_free(c);
    return ok;
}

void secret_mac_free(struct secret_mac *m)
{
    if (!m)
        return;
    EVP_MAC_CTX_free(m->keyed);
    EVP_MAC_free(m->mac);
    free(m);
}
