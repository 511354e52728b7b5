/* changes.h - wake the nodes' long polls when the desired state may change.
 *
 * The wake-ups are the database's DB_FEED_NOTICES feed (db.h): every
 * successful write request that may change what a node runs calls
 * changes_bump, which moves the feed (db_notify); a watcher thread waits on
 * the feed and resumes every suspended long poll when it moves; each poll
 * then recomputes its node's state and answers if its version changed, or
 * suspends again.  The watcher also resumes them twice a second when
 * nothing moved, which enforces the polls' deadlines.  A backend shared
 * by several API processes moves the feed for all of them, so a write
 * through one wakes the polls held by another. */
#ifndef IMP_CHANGES_H
#define IMP_CHANGES_H

#include "../common/db.h"

#include <pthread.h>
#include <stdbool.h>

typedef struct changes changes_t;

/* `db`: a connection of the database whose feed to follow (the pool's
 * first: the feed's calls may share it with the thread using it, db.h);
 * it must outlive the changes_t.  Every `recheck_ms` without a move the
 * waiters are resumed anyway (their deadlines, a missed move). */
changes_t *changes_new(db_t *db, int recheck_ms);
/* Start the watcher thread; -1 with e set (pthread_create's reason) if it
 * cannot be created. */
int changes_start(changes_t *c, err_t *e);
/* Resume every waiter and refuse new ones: call before stopping the HTTP
 * daemon (libmicrohttpd cannot stop with suspended connections). */
void changes_shutdown(changes_t *c);
void changes_free(changes_t *c);

/* The current sequence number: read it before computing a state. */
unsigned long long changes_seq(changes_t *c);
/* Something was written (and committed): wake every waiter. */
void changes_bump(changes_t *c);

/* Suspend `conn` (a struct MHD_Connection *, from inside its request
 * handler) until the next bump or tick.  Returns false, without
 * suspending, when the sequence moved past `seen` meanwhile (the caller
 * recomputes at once) or when shutting down. */
bool changes_wait(changes_t *c, void *conn, unsigned long long seen);

#endif
