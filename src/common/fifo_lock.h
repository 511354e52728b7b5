/* fifo_lock.h - a mutex handed to its waiters in the order they came.
 *
 * A pthread mutex lets the thread that releases it take it again at once,
 * ahead of the threads asleep on it.  The API's writers queue on one lock
 * (db_set_write_lock) and a worker that has just committed often has the
 * next write in hand: with a plain mutex a few writers starved behind it
 * (docs/PERFORMANCE.md: write p99 19-27 ms with 4 workers, 5-8 ms with this lock).  Here the
 * unlocker hands the lock to the oldest waiter, which cannot be overtaken. */
#ifndef IMP_FIFO_LOCK_H
#define IMP_FIFO_LOCK_H

#include <pthread.h>
#include <stdbool.h>

typedef struct fifo_waiter fifo_waiter_t;

typedef struct {
    pthread_mutex_t m;
    bool held;
    int waiting; /* threads queued behind the holder */
    fifo_waiter_t *head, *tail;
} fifo_lock_t;

int fifo_lock_init(fifo_lock_t *l);
void fifo_lock_destroy(fifo_lock_t *l);
void fifo_lock(fifo_lock_t *l);
void fifo_unlock(fifo_lock_t *l);

#endif
