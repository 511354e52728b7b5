/* auth.c - who is calling.
 *
 * Passwords are stored as argon2id hashes (libsodium), which take tens of
 * milliseconds on purpose.  To keep each request cheap, a successful check
 * is remembered for a while as a keyed BLAKE2b digest of
 * (username, password, stored hash).  Because the stored hash is part of the
 * digest, a password change invalidates the cached entry at once, on every
 * API instance sharing the database, without any explicit purge. */
#include "api.h"
#include "../common/digest.h"
#include "../common/log.h"

#include <microhttpd.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUTH_SLOTS 4096

struct auth_cache {
    pthread_mutex_t lock;
    unsigned char key[DIGEST_KEY_BYTES];
    int ttl;
    struct {
        unsigned char digest[32];
        time_t expires;
    } slot[AUTH_SLOTS];
};

auth_cache_t *auth_cache_new(int ttl)
{
    auth_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    randombytes_buf(c->key, sizeof c->key);
    c->ttl = ttl;
    return c;
}

void auth_cache_free(auth_cache_t *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    sodium_memzero(c, sizeof *c);
    free(c);
}

static void cache_digest(auth_cache_t *c, const char *user, const char *pass,
                         const char *hash, unsigned char out[32])
{
    const char *parts[] = {user, pass, hash};
    digest_parts(c->key, parts, 3, out);
}

static bool cache_hit(auth_cache_t *c, const unsigned char d[32])
{
    if (c->ttl <= 0)
        return false;
    unsigned idx = (unsigned)(d[0] | d[1] << 8) % AUTH_SLOTS;
    pthread_mutex_lock(&c->lock);
    bool hit = c->slot[idx].expires > time(NULL) &&
               sodium_memcmp(c->slot[idx].digest, d, 32) == 0;
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void cache_store(auth_cache_t *c, const unsigned char d[32])
{
    if (c->ttl <= 0)
        return;
    unsigned idx = (unsigned)(d[0] | d[1] << 8) % AUTH_SLOTS;
    pthread_mutex_lock(&c->lock);
    memcpy(c->slot[idx].digest, d, 32);
    c->slot[idx].expires = time(NULL) + c->ttl;
    pthread_mutex_unlock(&c->lock);
}

int password_hash(const char *password, char out[128], err_t *e)
{
    if (crypto_pwhash_str_alg(out, password, strlen(password),
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return err_set(e, ERR_INTERNAL, "password hashing failed (out of memory)");
    return 0;
}

/* Decode a hex header value into a fresh string; NULL if malformed. */
static char *hex_header(req_t *r, const char *name)
{
    const char *hex = req_header(r, name);
    if (!hex)
        return NULL;
    size_t hlen = strlen(hex), blen;
    char *out = malloc(hlen / 2 + 1);
    if (!out)
        return NULL;
    if (sodium_hex2bin((unsigned char *)out, hlen / 2, hex, hlen, NULL, &blen, NULL) != 0 ||
        memchr(out, '\0', blen)) {
        free(out);
        return NULL;
    }
    out[blen] = '\0';
    return out;
}

/* Check a username/password pair; fills r->me on success. */
static int check_password(req_t *r, const char *user, const char *pass)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e,
                             "SELECT id, uuid, password_hash FROM customers WHERE username = $1",
                             DB_ARGS(DB_TEXT(user)));
    if (!res) {
        log_error("auth lookup: %s", e.msg);
        return -1;
    }
    int ok = -1;
    if (res->nrows == 1) {
        const char *hash = db_get(res, 0, 2);
        unsigned char d[32];
        cache_digest(r->api->auth, user, pass, hash, d);
        bool known = cache_hit(r->api->auth, d);
        if (!known && !r->on_worker) {
            /* argon2 takes tens of milliseconds: not on an HTTP thread. */
            r->needs_worker = true;
            db_res_free(res);
            return -1;
        }
        if (known || crypto_pwhash_str_verify(hash, pass, strlen(pass)) == 0) {
            cache_store(r->api->auth, d);
            r->me.id = db_get_int(res, 0, 0);
            snprintf(r->me.uuid, sizeof r->me.uuid, "%s", db_get(res, 0, 1));
            snprintf(r->me.username, sizeof r->me.username, "%s", user);
            r->authed = true;
            ok = 0;
        }
    }
    db_res_free(res);
    return ok;
}

/* Try the credentials the request carries, in API.md's order. */
static int try_credentials(req_t *r)
{
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(r->conn, &pass);
    if (user) {
        int rc = pass ? check_password(r, user, pass) : -1;
        MHD_free(user);
        if (pass)
            MHD_free(pass);
        return rc;
    }
    char *huser = hex_header(r, "X-uwsgi-it-username");
    char *hpass = hex_header(r, "X-uwsgi-it-password");
    int rc = huser && hpass ? check_password(r, huser, hpass) : -1;
    free(huser);
    free(hpass);
    return rc;
}

int auth_customer(req_t *r)
{
    if (try_credentials(r) == 0)
        return 0;
    reply_error(r, 401, NULL);
    return -1;
}

/* For endpoints open to anonymous callers (news): authenticate when
 * credentials are present, and do not fail otherwise. */
int auth_optional(req_t *r) { return try_credentials(r); }

int auth_admin(req_t *r)
{
    const char *h = req_header(r, "Authorization");
    const char *tok = r->api->admin_token;
    size_t tlen = strlen(tok);
    if (h && strncmp(h, "Bearer ", 7) == 0 && tlen > 0 && strlen(h + 7) == tlen &&
        sodium_memcmp(h + 7, tok, tlen) == 0)
        return 0;
    reply_error(r, 401, NULL);
    return -1;
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(md, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, md, sizeof md);
}

/* Node secrets are 256 random bits: a fast hash is as good as a slow one,
 * and keeps the long poll's per-request check cheap. */
int node_secret_new(char secret[65], char hash[65])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(secret, 65, raw, sizeof raw);
    sha256_hex(secret, hash);
    return 0;
}

int auth_node(req_t *r)
{
    char *pass = NULL;
    char *name = MHD_basic_auth_get_username_password(r->conn, &pass);
    int rc = -1;
    if (name && pass) {
        err_t e = {0};
        db_res_t *res = db_query(r->db, &e,
                                 "SELECT id, node_secret_hash FROM servers WHERE name = $1",
                                 DB_ARGS(DB_TEXT(name)));
        if (!res)
            log_error("node auth lookup: %s", e.msg);
        if (res && res->nrows == 1 && !db_is_null(res, 0, 1)) {
            char hash[65];
            sha256_hex(pass, hash);
            if (strlen(db_get(res, 0, 1)) == 64 &&
                sodium_memcmp(hash, db_get(res, 0, 1), 64) == 0) {
                r->node_server_id = db_get_int(res, 0, 0);
                rc = 0;
            }
        }
        db_res_free(res);
    }
    if (name)
        MHD_free(name);
    if (pass)
        MHD_free(pass);
    if (rc < 0)
        reply_error(r, 401, NULL);
    return rc;
}
