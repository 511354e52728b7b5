/* db_common.c - backend-independent parts of db.h. */
#include "db.h"

#include <stdlib.h>

long long db_exec(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    db_res_t *r = db_query(db, e, sql, n, args);
    if (!r)
        return -1;
    long long changes = r->changes;
    db_res_free(r);
    return changes;
}

void db_res_free(db_res_t *r)
{
    if (!r)
        return;
    for (long i = 0; i < (long)r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    free(r);
}

const char *db_get(const db_res_t *r, int row, int col)
{
    return r->cells[(size_t)row * (size_t)r->ncols + (size_t)col];
}

long long db_get_int(const db_res_t *r, int row, int col)
{
    const char *s = db_get(r, row, col);
    return s ? strtoll(s, NULL, 10) : 0;
}

bool db_is_null(const db_res_t *r, int row, int col) { return db_get(r, row, col) == NULL; }

long long db_scalar_int(db_t *db, err_t *e, long long dflt, const char *sql, int n,
                        const db_val *args)
{
    db_res_t *r = db_query(db, e, sql, n, args);
    if (!r)
        return -1;
    long long v = r->nrows > 0 && !db_is_null(r, 0, 0) ? db_get_int(r, 0, 0) : dflt;
    db_res_free(r);
    return v;
}
