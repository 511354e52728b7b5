/* schema.h - versioned schema migrations, applied at start-up. */
#ifndef IMP_SCHEMA_H
#define IMP_SCHEMA_H

#include "../common/db.h"

/* Bring the database to the newest schema version, one transaction per step. */
int schema_migrate(db_t *db, err_t *e);
int schema_latest_version(void);

#endif
