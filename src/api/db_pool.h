/* db_pool.h - a fixed set of database connections for the worker threads. */
#ifndef IMP_DB_POOL_H
#define IMP_DB_POOL_H

#include "api.h"

int db_pool_open(db_pool_t *p, const char *url, int n, err_t *e);
void db_pool_close(db_pool_t *p);
/* The data version of the pool's database (db.h's DB_FEED_WRITES): read
 * before a request's snapshot, it tags what the request builds from it.
 * This process's count: exact only when the pool is not `shared` (api.h);
 * otherwise ask db_data_version_now on the request's connection. */
unsigned long long db_pool_version(db_pool_t *p);
/* Blocks until a connection is free. */
db_t *db_pool_acquire(db_pool_t *p);
void db_pool_release(db_pool_t *p, db_t *db);

#endif
