/* db_version.c - the in-process data version (see db_version.h).
 *
 * The versions are atomics, read without a lock on every cacheable GET;
 * the mutex only orders a move against a waiter's check-then-sleep, so
 * no wake-up falls between them. */
#include "db_version.h"
#include "clock.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct dbv {
    dev_t dev;
    ino_t ino;
    bool shared; /* in `files` (a file), or private (in memory) */
    int refs;    /* under files_lock */
    pthread_mutex_t lock;
    pthread_cond_t moved; /* CLOCK_MONOTONIC */
    atomic_ullong version[DB_FEEDS];
    struct dbv *next;
};

/* The process's open database files. */
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static dbv_t *files;

static dbv_t *dbv_new(err_t *e)
{
    dbv_t *v = calloc(1, sizeof *v);
    if (!v) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&v->moved, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (rc == 0 && (rc = pthread_mutex_init(&v->lock, NULL)) != 0)
        pthread_cond_destroy(&v->moved);
    if (rc != 0) {
        free(v);
        err_set(e, ERR_INTERNAL, "cannot make the data version's lock: %s", strerror(rc));
        return NULL;
    }
    for (int f = 0; f < DB_FEEDS; f++)
        atomic_init(&v->version[f], 0);
    v->refs = 1;
    return v;
}

static void dbv_destroy(dbv_t *v)
{
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->moved);
    free(v);
}

dbv_t *dbv_get(const char *path, err_t *e)
{
    if (!path || !*path)
        return dbv_new(e);
    struct stat st;
    if (stat(path, &st) < 0) {
        err_set(e, ERR_INTERNAL, "cannot stat %s: %s", path, strerror(errno));
        return NULL;
    }
    pthread_mutex_lock(&files_lock);
    dbv_t *v = files;
    while (v && !(v->dev == st.st_dev && v->ino == st.st_ino))
        v = v->next;
    if (v) {
        v->refs++;
    } else if ((v = dbv_new(e))) {
        v->dev = st.st_dev;
        v->ino = st.st_ino;
        v->shared = true;
        v->next = files;
        files = v;
    }
    pthread_mutex_unlock(&files_lock);
    return v;
}

void dbv_put(dbv_t *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&files_lock);
    bool last = --v->refs == 0;
    if (last && v->shared) {
        dbv_t **p = &files;
        while (*p != v)
            p = &(*p)->next;
        *p = v->next;
    }
    pthread_mutex_unlock(&files_lock);
    if (last)
        dbv_destroy(v);
}

unsigned long long dbv_version(dbv_t *v, db_feed feed) { return atomic_load(&v->version[feed]); }

void dbv_move(dbv_t *v, db_feed feed)
{
    pthread_mutex_lock(&v->lock);
    atomic_fetch_add(&v->version[feed], 1);
    pthread_cond_broadcast(&v->moved);
    pthread_mutex_unlock(&v->lock);
}

unsigned long long dbv_wait(dbv_t *v, db_feed feed, unsigned long long since,
                            long long deadline_ms)
{
    pthread_mutex_lock(&v->lock);
    unsigned long long now;
    while ((now = atomic_load(&v->version[feed])) == since) {
        long long left = deadline_ms - now_ms();
        if (left <= 0)
            break;
        struct timespec ts = clock_after_ms(left > INT_MAX ? INT_MAX : (int)left);
        pthread_cond_timedwait(&v->moved, &v->lock, &ts);
    }
    pthread_mutex_unlock(&v->lock);
    return now;
}
