/* admin.h - helpers shared by the supplier's admin API handlers. */
#ifndef IMP_ADMIN_H
#define IMP_ADMIN_H

#include "api.h"

/* Look up ids by their admin-facing names; 0 when absent, -1 on error. */
long long admin_customer_id(db_t *db, err_t *e, const char *username);
long long admin_server_id(db_t *db, err_t *e, const char *name_or_address);

/* Lines given either as a JSON list of strings or one string: joined with
 * '\n' into a fresh string; NULL if the value is neither. */
char *admin_lines(json_t *v);

#endif
