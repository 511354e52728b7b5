/* clustercrypt.c - the sealed envelopes legion members send each other
 * (clustercrypt.h).  libsodium does the cryptography (secretbox, BLAKE2b);
 * this file frames it and remembers the nonces it has seen. */
#include "clustercrypt.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../common/clock.h"

#define MAGIC_LEN (sizeof CLUSTER_MAGIC - 1)
#define BIND_LEN 32 /* the BLAKE2b-256 of the header, first in the box */
/* Magic, type, time, nonce, two lengths and two names at their longest. */
#define HEADER_MAX (MAGIC_LEN + 1 + 8 + 24 + 1 + 255 + 1 + 255)

_Static_assert(crypto_secretbox_NONCEBYTES == 24, "the envelope's nonce is 24 bytes");
_Static_assert(crypto_secretbox_KEYBYTES == 32, "cluster_key_t is 32 bytes");
_Static_assert(HEADER_MAX + BIND_LEN + crypto_secretbox_MACBYTES + CLUSTER_MAX_PAYLOAD <=
                   CLUSTER_MAX_ENVELOPE,
               "CLUSTER_MAX_ENVELOPE holds the largest envelope");
_Static_assert(CLUSTER_MAX_ENVELOPE <= 65507, "an envelope is one UDP datagram");
/* An accepted envelope's time t is within now +- SKEW, so it can be
 * accepted again only until t + SKEW <= now + 2 * SKEW: remembering a nonce
 * CLUSTER_REPLAY_S after it was seen outlives every window it is valid in. */
_Static_assert(CLUSTER_REPLAY_S >= 2 * CLUSTER_MAX_SKEW, "a nonce outlives its time window");

/* The key's domain: legion.c derives the uWSGI member's cipher from the
 * same legion key with another constant, so neither key tells the other. */
static const char derive_ctx[] = "imperium legion gate";

int cluster_key_derive(const char *legion_key, cluster_key_t *out, err_t *e)
{
    if (!legion_key || !*legion_key)
        return err_set(e, ERR_INPUT,
                       "the legion has no key: an unencrypted legion is never joined");
    if (sodium_init() < 0)
        return err_set(e, ERR_INTERNAL, "libsodium cannot start");
    crypto_generichash(out->k, sizeof out->k, (const unsigned char *)legion_key,
                       strlen(legion_key), (const unsigned char *)derive_ctx,
                       sizeof derive_ctx - 1);
    return 0;
}

/* ---- the header ---------------------------------------------------------------- */

static void put_be64(unsigned char *p, long long v)
{
    unsigned long long u = (unsigned long long)v;
    for (int i = 7; i >= 0; i--, u >>= 8)
        p[i] = (unsigned char)u;
}

static long long get_be64(const unsigned char *p)
{
    unsigned long long u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (long long)u;
}

/* Write the header into out (at least HEADER_MAX bytes); its length. */
static size_t header_write(unsigned char *out, uint8_t type, long long now,
                           const unsigned char nonce[24], const char *legion, const char *sender)
{
    size_t at = 0, ll = strlen(legion), sl = strlen(sender);
    memcpy(out, CLUSTER_MAGIC, MAGIC_LEN);
    at += MAGIC_LEN;
    out[at++] = type;
    put_be64(out + at, now);
    at += 8;
    memcpy(out + at, nonce, 24);
    at += 24;
    out[at++] = (unsigned char)ll;
    memcpy(out + at, legion, ll);
    at += ll;
    out[at++] = (unsigned char)sl;
    memcpy(out + at, sender, sl);
    return at + sl;
}

/* The bytes a legion's name and a member's address (host, IPv6, port)
 * are made of: what is read before the envelope is authenticated is
 * logged, so nothing else (no NUL, no control byte, no newline to forge a
 * log line) is taken. */
static const char name_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:_-";

static bool name_bytes_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!p[i] || !strchr(name_chars, p[i]))
            return false;
    return true;
}

/* One length-prefixed name at buf[*at]: 1..255 bytes of name_chars,
 * copied NUL-terminated to dst. */
static bool name_read(const unsigned char *buf, size_t len, size_t *at, char dst[256])
{
    if (*at >= len)
        return false;
    size_t n = buf[(*at)++];
    if (n == 0 || n > len - *at || !name_bytes_ok(buf + *at, n))
        return false;
    memcpy(dst, buf + *at, n);
    dst[n] = '\0';
    *at += n;
    return true;
}

/* Parse the header; its length, or 0 when buf is not an envelope. */
static size_t header_parse(const unsigned char *buf, size_t len, cluster_header_t *h)
{
    size_t at = MAGIC_LEN + 1 + 8 + 24;
    if (len < at || len > CLUSTER_MAX_ENVELOPE || memcmp(buf, CLUSTER_MAGIC, MAGIC_LEN))
        return 0;
    h->type = buf[MAGIC_LEN];
    h->unix_time = get_be64(buf + MAGIC_LEN + 1);
    memcpy(h->nonce, buf + MAGIC_LEN + 1 + 8, 24);
    if (!name_read(buf, len, &at, h->legion) || !name_read(buf, len, &at, h->sender))
        return 0;
    /* A box holds at least the header's hash and its tag. */
    if (len - at < BIND_LEN + crypto_secretbox_MACBYTES)
        return 0;
    return at;
}

int cluster_peek(const unsigned char *buf, size_t len, cluster_header_t *h, err_t *e)
{
    memset(h, 0, sizeof *h);
    if (!header_parse(buf, len, h))
        return err_set(e, ERR_INPUT, "not a legion envelope (%zu bytes)", len);
    return 0;
}

/* ---- sealing and opening -------------------------------------------------------- */

static bool name_ok(const char *s)
{
    return s && *s && strlen(s) <= 255 && name_bytes_ok((const unsigned char *)s, strlen(s));
}

ssize_t cluster_seal(const cluster_key_t *k, uint8_t type, const char *legion,
                     const char *sender, long long now, const void *payload, size_t len,
                     unsigned char *out, size_t cap, err_t *e)
{
    if (!name_ok(legion) || !name_ok(sender))
        return err_set(e, ERR_INPUT, "an envelope's legion and sender are 1 to 255 bytes of "
                       "[A-Za-z0-9.:_-]");
    if (len > CLUSTER_MAX_PAYLOAD)
        return err_set(e, ERR_INPUT, "%zu bytes do not fit in one envelope (at most %d)", len,
                       CLUSTER_MAX_PAYLOAD);
    if (sodium_init() < 0)
        return err_set(e, ERR_INTERNAL, "libsodium cannot start");
    unsigned char nonce[24];
    randombytes_buf(nonce, sizeof nonce);
    unsigned char head[HEADER_MAX];
    size_t hl = header_write(head, type, now, nonce, legion, sender);
    size_t total = hl + crypto_secretbox_MACBYTES + BIND_LEN + len;
    if (total > cap)
        return err_set(e, ERR_INTERNAL, "an envelope of %zu bytes does not fit in %zu", total,
                       cap);
    memcpy(out, head, hl);
    /* The plaintext (the header's hash, then the payload) is laid where the
     * ciphertext goes and sealed in place: no other copy of a private key
     * is made. */
    unsigned char *box = out + hl, *plain = box + crypto_secretbox_MACBYTES;
    crypto_generichash(plain, BIND_LEN, head, hl, NULL, 0);
    if (len)
        memmove(plain + BIND_LEN, payload, len);
    crypto_secretbox_easy(box, plain, BIND_LEN + len, nonce, k->k);
    return (ssize_t)total;
}

static bool header_same(const cluster_header_t *a, const cluster_header_t *b)
{
    return a->type == b->type && a->unix_time == b->unix_time &&
           !memcmp(a->nonce, b->nonce, sizeof a->nonce) && !strcmp(a->legion, b->legion) &&
           !strcmp(a->sender, b->sender);
}

static int replay_check(cluster_replay_t *r, const unsigned char nonce[24], err_t *e);

/* |now - t| <= CLUSTER_MAX_SKEW, without subtracting t: t is read before
 * the envelope is authenticated and may be any 64-bit number. */
static bool in_window(long long t, long long now)
{
    long long lo = now < LLONG_MIN + CLUSTER_MAX_SKEW ? LLONG_MIN : now - CLUSTER_MAX_SKEW;
    long long hi = now > LLONG_MAX - CLUSTER_MAX_SKEW ? LLONG_MAX : now + CLUSTER_MAX_SKEW;
    return t >= lo && t <= hi;
}

/* Decrypt the box of buf (header hl bytes) and check the header's hash:
 * the payload to out; its length or -1. */
static ssize_t box_open(const cluster_key_t *k, const cluster_header_t *h, const unsigned char *buf,
                        size_t len, size_t hl, unsigned char *out, size_t cap, err_t *e)
{
    size_t plain_len = len - hl - crypto_secretbox_MACBYTES, pay = plain_len - BIND_LEN;
    if (pay > cap)
        return err_set(e, ERR_INTERNAL, "a payload of %zu bytes does not fit in %zu", pay, cap);
    unsigned char *plain = malloc(plain_len);
    if (!plain)
        return err_set(e, ERR_INTERNAL, "out of memory");
    unsigned char bind[BIND_LEN];
    crypto_generichash(bind, sizeof bind, buf, hl, NULL, 0);
    ssize_t rc;
    if (crypto_secretbox_open_easy(plain, buf + hl, len - hl, h->nonce, k->k) != 0 ||
        sodium_memcmp(plain, bind, BIND_LEN) != 0) {
        rc = err_set(e, ERR_INPUT,
                     "an envelope from %s is forged or not of legion %s (it does not open with "
                     "its key)",
                     h->sender, h->legion);
    } else {
        memcpy(out, plain + BIND_LEN, pay);
        rc = (ssize_t)pay;
    }
    sodium_memzero(plain, plain_len); /* it may have held a private key */
    free(plain);
    return rc;
}

ssize_t cluster_open(const cluster_key_t *k, const cluster_header_t *h, cluster_replay_t *r,
                     long long now, const unsigned char *buf, size_t len, unsigned char *out,
                     size_t cap, err_t *e)
{
    cluster_header_t again;
    memset(&again, 0, sizeof again);
    size_t hl = header_parse(buf, len, &again);
    if (!hl)
        return err_set(e, ERR_INPUT, "not a legion envelope (%zu bytes)", len);
    if (!header_same(h, &again))
        return err_set(e, ERR_INTERNAL, "the header given is not this envelope's");
    /* The time is not said: unauthenticated, it is whatever a stranger
     * chose. */
    if (!in_window(h->unix_time, now))
        return err_set(e, ERR_INPUT,
                       "a stale envelope, or one dated in the future, from %s (clocks of "
                       "members must agree within %d s)",
                       h->sender, CLUSTER_MAX_SKEW);
    ssize_t n = box_open(k, h, buf, len, hl, out, cap, e);
    /* Only an envelope that opened is remembered: a non-member cannot fill
     * the cache. */
    if (n >= 0 && replay_check(r, h->nonce, e) < 0) {
        sodium_memzero(out, (size_t)n);
        return -1;
    }
    return n;
}

/* ---- the replay cache ------------------------------------------------------------ */

/* The nonces seen in the last CLUSTER_REPLAY_S seconds of CLOCK_MONOTONIC
 * (not the wall clock the caller passes: a clock stepped forward must not
 * forget a nonce whose envelope is still in its window), at most
 * REPLAY_SLOTS of them (32768 x 40 bytes, 1.3 MB, allocated once): a ring
 * in arrival order (the oldest leaves first) with a hash index.  When all
 * are younger than CLUSTER_REPLAY_S a new envelope is refused rather than
 * a nonce forgotten early: no replay is ever accepted, and only members
 * (whose envelopes opened) can fill it, 546 envelopes a second at most. */
#define REPLAY_SLOTS 32768u
#define NONE UINT32_MAX

struct replay_entry {
    unsigned char nonce[24];
    long long seen_ms; /* CLOCK_MONOTONIC */
    uint32_t next; /* the next entry of its bucket, NONE */
};

struct cluster_replay {
    struct replay_entry e[REPLAY_SLOTS];
    uint32_t bucket[REPLAY_SLOTS];
    uint32_t first, n; /* the ring: oldest at first */
};

cluster_replay_t *cluster_replay_new(void)
{
    cluster_replay_t *r = calloc(1, sizeof *r);
    if (r)
        for (uint32_t i = 0; i < REPLAY_SLOTS; i++)
            r->bucket[i] = NONE;
    return r;
}

void cluster_replay_free(cluster_replay_t *r) { free(r); }

/* Nonces are random (and chosen only by members): their first bytes are
 * as good as any hash. */
static uint32_t bucket_of(const unsigned char nonce[24])
{
    uint32_t h;
    memcpy(&h, nonce, sizeof h);
    return h & (REPLAY_SLOTS - 1);
}

/* Forget the oldest entry. */
static void replay_pop(cluster_replay_t *r)
{
    uint32_t i = r->first;
    for (uint32_t *p = &r->bucket[bucket_of(r->e[i].nonce)]; *p != NONE; p = &r->e[*p].next)
        if (*p == i) {
            *p = r->e[i].next;
            break;
        }
    r->first = (r->first + 1) % REPLAY_SLOTS;
    r->n--;
}

static int replay_check(cluster_replay_t *r, const unsigned char nonce[24], err_t *e)
{
    long long now = now_ms();
    while (r->n > 0 && now - r->e[r->first].seen_ms > CLUSTER_REPLAY_S * 1000LL)
        replay_pop(r);
    uint32_t b = bucket_of(nonce);
    for (uint32_t i = r->bucket[b]; i != NONE; i = r->e[i].next)
        if (!memcmp(r->e[i].nonce, nonce, 24))
            return err_set(e, ERR_INPUT, "a replayed envelope (its nonce was seen %lld ms ago)",
                           now - r->e[i].seen_ms);
    if (r->n == REPLAY_SLOTS)
        return err_set(e, ERR_CONFLICT,
                       "more than %u envelopes in %d s: this one is refused (the replay cache is "
                       "full)",
                       REPLAY_SLOTS, CLUSTER_REPLAY_S);
    uint32_t i = (r->first + r->n) % REPLAY_SLOTS;
    memcpy(r->e[i].nonce, nonce, 24);
    r->e[i].seen_ms = now;
    r->e[i].next = r->bucket[b];
    r->bucket[b] = i;
    r->n++;
    return 0;
}
