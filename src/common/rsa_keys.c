#include "rsa_keys.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

static char *bio_string(BIO *b)
{
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)len + 1);
    if (out) {
        memcpy(out, data, (size_t)len);
        out[len] = '\0';
    }
    return out;
}

int rsa_keypair_pem(char **priv, char **pub, err_t *e)
{
    *priv = *pub = NULL;
    EVP_PKEY *k = EVP_RSA_gen(2048);
    BIO *bpriv = BIO_new(BIO_s_mem()), *bpub = BIO_new(BIO_s_mem());
    int rc = -1;
    if (!k || !bpriv || !bpub ||
        !PEM_write_bio_PrivateKey(bpriv, k, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_PUBKEY(bpub, k)) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        err_set(e, ERR_INTERNAL, "RSA key generation failed: %s", buf);
        goto out;
    }
    *priv = bio_string(bpriv);
    *pub = bio_string(bpub);
    if (!*priv || !*pub) {
        free(*priv);
        free(*pub);
        *priv = *pub = NULL;
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    rc = 0;
out:
    BIO_free(bpriv);
    BIO_free(bpub);
    EVP_PKEY_free(k);
    return rc;
}
