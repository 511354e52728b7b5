/* auth.c - who is calling.
 *
 * Passwords are stored as argon2id hashes (libsodium), which take tens of
 * milliseconds on purpose.  To keep each request cheap, a successful check
 * is remembered for a while as a keyed BLAKE2b digest of
 * (username, password, stored hash).  Because the stored hash is part of the
 * digest, a password change invalidates the cached entry at once, on every
 * API instance sharing the database, without any explicit purge.
 *
 * A check that is not cached is bounded (throttle.h): failed checks are
 * counted per username and per client address, and throttled ones are
 * answered 429 before any check, cached or not (a cache hit answering while
 * the username is throttled would tell a guesser when a guess is right);
 * argon2 itself runs in a few slots at a time.  An unknown username costs
 * the same argon2 check, against a dummy hash, and counts the same: its
 * answers and their timing cannot tell which usernames exist. */
#include "auth.h"
#include "throttle.h"
#include "../common/clock.h"
#include "../common/digest.h"
#include "../common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUTH_SLOTS 4096
/* Usernames and addresses the failure counts remember (32 bytes each). */
#define THROTTLE_KEYS 16384
/* How long a check waits for an argon2 slot, when one is free soon. */
#define GATE_WAIT_MS 1000

/* Checks in flight, by digest of (user, password, hash): a client sending
 * several requests at once with a password not yet cached waits for the
 * one check of it rather than taking (or being refused) an argon2 slot per
 * request.  At most one per slot and waiter of the gate. */
#define FLIGHTS 64
#define BAD_SLOTS 1024
#define BAD_TTL 60

typedef struct {
    unsigned char digest[32];
    bool used, done, ok, busy;
    int waiters;
} flight_t;

struct auth_cache {
    pthread_mutex_t lock;
    pthread_cond_t landed; /* a flight is done */
    unsigned char key[DIGEST_KEY_BYTES];
    int ttl;
    int riders, max_riders; /* requests waiting for another's check */
    flight_t flight[FLIGHTS];
    /* Checks that failed: the same wrong password (or unknown user) again
     * is answered without argon2; it tells the sender nothing new. */
    struct {
        unsigned char digest[32];
        time_t expires;
    } bad[BAD_SLOTS];
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->landed, &ca);
    pthread_condattr_destroy(&ca);
    randombytes_buf(c->key, sizeof c->key);
    c->ttl = ttl;
    return c;
}

void auth_cache_free(auth_cache_t *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->landed);
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

static bool bad_hit(auth_cache_t *c, const unsigned char d[32])
{
    unsigned idx = (unsigned)(d[2] | d[3] << 8) % BAD_SLOTS;
    pthread_mutex_lock(&c->lock);
    bool hit = c->bad[idx].expires > time(NULL) && sodium_memcmp(c->bad[idx].digest, d, 32) == 0;
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void bad_store(auth_cache_t *c, const unsigned char d[32])
{
    unsigned idx = (unsigned)(d[2] | d[3] << 8) % BAD_SLOTS;
    pthread_mutex_lock(&c->lock);
    memcpy(c->bad[idx].digest, d, 32);
    c->bad[idx].expires = time(NULL) + BAD_TTL;
    pthread_mutex_unlock(&c->lock);
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

int auth_limits_init(api_t *api, err_t *e)
{
    const api_config_t *c = &api->cfg;
    api->fail_users = throttle_new(THROTTLE_KEYS, c->auth_user_failures, c->auth_failure_window);
    api->fail_addrs =
        throttle_new(THROTTLE_KEYS, c->auth_address_failures, c->auth_failure_window);
    /* As many may wait as run: a waiter is next, a few more would only
     * hold worker threads that other requests need. */
    api->argon2 = gate_new(c->auth_slots, c->auth_slots);
    /* Riders hold worker threads: all but one at most. */
    api->auth->max_riders = c->workers > 1 ? c->workers - 1 : 1;
    if (!api->fail_users || !api->fail_addrs || !api->argon2)
        return err_set(e, ERR_INTERNAL, "out of memory for the password check limits");
    /* A password nobody knows, hashed like every customer's. */
    unsigned char raw[24];
    char secret[sizeof raw * 2 + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(secret, sizeof secret, raw, sizeof raw);
    int rc = password_hash(secret, api->dummy_hash, e);
    sodium_memzero(secret, sizeof secret);
    return rc;
}

void auth_limits_free(api_t *api)
{
    throttle_free(api->fail_users);
    throttle_free(api->fail_addrs);
    gate_free(api->argon2);
    api->fail_users = api->fail_addrs = NULL;
    api->argon2 = NULL;
}

/* The client's address as text ("" if unknown: one shared bucket). */
static void client_addr(req_t *r, char out[INET6_ADDRSTRLEN])
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  INET6_ADDRSTRLEN);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  INET6_ADDRSTRLEN);
}

void reply_429(req_t *r, int seconds, const char *why)
{
    char reason[160];
    snprintf(reason, sizeof reason, "%s: retry in %d second%s", why, seconds,
             seconds == 1 ? "" : "s");
    reply_error(r, 429, reason);
    r->retry_after = seconds;
}

/* Answer 429 when `user` or the client's address may not try now. */
static bool throttled_user(req_t *r, const char *user)
{
    api_t *api = r->api;
    double now = throttle_now();
    char addr[INET6_ADDRSTRLEN];
    client_addr(r, addr);
    int wu = throttle_wait(api->fail_users, user, now);
    int wa = throttle_wait(api->fail_addrs, addr, now);
    int wait = wu > wa ? wu : wa;
    if (wait > 0)
        reply_429(r, wait, "too many failed password checks");
    return wait > 0;
}

static void count_failure(req_t *r, const char *user)
{
    double now = throttle_now();
    char addr[INET6_ADDRSTRLEN];
    client_addr(r, addr);
    throttle_fail(r->api->fail_users, user, now);
    throttle_fail(r->api->fail_addrs, addr, now);
}

static flight_t *flight_find(auth_cache_t *c, const unsigned char d[32])
{
    for (int i = 0; i < FLIGHTS; i++)
        if (c->flight[i].used && sodium_memcmp(c->flight[i].digest, d, 32) == 0)
            return &c->flight[i];
    return NULL;
}

static bool in_flight(auth_cache_t *c, const unsigned char d[32])
{
    pthread_mutex_lock(&c->lock);
    bool f = flight_find(c, d) != NULL;
    pthread_mutex_unlock(&c->lock);
    return f;
}

static void flight_release(flight_t *f)
{
    if (f->done && f->waiters == 0)
        f->used = false;
}

/* Wait (lock held) for the flight of the same check: its outcome. */
static bool ride(auth_cache_t *c, flight_t *f, bool *busy)
{
    /* The flight's own wait for a slot, then its argon2. */
    struct timespec end = clock_after_ms(GATE_WAIT_MS + 2000);
    c->riders++;
    f->waiters++;
    int rc = 0;
    while (!f->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->landed, &c->lock, &end);
    bool ok = f->done && f->ok;
    *busy = !f->done || f->busy;
    f->waiters--;
    c->riders--;
    flight_release(f);
    return ok;
}

/* argon2 in one of the gate's slots, once per digest at a time: true when
 * `pass` matches `hash`.  *busy when no slot came free in time (nothing
 * was checked). */
static bool verify_gated(req_t *r, const unsigned char d[32], const char *hash,
                         const char *pass, bool *busy)
{
    auth_cache_t *c = r->api->auth;
    pthread_mutex_lock(&c->lock);
    flight_t *f = flight_find(c, d);
    if (f) {
        bool ok = false;
        if (f->done) { /* landed, its riders not all gone yet */
            ok = f->ok;
            *busy = f->busy;
        } else if (c->riders < c->max_riders) {
            ok = ride(c, f, busy);
        } else {
            *busy = true;
        }
        pthread_mutex_unlock(&c->lock);
        return ok;
    }
    for (int i = 0; !f && i < FLIGHTS; i++)
        if (!c->flight[i].used)
            f = &c->flight[i];
    if (f)
        *f = (flight_t){.used = true};
    if (f)
        memcpy(f->digest, d, 32);
    pthread_mutex_unlock(&c->lock);
    *busy = !f || !gate_enter(r->api->argon2, GATE_WAIT_MS);
    bool ok = false;
    if (!*busy) {
        ok = crypto_pwhash_str_verify(hash, pass, strlen(pass)) == 0;
        gate_leave(r->api->argon2);
    }
    if (f) {
        pthread_mutex_lock(&c->lock);
        f->done = true;
        f->ok = ok;
        f->busy = *busy;
        flight_release(f);
        pthread_cond_broadcast(&c->landed);
        pthread_mutex_unlock(&c->lock);
    }
    return ok;
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

/* Check a username/password pair; fills r->me on success.  0, -1 (wrong)
 * or AUTH_ANSWERED (429, or 503/500 when the lookup failed). */
static int check_password(req_t *r, const char *user, const char *pass)
{
    /* Again here: failures may have come in since dispatch asked. */
    if (throttled_user(r, user))
        return AUTH_ANSWERED;
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e,
                             "SELECT id, uuid, password_hash FROM customers WHERE username = $1",
                             DB_ARGS(DB_TEXT(user)));
    if (!res) {
        /* Not the caller's fault: 503 when the database is away, not 401. */
        reply_internal(r, &e);
        return AUTH_ANSWERED;
    }
    const char *hash = res->nrows == 1 ? db_get(res, 0, 2) : NULL;
    unsigned char d[32];
    /* Unknown users too: their repeated checks coalesce alike. */
    cache_digest(r->api->auth, user, pass, hash, d);
    bool known = hash && cache_hit(r->api->auth, d);
    if (!known && bad_hit(r->api->auth, d)) {
        count_failure(r, user);
        db_res_free(res);
        return -1;
    }
    bool busy = !known && gate_full(r->api->argon2) && !in_flight(r->api->auth, d);
    if (!known && !busy && !r->on_worker) {
        /* argon2 takes tens of milliseconds: not on an HTTP thread. */
        r->needs_worker = true;
        db_res_free(res);
        return -1;
    }
    int ok = -1;
    if (known || (!busy && verify_gated(r, d, hash ? hash : r->api->dummy_hash, pass, &busy))) {
        if (hash) { /* the dummy hash's password is known to nobody */
            cache_store(r->api->auth, d);
            r->me.id = db_get_int(res, 0, 0);
            snprintf(r->me.uuid, sizeof r->me.uuid, "%s", db_get(res, 0, 1));
            snprintf(r->me.username, sizeof r->me.username, "%s", user);
            r->authed = true;
            ok = 0;
        }
    } else if (busy) {
        reply_429(r, 1, "too many password checks at once");
        ok = AUTH_ANSWERED;
    } else {
        bad_store(r->api->auth, d);
        count_failure(r, user);
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

/* The username the request's credentials name, or NULL (free with free). */
static char *credentials_user(req_t *r)
{
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(r->conn, &pass);
    if (pass) {
        sodium_memzero(pass, strlen(pass));
        MHD_free(pass);
    }
    if (user) {
        char *copy = strdup(user);
        MHD_free(user);
        return copy;
    }
    return hex_header(r, "X-uwsgi-it-username");
}

bool auth_throttled(req_t *r)
{
    double now = throttle_now();
    /* Nothing throttled anywhere (the usual case): no parsing. */
    if (throttle_idle(r->api->fail_users, now) && throttle_idle(r->api->fail_addrs, now))
        return false;
    char *user = credentials_user(r);
    if (!user)
        return false; /* no credentials: nothing to guess */
    bool t = throttled_user(r, user);
    free(user);
    return t;
}

int auth_customer(req_t *r)
{
    int rc = try_credentials(r);
    if (rc == 0)
        return 0;
    if (rc != AUTH_ANSWERED)
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
        if (!res) {
            /* The node retries a 503 (or 500) later; a 401 would say its
             * secret is wrong. */
            reply_internal(r, &e);
            rc = -2;
        }
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
    if (rc == -1)
        reply_error(r, 401, NULL);
    return rc < 0 ? -1 : 0;
}
