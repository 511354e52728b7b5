/* db_fixture.h - the unit tests' one database fixture: a SQLite file in a
 * fresh temporary directory, migrated to the latest schema or to an older
 * version (to test a migration).  Header-only: each test is one file. */
#ifndef IMP_TEST_DB_FIXTURE_H
#define IMP_TEST_DB_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/schema.h"
#include "../../src/common/db.h"

typedef struct {
    char dir[64];
    char path[128]; /* sqlite:<dir>/t.db */
    db_t *db;
} db_fixture_t;

/* version 0: the latest schema.  0 on success; the reason on stderr. */
static inline int db_fixture_open(db_fixture_t *f, int version)
{
    strcpy(f->dir, "/tmp/imperium-unit-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "sqlite:%s/t.db", f->dir);
    err_t e = {0};
    f->db = db_open(f->path, &e);
    if (!f->db || (version ? schema_migrate_to(f->db, &e, version) : schema_migrate(f->db, &e)) < 0) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static inline int db_fixture_close(db_fixture_t *f)
{
    db_close(f->db);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* cmocka setup/teardown: *state is a calloc'ed db_fixture_t. */
static inline int db_fixture_setup_version(void **state, int version)
{
    db_fixture_t *f = calloc(1, sizeof *f);
    if (!f || db_fixture_open(f, version) < 0)
        return -1;
    *state = f;
    return 0;
}

static inline int db_fixture_setup(void **state) { return db_fixture_setup_version(state, 0); }

static inline int db_fixture_teardown(void **state)
{
    db_fixture_t *f = *state;
    int rc = db_fixture_close(f);
    free(f);
    return rc;
}

#endif
