/* workers.c - a fixed pool of threads and a FIFO of work (see workers.h). */
#include "workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct workers {
    pthread_mutex_t lock;
    pthread_cond_t more;
    work_t *head, *tail;
    bool stopping;
    int n;
    pthread_t *threads;
};

static void *worker_main(void *arg)
{
    workers_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->more, &p->lock);
        work_t *w = p->head;
        if (!w)
            break; /* stopping, and nothing left */
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);
        w->fn(w);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

workers_t *workers_start(int n, err_t *e)
{
    workers_t *p = calloc(1, sizeof *p);
    if (!p || !(p->threads = calloc((size_t)n, sizeof *p->threads))) {
        free(p);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->more, NULL);
    for (; p->n < n; p->n++) {
        int rc = pthread_create(&p->threads[p->n], NULL, worker_main, p);
        if (rc != 0) {
            err_set(e, ERR_INTERNAL, "cannot start worker thread %d: %s", p->n, strerror(rc));
            workers_free(p);
            return NULL;
        }
    }
    return p;
}

int workers_submit(workers_t *p, work_t *w)
{
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return -1;
    }
    w->next = NULL;
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    pthread_cond_signal(&p->more);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void workers_stop(workers_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    bool joined = p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->more);
    pthread_mutex_unlock(&p->lock);
    if (joined)
        return;
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
}

void workers_free(workers_t *p)
{
    if (!p)
        return;
    workers_stop(p);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->more);
    free(p->threads);
    free(p);
}
