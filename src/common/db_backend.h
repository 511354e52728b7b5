/* db_backend.h - what a storage backend implements (for db_common.c and
 * the backends only; everyone else uses db.h).
 *
 * A backend is one table of operations.  db_open finds it by the URL's
 * scheme in db_common.c's table and calls its open, which returns its own
 * connection struct whose first member is a `struct db` pointing back at
 * the table; every db.h call then goes through db->be.  The operations
 * mean exactly what their db.h counterparts say (db_query: be->query...). */
#ifndef IMP_DB_BACKEND_H
#define IMP_DB_BACKEND_H

#include "db.h"

typedef struct db_backend {
    /* `url` as given; `target` what follows the scheme (all of `url` when
     * it has none). */
    db_t *(*open)(const char *url, const char *target, err_t *e);
    void (*close)(db_t *db);
    db_res_t *(*query)(db_t *db, err_t *e, const char *sql, int n, const db_val *args);
    int (*exec_script)(db_t *db, err_t *e, const char *sql);
    int (*begin)(db_t *db, err_t *e);
    int (*commit)(db_t *db, err_t *e);
    void (*rollback)(db_t *db);
    int (*read_begin)(db_t *db, err_t *e);
    void (*read_end)(db_t *db);
    void (*set_write_lock)(db_t *db, fifo_lock_t *lock);
    int (*claim)(db_t *db, err_t *e);
    int (*schema_begin)(db_t *db, err_t *e);
    int (*schema_commit)(db_t *db, err_t *e);
    void (*schema_rollback)(db_t *db);
    int (*ids_never_reused)(db_t *db, err_t *e, const char *table);
    /* The data version (db.h, with the guarantees listed there). */
    unsigned long long (*data_version)(db_t *db, db_feed feed);
    void (*notify)(db_t *db);
    unsigned long long (*data_wait)(db_t *db, db_feed feed, unsigned long long since,
                                    long long deadline_ms);
    /* Several processes on one database (db.h, issue 20). */
    bool (*shared)(db_t *db);
    int (*data_version_now)(db_t *db, err_t *e, unsigned long long *v);
    long long (*id_high)(db_t *db, err_t *e, const char *table);
    int (*id_set_high)(db_t *db, err_t *e, const char *table, long long high);
} db_backend_t;

/* The head of every backend's connection struct. */
struct db {
    const db_backend_t *be;
};

/* db_exec's answer from a query's result: rows changed, or -1 when
 * there is no result; frees it.  (db_res.c, for db_common.c and the
 * backends' own statements alike.) */
long long db_res_changes(db_res_t *r);

/* The backends (each in its own file). */
extern const db_backend_t db_sqlite_backend;
extern const db_backend_t db_pg_backend;

#endif
