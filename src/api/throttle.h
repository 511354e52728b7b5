/* throttle.h - the two limits on password checks (docs/SECURITY.md).
 *
 * A wrong password costs an argon2id check: 64 MiB and ~100 ms of a CPU.
 * Two things keep guessing from starving the API:
 *
 * - throttle_t: failed checks per key (a username, a client address) in a
 *   token bucket: `limit` failures at once, then one more every
 *   window/limit seconds.  A key with no token left is answered 429 at
 *   once, without a check, until its next token.  The table is fixed in
 *   size: a new key replaces, among the few slots it may use, the one with
 *   the most tokens (the one that forgets the least).
 * - gate_t: a counting semaphore over the argon2 checks themselves, with a
 *   short bounded queue: a check that finds every slot and every place in
 *   the queue taken is refused (429) instead of holding a worker thread.
 *
 * Times are seconds of CLOCK_MONOTONIC, passed in so tests control them. */
#ifndef IMP_THROTTLE_H
#define IMP_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct throttle throttle_t;
typedef struct gate gate_t;

/* `slots` entries (rounded up to a power of two); limit 0 turns it off. */
throttle_t *throttle_new(size_t slots, int limit, int window_s);
void throttle_free(throttle_t *t);
/* True when no key can be throttled now: callers may skip building keys. */
bool throttle_idle(throttle_t *t, double now);
/* 0 when `key` may try now, else the whole seconds until it may (>= 1). */
int throttle_wait(throttle_t *t, const char *key, double now);
/* Count one failed check of `key`. */
void throttle_fail(throttle_t *t, const char *key, double now);

/* At most `slots` holders, and at most `queue` callers waiting for one. */
gate_t *gate_new(int slots, int queue);
void gate_free(gate_t *g);
/* Take a slot, waiting up to wait_ms when there is room in the queue;
 * false (and no slot) when busy. */
bool gate_enter(gate_t *g, int wait_ms);
void gate_leave(gate_t *g);
/* Every slot and every place in the queue taken, at this moment: a caller
 * that would only be refused may be refused before queueing for a worker. */
bool gate_full(gate_t *g);

/* CLOCK_MONOTONIC in seconds. */
double throttle_now(void);

#endif
