/* changes.h - wake the nodes' long polls when the desired state may change.
 *
 * Every successful write request bumps a sequence number and resumes every
 * suspended long poll; each poll then recomputes its node's state and answers
 * if its version changed, or suspends again.  A ticker also resumes them
 * twice a second, which bounds the delay for changes made by another API
 * instance sharing the database, and enforces the polls' deadlines. */
#ifndef IMP_CHANGES_H
#define IMP_CHANGES_H

#include <pthread.h>
#include <stdbool.h>

typedef struct changes changes_t;

changes_t *changes_new(void);
/* Start the ticker thread; -1 if it cannot be created. */
int changes_start(changes_t *c);
/* Resume every waiter and refuse new ones: call before stopping the HTTP
 * daemon (libmicrohttpd cannot stop with suspended connections). */
void changes_shutdown(changes_t *c);
void changes_free(changes_t *c);

/* The current sequence number: read it before computing a state. */
unsigned long long changes_seq(changes_t *c);
/* Something was written: wake every waiter. */
void changes_bump(changes_t *c);

/* Suspend `conn` (a struct MHD_Connection *, from inside its request
 * handler) until the next bump or tick.  Returns false, without
 * suspending, when the sequence moved past `seen` meanwhile (the caller
 * recomputes at once) or when shutting down. */
bool changes_wait(changes_t *c, void *conn, unsigned long long seen);

#endif
