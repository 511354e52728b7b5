#include "db_pool.h"

#include <stdlib.h>

int db_pool_open(db_pool_t *p, const char *url, int n, err_t *e)
{
    p->conns = calloc((size_t)n, sizeof *p->conns);
    p->busy = calloc((size_t)n, sizeof *p->busy);
    if (!p->conns || !p->busy) {
        free(p->conns);
        free(p->busy);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    p->n = n;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->freed, NULL);
    fifo_lock_init(&p->write_lock);
    for (int i = 0; i < n; i++) {
        if (!(p->conns[i] = db_open(url, e))) {
            db_pool_close(p);
            return -1;
        }
        db_set_write_lock(p->conns[i], &p->write_lock);
    }
    /* The response cache and the nodes' wake-ups rest on the data version,
     * which a backend may count for this process's writes only (SQLite):
     * then no other process may write beside it (a no-op otherwise). */
    if (db_claim(p->conns[0], e) < 0) {
        db_pool_close(p);
        return -1;
    }
    p->shared = db_shared(p->conns[0]);
    return 0;
}

void db_pool_close(db_pool_t *p)
{
    if (!p->conns)
        return;
    /* conns[0] holds db_claim's lock: closed last (see db.h). */
    for (int i = p->n - 1; i >= 0; i--)
        db_close(p->conns[i]);
    free(p->conns);
    free(p->busy);
    p->conns = NULL;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    fifo_lock_destroy(&p->write_lock);
}

/* Any connection will do, busy or not: the version is the database's,
 * shared by every connection of the process (db.h). */
unsigned long long db_pool_version(db_pool_t *p)
{
    return db_data_version(p->conns[0], DB_FEED_WRITES);
}

db_t *db_pool_acquire(db_pool_t *p)
{
    pthread_mutex_lock(&p->lock);
    for (;;) {
        for (int i = 0; i < p->n; i++) {
            if (!p->busy[i]) {
                p->busy[i] = true;
                pthread_mutex_unlock(&p->lock);
                return p->conns[i];
            }
        }
        pthread_cond_wait(&p->freed, &p->lock);
    }
}

void db_pool_release(db_pool_t *p, db_t *db)
{
    /* A transaction left open by a handler would keep the write lock, and
     * with it every writer, waiting forever: end it. */
    db_rollback(db);
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->n; i++)
        if (p->conns[i] == db)
            p->busy[i] = false;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}
