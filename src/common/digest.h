/* digest.h - a keyed BLAKE2b digest of a list of strings (libsodium), for
 * the API's caches: the key is random per process, so digests cannot be
 * predicted from outside, and each string's length is hashed before it, so
 * no two lists hash the same bytes by moving characters between strings. */
#ifndef IMP_DIGEST_H
#define IMP_DIGEST_H

#include <sodium.h>

#define DIGEST_BYTES 32
#define DIGEST_KEY_BYTES crypto_generichash_KEYBYTES

/* `parts` may hold NULLs, which hash differently from "". */
void digest_parts(const unsigned char key[DIGEST_KEY_BYTES], const char *const *parts, int n,
                  unsigned char out[DIGEST_BYTES]);

#endif
