#include "changes.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <time.h>

#define TICK_NS (500 * 1000 * 1000L)

typedef struct waiter {
    struct MHD_Connection *conn;
    struct waiter *next;
} waiter_t;

struct changes {
    pthread_mutex_t lock;
    pthread_cond_t stop_cond;
    unsigned long long seq;
    waiter_t *waiters;
    bool stopping, started;
    pthread_t ticker;
};

changes_t *changes_new(void)
{
    changes_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->stop_cond, &attr);
    pthread_condattr_destroy(&attr);
    return c;
}

/* Resume all waiters; the caller holds the lock. */
static void resume_all(changes_t *c)
{
    waiter_t *w = c->waiters;
    c->waiters = NULL;
    while (w) {
        waiter_t *next = w->next;
        MHD_resume_connection(w->conn);
        free(w);
        w = next;
    }
}

static void *ticker_main(void *arg)
{
    changes_t *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->stop_cond, &c->lock, &ts);
        resume_all(c);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int changes_start(changes_t *c)
{
    if (pthread_create(&c->ticker, NULL, ticker_main, c) != 0)
        return -1;
    c->started = true;
    return 0;
}

void changes_shutdown(changes_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    resume_all(c);
    pthread_cond_broadcast(&c->stop_cond);
    pthread_mutex_unlock(&c->lock);
    if (c->started) {
        pthread_join(c->ticker, NULL);
        c->started = false;
    }
}

void changes_free(changes_t *c)
{
    if (!c)
        return;
    changes_shutdown(c);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->stop_cond);
    free(c);
}

unsigned long long changes_seq(changes_t *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned long long s = c->seq;
    pthread_mutex_unlock(&c->lock);
    return s;
}

void changes_bump(changes_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->seq++;
    resume_all(c);
    pthread_mutex_unlock(&c->lock);
}

bool changes_wait(changes_t *c, void *conn, unsigned long long seen)
{
    waiter_t *w = malloc(sizeof *w);
    if (!w)
        return false;
    pthread_mutex_lock(&c->lock);
    if (c->stopping || c->seq != seen) {
        pthread_mutex_unlock(&c->lock);
        free(w);
        return false;
    }
    /* Suspending under the lock: a bump cannot slip in between the check
     * above and the registration, so no wake-up is lost. */
    MHD_suspend_connection(conn);
    w->conn = conn;
    w->next = c->waiters;
    c->waiters = w;
    pthread_mutex_unlock(&c->lock);
    return true;
}
