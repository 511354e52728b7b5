/* rsa_keys.h - the customer's RSA key pair (signs router subscriptions). */
#ifndef IMP_RSA_KEYS_H
#define IMP_RSA_KEYS_H

#include "err.h"

/* Generate a 2048-bit RSA pair as PEM strings (PKCS#8 private key,
 * SubjectPublicKeyInfo public key); the caller frees both. */
int rsa_keypair_pem(char **priv, char **pub, err_t *e);

#endif
