/* digest.c - see digest.h. */
#include "digest.h"

#include <string.h>

void digest_parts(const unsigned char key[DIGEST_KEY_BYTES], const char *const *parts, int n,
                  unsigned char out[DIGEST_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, key, DIGEST_KEY_BYTES, DIGEST_BYTES);
    for (int i = 0; i < n; i++) {
        /* All ones stands for NULL: no string has that length. */
        unsigned long long len = parts[i] ? strlen(parts[i]) : ~0ULL;
        crypto_generichash_update(&st, (const unsigned char *)&len, sizeof len);
        if (parts[i])
            crypto_generichash_update(&st, (const unsigned char *)parts[i], len);
    }
    crypto_generichash_final(&st, out, DIGEST_BYTES);
}
