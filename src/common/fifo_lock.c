/* fifo_lock.c - see fifo_lock.h.  Each waiter sleeps on a condition
 * variable of its own, so an unlock wakes exactly the next owner. */
#include "fifo_lock.h"

struct fifo_waiter {
    pthread_cond_t cond;
    bool granted;
    fifo_waiter_t *next;
};

int fifo_lock_init(fifo_lock_t *l)
{
    l->held = false;
    l->waiting = 0;
    l->head = l->tail = NULL;
    return pthread_mutex_init(&l->m, NULL) == 0 ? 0 : -1;
}

void fifo_lock_destroy(fifo_lock_t *l) { pthread_mutex_destroy(&l->m); }

void fifo_lock(fifo_lock_t *l)
{
    pthread_mutex_lock(&l->m);
    if (!l->held) { /* free means nobody waits either: unlock hands it over */
        l->held = true;
        pthread_mutex_unlock(&l->m);
        return;
    }
    fifo_waiter_t w = {.granted = false, .next = NULL};
    pthread_cond_init(&w.cond, NULL);
    if (l->tail)
        l->tail->next = &w;
    else
        l->head = &w;
    l->tail = &w;
    l->waiting++;
    while (!w.granted)
        pthread_cond_wait(&w.cond, &l->m);
    pthread_mutex_unlock(&l->m);
    pthread_cond_destroy(&w.cond);
}

void fifo_unlock(fifo_lock_t *l)
{
    pthread_mutex_lock(&l->m);
    fifo_waiter_t *w = l->head;
    if (w) {
        /* Still held: it passes to w, whom nobody can overtake. */
        l->head = w->next;
        l->waiting--;
        if (!l->head)
            l->tail = NULL;
        w->granted = true;
        pthread_cond_signal(&w->cond);
    } else {
        l->held = false;
    }
    pthread_mutex_unlock(&l->m);
}
