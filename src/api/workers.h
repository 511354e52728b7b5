/* workers.h - the threads that run requests needing the database.
 *
 * libmicrohttpd's threads (one per core) read requests and answer those the
 * response cache holds; anything else is suspended and handed to this pool,
 * whose threads may block (a password's argon2 check, a domain's DNS check,
 * the SQLite write lock) without holding up the connections of an HTTP
 * thread. */
#ifndef IMP_WORKERS_H
#define IMP_WORKERS_H

#include "../common/err.h"

typedef struct workers workers_t;

/* A unit of work; its storage belongs to the submitter until fn runs. */
typedef struct work {
    void (*fn)(struct work *w);
    struct work *next;
} work_t;

workers_t *workers_start(int n, err_t *e);
/* Queue `w`; -1 once the pool is stopping (w is not run). */
int workers_submit(workers_t *p, work_t *w);
/* Run what is queued, then end the threads; later submissions fail. */
void workers_stop(workers_t *p);
void workers_free(workers_t *p);

#endif
