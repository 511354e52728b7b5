/* db_version.h - the data version (db.h) kept inside this process: what a
 * backend that sees only its own process's writes (SQLite) implements
 * db_data_version / db_notify / db_data_wait with.
 *
 * One per database file, shared by every connection of the process to it
 * (found by device and inode, whatever path opened it), so the version is
 * the database's, not a pool's: any connection's committed write moves it
 * for all. */
#ifndef IMP_DB_VERSION_H
#define IMP_DB_VERSION_H

#include "db.h"

typedef struct dbv dbv_t;

/* The version of the file at `path`, with a reference released by
 * dbv_put; NULL or "" (an in-memory or temporary database) gives one of
 * its own.  NULL with e set on failure. */
dbv_t *dbv_get(const char *path, err_t *e);
void dbv_put(dbv_t *v);

unsigned long long dbv_version(dbv_t *v, db_feed feed);
/* Add one to `feed` and wake its waiters. */
void dbv_move(dbv_t *v, db_feed feed);
/* db_data_wait's contract (db.h). */
unsigned long long dbv_wait(dbv_t *v, db_feed feed, unsigned long long since,
                            long long deadline_ms);

#endif
