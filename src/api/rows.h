/* rows.h - query results as JSON lists, and the handlers' list replies.
 *
 * One out-of-memory policy for every list: a row that cannot be made, or
 * an array that cannot grow, fails the whole list with ERR_INTERNAL "out of
 * memory" (a list with rows missing would look complete to the caller), and
 * a handler answers that with a logged 500. */
#ifndef IMP_ROWS_H
#define IMP_ROWS_H

#include "../common/db.h"
#include "req.h"

#include <jansson.h>

/* The JSON of row `row` of `res`, or NULL when out of memory. */
typedef json_t *(*row_json_fn)(db_res_t *res, int row);
/* The same for rows that need more queries or the caller's `ctx`: NULL
 * with e set, or out of memory when e is left unset. */
typedef json_t *(*row_query_fn)(db_t *db, err_t *e, db_res_t *res, int row, void *ctx);

/* The rows of `sql` (args as DB_ARGS gives them), one `fn` value each, as
 * a JSON array; NULL with e set (e must start unset). */
json_t *rows_json(db_t *db, err_t *e, row_json_fn fn, const char *sql, int nargs,
                  const db_val *args);
json_t *rows_query_json(db_t *db, err_t *e, row_query_fn fn, void *ctx, const char *sql,
                        int nargs, const db_val *args);

/* Answer 200 with `list`, or the error of a list that could not be made
 * (list NULL; e says why: 500 logged for ERR_INTERNAL). */
void reply_list(req_t *r, json_t *list, const err_t *e);

/* rows_json + reply_list: a handler's "GET of a list" in one call. */
void reply_rows(req_t *r, row_json_fn fn, const char *sql, int nargs, const db_val *args);

/* The first column of `sql` (one parameter, $1 = arg), container ids, as
 * a list of their uids; NULL with e set. */
json_t *rows_uid_list(db_t *db, err_t *e, const char *sql, long long arg);
/* The same as a list of strings (the column must be NOT NULL). */
json_t *rows_str_list(db_t *db, err_t *e, const char *sql, long long arg);

#endif
