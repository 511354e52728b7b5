/* schema.h - versioned schema migrations, applied at start-up. */
#ifndef IMP_SCHEMA_H
#define IMP_SCHEMA_H

#include "../common/db.h"

/* Bring the database to the newest schema version, one transaction per step. */
int schema_migrate(db_t *db, err_t *e);
/* ... only up to version `target` (tests of the steps themselves). */
int schema_migrate_to(db_t *db, err_t *e, int target);
int schema_latest_version(void);

#endif
