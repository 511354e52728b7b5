/* resp_cache.c - answers to repeated customer GETs (see resp_cache.h).
 *
 * A fixed table of slots indexed by the key's first bytes: a new entry
 * replaces whatever the slot held.  Entries are reference counted, so an
 * HTTP thread sends a cached response without holding the table's lock
 * while another thread replaces it; libmicrohttpd counts its own references to the
 * response, so a connection still sending it keeps it alive after the
 * entry is gone. */
#include "resp_cache.h"
#include "../common/digest.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESP_SLOTS 4096
/* Larger bodies (a list of hundreds of objects) are rebuilt each time:
 * they are rare, and a few of them would evict everything else. */
#define RESP_MAX_ENTRY (64 * 1024)

struct resp_entry {
    atomic_int refs;
    struct MHD_Response *resp;
    unsigned char key[RESP_CACHE_KEY];
    unsigned long long version;
    time_t expires;
    size_t size;
    char user[128];
};

struct resp_cache {
    pthread_mutex_t lock;
    unsigned char hkey[DIGEST_KEY_BYTES];
    int ttl;
    size_t max_bytes, bytes;
    resp_entry_t *slot[RESP_SLOTS];
};

resp_cache_t *resp_cache_new(int ttl, size_t max_bytes)
{
    resp_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    randombytes_buf(c->hkey, sizeof c->hkey);
    c->ttl = ttl;
    c->max_bytes = ttl > 0 ? max_bytes : 0;
    return c;
}

bool resp_cache_enabled(const resp_cache_t *c) { return c && c->max_bytes > 0; }

void resp_entry_release(resp_entry_t *e)
{
    if (e && atomic_fetch_sub(&e->refs, 1) == 1) {
        MHD_destroy_response(e->resp);
        free(e);
    }
}

/* Take the entry out of slot `i`; the caller releases it outside the lock. */
static resp_entry_t *unlink_slot(resp_cache_t *c, unsigned i)
{
    resp_entry_t *e = c->slot[i];
    if (e) {
        c->slot[i] = NULL;
        c->bytes -= e->size;
    }
    return e;
}

void resp_cache_free(resp_cache_t *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < RESP_SLOTS; i++)
        resp_entry_release(unlink_slot(c, i));
    pthread_mutex_destroy(&c->lock);
    sodium_memzero(c->hkey, sizeof c->hkey);
    free(c);
}

void resp_cache_key(const resp_cache_t *c, const char *const *parts, int n,
                    unsigned char key[RESP_CACHE_KEY])
{
    digest_parts(c->hkey, parts, n, key);
}

static unsigned slot_of(const unsigned char key[RESP_CACHE_KEY])
{
    return (unsigned)(key[0] | key[1] << 8) % RESP_SLOTS;
}

resp_entry_t *resp_cache_get(resp_cache_t *c, const unsigned char key[RESP_CACHE_KEY],
                             unsigned long long version)
{
    if (!resp_cache_enabled(c))
        return NULL;
    unsigned i = slot_of(key);
    resp_entry_t *hit = NULL, *old = NULL;
    pthread_mutex_lock(&c->lock);
    resp_entry_t *e = c->slot[i];
    if (e && sodium_memcmp(e->key, key, RESP_CACHE_KEY) == 0) {
        if (e->version == version && e->expires > time(NULL)) {
            atomic_fetch_add(&e->refs, 1);
            hit = e;
        } else {
            old = unlink_slot(c, i); /* it can never be served again */
        }
    }
    pthread_mutex_unlock(&c->lock);
    resp_entry_release(old);
    return hit;
}

struct MHD_Response *resp_entry_response(const resp_entry_t *e) { return e->resp; }

const char *resp_entry_user(const resp_entry_t *e) { return e->user; }

/* Drop what can never be served again: entries older than `version` (the
 * data has changed since) or past their time.  Until a slot is looked up
 * or reused they would hold their bytes, so this runs when the cache is
 * full, under the lock. */
static void sweep(resp_cache_t *c, unsigned long long version)
{
    time_t now = time(NULL);
    for (unsigned i = 0; i < RESP_SLOTS; i++) {
        resp_entry_t *e = c->slot[i];
        if (e && (e->version < version || e->expires <= now))
            resp_entry_release(unlink_slot(c, i));
    }
}

void resp_cache_put(resp_cache_t *c, const unsigned char key[RESP_CACHE_KEY],
                    unsigned long long version, struct MHD_Response *resp, size_t size,
                    const char *user)
{
    resp_entry_t *e = NULL;
    if (resp_cache_enabled(c) && size <= RESP_MAX_ENTRY)
        e = calloc(1, sizeof *e);
    if (!e) {
        MHD_destroy_response(resp);
        return;
    }
    atomic_init(&e->refs, 1);
    e->resp = resp;
    memcpy(e->key, key, RESP_CACHE_KEY);
    e->version = version;
    e->expires = time(NULL) + c->ttl;
    e->size = size;
    snprintf(e->user, sizeof e->user, "%s", user);
    unsigned i = slot_of(key);
    pthread_mutex_lock(&c->lock);
    resp_entry_t *old = unlink_slot(c, i);
    if (c->bytes + size > c->max_bytes)
        sweep(c, version);
    if (c->bytes + size > c->max_bytes) {
        /* Full: keep what is there rather than churn. */
        c->slot[i] = old;
        if (old)
            c->bytes += old->size;
        old = e;
    } else {
        c->slot[i] = e;
        c->bytes += size;
    }
    pthread_mutex_unlock(&c->lock);
    resp_entry_release(old);
}
