/* throttle.c - failed-password buckets and the argon2 gate (throttle.h). */
#include "throttle.h"
#include "../common/clock.h"
#include "../common/digest.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Slots a key may live in: its hash's and the next few. */
#define PROBE 8
#define ID_BYTES 16

typedef struct {
    unsigned char id[ID_BYTES]; /* keyed digest of the key: no key text kept */
    bool used;
    double tokens;
    double at; /* when tokens was last brought up to date */
} bucket_t;

struct throttle {
    pthread_mutex_t lock;
    unsigned char hkey[DIGEST_KEY_BYTES]; /* random: nobody can aim at a slot */
    size_t mask;
    int limit;
    double rate; /* tokens a second */
    /* When a bucket last dropped below one token (ms), or LLONG_MIN.  A
     * bucket left at >= 0 tokens has one again 1/rate seconds later, so
     * past that nothing can be throttled: throttle_wait skips the lock
     * (every cached read asks it). */
    atomic_llong last_dry_ms;
    bucket_t *slot;
};

double throttle_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

throttle_t *throttle_new(size_t slots, int limit, int window_s)
{
    size_t n = PROBE;
    while (n < slots)
        n <<= 1;
    throttle_t *t = calloc(1, sizeof *t);
    if (!t || !(t->slot = calloc(n, sizeof *t->slot))) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    randombytes_buf(t->hkey, sizeof t->hkey);
    t->mask = n - 1;
    t->limit = limit;
    t->rate = window_s > 0 ? (double)limit / window_s : 0;
    atomic_init(&t->last_dry_ms, LLONG_MIN);
    return t;
}

void throttle_free(throttle_t *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->slot);
    free(t);
}

/* Without libm: the few roundings needed. */
static double dmin(double a, double b) { return a < b ? a : b; }
static long long ceil_pos(double x)
{
    long long n = (long long)x;
    return (double)n < x ? n + 1 : n;
}

static bool disabled(const throttle_t *t) { return t->limit <= 0 || t->rate <= 0; }

static void refill(const throttle_t *t, bucket_t *b, double now)
{
    if (now > b->at) {
        b->tokens = dmin((double)t->limit, b->tokens + (now - b->at) * t->rate);
        b->at = now;
    }
}

static size_t first_slot(const unsigned char id[ID_BYTES], size_t mask)
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return (size_t)h & mask;
}

/* The bucket of `id`, or NULL (lock held). */
static bucket_t *find(throttle_t *t, const unsigned char id[ID_BYTES])
{
    size_t i = first_slot(id, t->mask);
    for (int p = 0; p < PROBE; p++) {
        bucket_t *b = &t->slot[(i + (size_t)p) & t->mask];
        if (b->used && memcmp(b->id, id, ID_BYTES) == 0)
            return b;
    }
    return NULL;
}

/* A bucket for a new `id`: a free slot, else the fullest one (lock held). */
static bucket_t *claim(throttle_t *t, const unsigned char id[ID_BYTES], double now)
{
    size_t i = first_slot(id, t->mask);
    bucket_t *best = NULL;
    for (int p = 0; p < PROBE; p++) {
        bucket_t *b = &t->slot[(i + (size_t)p) & t->mask];
        if (!b->used) {
            best = b;
            break;
        }
        refill(t, b, now);
        if (!best || b->tokens > best->tokens)
            best = b;
    }
    memcpy(best->id, id, ID_BYTES);
    best->used = true;
    best->tokens = t->limit;
    best->at = now;
    return best;
}

static void key_id(const throttle_t *t, const char *key, unsigned char id[ID_BYTES])
{
    unsigned char d[DIGEST_BYTES];
    const char *parts[] = {key};
    digest_parts(t->hkey, parts, 1, d);
    memcpy(id, d, ID_BYTES);
}

bool throttle_idle(throttle_t *t, double now)
{
    if (disabled(t))
        return true;
    long long dry = atomic_load(&t->last_dry_ms);
    return dry == LLONG_MIN || now * 1e3 - (double)dry > 1e3 / t->rate;
}

int throttle_wait(throttle_t *t, const char *key, double now)
{
    if (throttle_idle(t, now))
        return 0;
    unsigned char id[ID_BYTES];
    key_id(t, key, id);
    int wait = 0;
    pthread_mutex_lock(&t->lock);
    bucket_t *b = find(t, id);
    if (b) {
        refill(t, b, now);
        if (b->tokens < 1) {
            wait = (int)ceil_pos((1 - b->tokens) / t->rate);
            if (wait < 1)
                wait = 1;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return wait;
}

void throttle_fail(throttle_t *t, const char *key, double now)
{
    if (disabled(t))
        return;
    unsigned char id[ID_BYTES];
    key_id(t, key, id);
    pthread_mutex_lock(&t->lock);
    bucket_t *b = find(t, id);
    if (!b)
        b = claim(t, id, now);
    refill(t, b, now);
    /* Not below zero: checks already running when the bucket ran dry must
     * not push the key's wait past one token's time (last_dry_ms). */
    b->tokens = b->tokens > 1 ? b->tokens - 1 : 0;
    if (b->tokens < 1)
        atomic_store(&t->last_dry_ms, ceil_pos(now * 1e3));
    pthread_mutex_unlock(&t->lock);
}

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    int free_slots;
    int waiting;
    int queue;
};

gate_t *gate_new(int slots, int queue)
{
    gate_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    /* Deadlines on the monotonic clock: a clock step cannot stretch them. */
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->freed, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g->lock, NULL);
    g->free_slots = slots;
    g->queue = queue;
    return g;
}

void gate_free(gate_t *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->freed);
    free(g);
}

bool gate_enter(gate_t *g, int wait_ms)
{
    pthread_mutex_lock(&g->lock);
    if (g->free_slots == 0 && (g->waiting >= g->queue || wait_ms <= 0)) {
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    struct timespec end = clock_after_ms(wait_ms);
    g->waiting++;
    int rc = 0;
    while (g->free_slots == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->freed, &g->lock, &end);
    g->waiting--;
    bool ok = g->free_slots > 0;
    if (ok)
        g->free_slots--;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

bool gate_full(gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    bool full = g->free_slots == 0 && g->waiting >= g->queue;
    pthread_mutex_unlock(&g->lock);
    return full;
}

void gate_leave(gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->free_slots++;
    pthread_cond_signal(&g->freed);
    pthread_mutex_unlock(&g->lock);
}
