/* schema.h - the database schema: versioned migrations (imperium-api at
 * start-up, `imperium admin db migrate`) and what copying a database needs
 * (`imperium admin db copy`). */
#ifndef IMP_SCHEMA_H
#define IMP_SCHEMA_H

#include "db.h"

/* Bring the database to the newest schema version, one transaction per
 * step.  Each step takes the schema lock and reads the version inside it,
 * so several processes may migrate one database at once: one applies a
 * step, the others find it done. */
int schema_migrate(db_t *db, err_t *e);
/* ... only up to version `target` (tests of the steps themselves). */
int schema_migrate_to(db_t *db, err_t *e, int target);
int schema_latest_version(void);
/* The database's schema version now, 0 for a database without one; -1
 * with e.  Changes nothing. */
int schema_version(db_t *db, err_t *e);

/* Every table of the schema (schema_version aside), each after the tables
 * its foreign keys refer to: the order to copy rows in.  NULL-terminated. */
extern const char *const schema_copy_order[];
/* The tables keyed by an integer `id` that is never handed out twice (a
 * container's uid is 30000 + its id).  NULL-terminated. */
extern const char *const schema_id_tables[];

#endif
