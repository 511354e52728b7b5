#include "rows.h"

json_t *rows_int_list(db_t *db, err_t *e, const char *sql, long long arg, long long add)
{
    db_res_t *res = db_query(db, e, sql, DB_ARGS(DB_INT(arg)));
    if (!res)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; out && i < res->nrows; i++)
        json_array_append_new(out, json_integer(db_get_int(res, i, 0) + add));
    db_res_free(res);
    if (!out)
        err_set(e, ERR_INTERNAL, "out of memory");
    return out;
}

json_t *rows_str_list(db_t *db, err_t *e, const char *sql, long long arg)
{
    db_res_t *res = db_query(db, e, sql, DB_ARGS(DB_INT(arg)));
    if (!res)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; out && i < res->nrows; i++)
        if (!db_is_null(res, i, 0))
            json_array_append_new(out, json_string(db_get(res, i, 0)));
    db_res_free(res);
    if (!out)
        err_set(e, ERR_INTERNAL, "out of memory");
    return out;
}
