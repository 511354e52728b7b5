/* rows.h - one-column query results as JSON lists. */
#ifndef IMP_ROWS_H
#define IMP_ROWS_H

#include "../common/db.h"

#include <jansson.h>

/* The first column of `sql` (one parameter, $1 = arg) as a list of
 * integers, each plus `add` (uids are ids + 30000); NULL with e set. */
json_t *rows_int_list(db_t *db, err_t *e, const char *sql, long long arg, long long add);
/* The same as a list of strings (NULL cells are skipped). */
json_t *rows_str_list(db_t *db, err_t *e, const char *sql, long long arg);

#endif
