/* resp_cache.h - answers to repeated customer GETs, kept until the data
 * changes.
 *
 * A cached answer is keyed by a keyed BLAKE2b digest of everything the
 * answer depends on besides the database (the path, the credentials
 * headers, whether the client is curl) and tagged with the data's version
 * (db.h's DB_FEED_WRITES, db_pool_version) read before the answer's
 * snapshot was taken.  Any committed write moves the version, in whichever
 * process of a shared database it ran, so an entry can only be served
 * while nothing at all has changed since it was built; a password change
 * is a write too, so stale credentials can never be answered from it.  The
 * digest stands for the credentials: they are not kept. */
#ifndef IMP_RESP_CACHE_H
#define IMP_RESP_CACHE_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#define RESP_CACHE_KEY 32 /* DIGEST_BYTES */

typedef struct resp_cache resp_cache_t;
typedef struct resp_entry resp_entry_t;

/* Entries live at most `ttl` seconds (the auth cache's: a hit skips the
 * password check) and take at most `max_bytes` of bodies in all.  ttl <= 0
 * or max_bytes == 0 gives a cache that keeps nothing.  NULL: out of memory. */
resp_cache_t *resp_cache_new(int ttl, size_t max_bytes);
void resp_cache_free(resp_cache_t *c);
bool resp_cache_enabled(const resp_cache_t *c);

/* The key of `n` strings (NULL allowed, distinct from ""). */
void resp_cache_key(const resp_cache_t *c, const char *const *parts, int n,
                    unsigned char key[RESP_CACHE_KEY]);

/* The entry for `key` built at `version`, with a reference the caller
 * gives back with resp_entry_release; NULL when there is none (an entry of
 * another version is dropped). */
resp_entry_t *resp_cache_get(resp_cache_t *c, const unsigned char key[RESP_CACHE_KEY],
                             unsigned long long version);
struct MHD_Response *resp_entry_response(const resp_entry_t *e);
const char *resp_entry_user(const resp_entry_t *e);
void resp_entry_release(resp_entry_t *e);

/* Keep `resp` (a 200 whose body is `size` bytes, for `user`) under `key`,
 * taking over the caller's reference to it: the cache destroys it when
 * the entry goes, or at once when it keeps nothing. */
void resp_cache_put(resp_cache_t *c, const unsigned char key[RESP_CACHE_KEY],
                    unsigned long long version, struct MHD_Response *resp, size_t size,
                    const char *user);

#endif
