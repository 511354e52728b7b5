/* db_res.c - reading a result of db.h (shared by every backend, which
 * frees its partial results with db_res_free too). */
#include "db_backend.h"

#include <stdlib.h>

void db_res_free(db_res_t *r)
{
    if (!r)
        return;
    for (long i = 0; i < (long)r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    for (int c = 0; r->names && c < r->ncols; c++)
        free(r->names[c]);
    free(r->names);
    free(r);
}

long long db_res_changes(db_res_t *r)
{
    if (!r)
        return -1;
    long long changes = r->changes;
    db_res_free(r);
    return changes;
}

const char *db_col_name(const db_res_t *r, int col)
{
    return r && r->names && col >= 0 && col < r->ncols ? r->names[col] : NULL;
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
