/* changes.c - the nodes' long polls on the database's DB_FEED_NOTICES
 * (see changes.h). */
#include "changes.h"
#include "../common/clock.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

typedef struct waiter {
    struct MHD_Connection *conn;
    struct waiter *next;
} waiter_t;

struct changes {
    db_t *db;
    int recheck_ms; /* the watcher's longest wait: deadlines checked this often */
    pthread_mutex_t lock; /* waiters, stopping */
    waiter_t *waiters;
    bool stopping, started;
    pthread_t watcher;
};

changes_t *changes_new(db_t *db, int recheck_ms)
{
    changes_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->db = db;
    c->recheck_ms = recheck_ms;
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

/* Each move of the feed, or recheck_ms without one, resumes every waiter.
 * `seen` is the version the last wait returned: a move after that point
 * (even while resume_all runs) makes the next wait return at once, so no
 * bump is lost between two waits. */
static void *watcher_main(void *arg)
{
    changes_t *c = arg;
    unsigned long long seen = db_data_version(c->db, DB_FEED_NOTICES);
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        pthread_mutex_unlock(&c->lock);
        seen = db_data_wait(c->db, DB_FEED_NOTICES, seen, now_ms() + c->recheck_ms);
        pthread_mutex_lock(&c->lock);
        resume_all(c);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int changes_start(changes_t *c, err_t *e)
{
    int rc = pthread_create(&c->watcher, NULL, watcher_main, c);
    if (rc != 0)
        return err_set(e, ERR_INTERNAL, "the changes watcher thread: %s", strerror(rc));
    c->started = true;
    return 0;
}

void changes_shutdown(changes_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    bool was_stopping = c->stopping;
    c->stopping = true;
    resume_all(c);
    pthread_mutex_unlock(&c->lock);
    if (c->started) {
        /* The watcher sleeps in db_data_wait: a notice ends it at once,
         * and costs other processes' polls a recomputation at most. */
        if (!was_stopping)
            db_notify(c->db);
        pthread_join(c->watcher, NULL);
        c->started = false;
    }
}

void changes_free(changes_t *c)
{
    if (!c)
        return;
    changes_shutdown(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

unsigned long long changes_seq(changes_t *c) { return db_data_version(c->db, DB_FEED_NOTICES); }

void changes_bump(changes_t *c) { db_notify(c->db); }

bool changes_wait(changes_t *c, void *conn, unsigned long long seen)
{
    waiter_t *w = malloc(sizeof *w);
    if (!w)
        return false;
    pthread_mutex_lock(&c->lock);
    if (c->stopping || changes_seq(c) != seen) {
        pthread_mutex_unlock(&c->lock);
        free(w);
        return false;
    }
    /* Suspending under the lock: the watcher resumes waiters under it
     * too, after the feed moved, so a bump after the check above finds
     * this waiter registered and no wake-up is lost. */
    MHD_suspend_connection(conn);
    w->conn = conn;
    w->next = c->waiters;
    c->waiters = w;
    pthread_mutex_unlock(&c->lock);
    return true;
}
