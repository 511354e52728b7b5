#include "rows.h"
#include "../common/validate.h"

static void *out_of_memory(err_t *e)
{
    err_set(e, ERR_INTERNAL, "out of memory");
    return NULL;
}

json_t *rows_query_json(db_t *db, err_t *e, row_query_fn fn, void *ctx, const char *sql,
                        int nargs, const db_val *args)
{
    db_res_t *res = db_query(db, e, sql, nargs, args);
    if (!res)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; out && i < res->nrows; i++) {
        json_t *o = fn(db, e, res, i, ctx);
        /* append_new takes o even when it fails */
        if (!o || json_array_append_new(out, o) < 0) {
            json_decref(out);
            out = NULL;
        }
    }
    db_res_free(res);
    return out || e->kind != ERR_NONE ? out : out_of_memory(e);
}

/* rows_json's row_json_fn, called through rows_query_json. */
typedef struct {
    row_json_fn fn;
} plain_row_t;

static json_t *plain_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)db, (void)e;
    return ((plain_row_t *)ctx)->fn(res, row);
}

json_t *rows_json(db_t *db, err_t *e, row_json_fn fn, const char *sql, int nargs,
                  const db_val *args)
{
    return rows_query_json(db, e, plain_row, &(plain_row_t){fn}, sql, nargs, args);
}

void reply_list(req_t *r, json_t *list, const err_t *e)
{
    if (!list)
        return reply_err(r, e);
    reply(r, 200, list);
}

void reply_rows(req_t *r, row_json_fn fn, const char *sql, int nargs, const db_val *args)
{
    err_t e = {0};
    reply_list(r, rows_json(r->db, &e, fn, sql, nargs, args), &e);
}

static json_t *uid_cell(db_res_t *res, int row)
{
    return json_integer(container_uid(db_get_int(res, row, 0)));
}

json_t *rows_uid_list(db_t *db, err_t *e, const char *sql, long long arg)
{
    return rows_json(db, e, uid_cell, sql, DB_ARGS(DB_INT(arg)));
}

static json_t *str_cell(db_res_t *res, int row) { return json_string(db_get(res, row, 0)); }

json_t *rows_str_list(db_t *db, err_t *e, const char *sql, long long arg)
{
    return rows_json(db, e, str_cell, sql, DB_ARGS(DB_INT(arg)));
}
