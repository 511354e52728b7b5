/* Unit tests for the storage interface (db.h) on its SQLite backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_fixture.h"

typedef db_fixture_t fixture_t;

static int setup(void **state) { return db_fixture_setup(state); }

static int teardown(void **state) { return db_fixture_teardown(state); }

static void test_params_and_results(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(db_exec(f->db, &e,
                             "INSERT INTO distros (name, path) VALUES ($1, $2)",
                             DB_ARGS(DB_TEXT("Bookworm"), DB_TEXT("/srv/bookworm"))),
                     1);
    /* $2 used before $1, and $1 used twice: bound by number, not position. */
    db_res_t *r = db_query(f->db, &e,
                           "SELECT $2, name, $1, $1 + 1, NULL FROM distros WHERE path = $3",
                           DB_ARGS(DB_INT(41), DB_TEXT("x"), DB_TEXT("/srv/bookworm")));
    assert_non_null(r);
    assert_int_equal(r->nrows, 1);
    assert_int_equal(r->ncols, 5);
    assert_string_equal(db_get(r, 0, 0), "x");
    assert_string_equal(db_get(r, 0, 1), "Bookworm");
    assert_int_equal(db_get_int(r, 0, 2), 41);
    assert_int_equal(db_get_int(r, 0, 3), 42);
    assert_true(db_is_null(r, 0, 4));
    db_res_free(r);
    /* Zero rows and a default. */
    assert_int_equal(db_scalar_int(f->db, &e, -7, "SELECT id FROM distros WHERE id = $1",
                                   DB_ARGS(DB_INT(999))),
                     -7);
    /* The wrong number of parameters is an error, not a silent NULL bind. */
    assert_null(db_query(f->db, &e, "SELECT $1, $2", DB_ARGS(DB_INT(1))));
    assert_int_equal(e.kind, ERR_INTERNAL);
}

static void test_constraint_kind(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    const char *ins = "INSERT INTO news (content, public, date) VALUES ($1, $2, $3)";
    assert_int_equal(db_exec(f->db, &e, ins, DB_ARGS(DB_TEXT("a"), DB_INT(0), DB_INT(1))), 1);
    /* NOT NULL violation. */
    assert_int_equal(db_exec(f->db, &e, ins, DB_ARGS(DB_NULL, DB_INT(0), DB_INT(1))), -1);
    assert_int_equal(e.kind, ERR_CONSTRAINT);
    /* Foreign keys are enforced. */
    err_clear(&e);
    assert_int_equal(db_exec(f->db, &e,
                             "INSERT INTO tags (customer_id, name) VALUES ($1, $2)",
                             DB_ARGS(DB_INT(12345), DB_TEXT("web"))),
                     -1);
    assert_int_equal(e.kind, ERR_CONSTRAINT);
    /* A syntax error is internal, with SQLite's message. */
    err_clear(&e);
    assert_null(db_query(f->db, &e, "SELEC 1", DB_NOARGS));
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "syntax"));
}

static void test_transactions(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    const char *count = "SELECT COUNT(*) FROM distros";
    long long before = db_scalar_int(f->db, &e, 0, count, DB_NOARGS);
    assert_int_equal(db_begin(f->db, &e), 0);
    db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('t', '/t')", DB_NOARGS);
    db_rollback(f->db);
    assert_int_equal(db_scalar_int(f->db, &e, 0, count, DB_NOARGS), before);
    assert_int_equal(db_begin(f->db, &e), 0);
    db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('t', '/t')", DB_NOARGS);
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(db_scalar_int(f->db, &e, 0, count, DB_NOARGS), before + 1);
    /* Rolling back outside a transaction is harmless. */
    db_rollback(f->db);
}

static void test_statement_cache_by_text(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    /* Two different queries built in the same buffer must not share a
     * cached statement. */
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT %d", 1);
    assert_int_equal(db_scalar_int(f->db, &e, 0, sql, DB_NOARGS), 1);
    snprintf(sql, sizeof sql, "SELECT %d", 2);
    assert_int_equal(db_scalar_int(f->db, &e, 0, sql, DB_NOARGS), 2);
    /* Many distinct statements: the cache overflows without failing. */
    for (int i = 0; i < 300; i++) {
        snprintf(sql, sizeof sql, "SELECT %d + $1", i);
        assert_int_equal(db_scalar_int(f->db, &e, 0, sql, DB_ARGS(DB_INT(1))), i + 1);
    }
}

static void test_migrations_idempotent(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(schema_migrate(f->db, &e), 0);
    assert_int_equal(db_scalar_int(f->db, &e, 0, "SELECT MAX(version) FROM schema_version",
                                   DB_NOARGS),
                     schema_latest_version());
    /* A database from a newer binary is refused, not silently used. */
    db_exec(f->db, &e, "INSERT INTO schema_version (version) VALUES (999)", DB_NOARGS);
    assert_int_equal(schema_migrate(f->db, &e), -1);
    assert_non_null(strstr(e.msg, "newer"));
    db_exec(f->db, &e, "DELETE FROM schema_version WHERE version = 999", DB_NOARGS);
}

/* The response cache's invariant: the counter moves when, and only when, a
 * change is committed. */
static void test_commit_counter(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    atomic_ullong n;
    atomic_init(&n, 0);
    db_set_commit_counter(f->db, &n);
    assert_int_equal(db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('a', '/a')",
                             DB_NOARGS), 1);
    assert_int_equal(atomic_load(&n), 1); /* autocommit: at once */
    db_res_t *r = db_query(f->db, &e, "SELECT count(*) FROM distros", DB_NOARGS);
    assert_non_null(r);
    db_res_free(r);
    assert_int_equal(db_read_begin(f->db, &e), 0);
    db_read_end(f->db);
    assert_int_equal(atomic_load(&n), 1); /* reads and read transactions: never */
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'b'", DB_NOARGS), 1);
    assert_int_equal(atomic_load(&n), 1); /* not before the commit */
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(atomic_load(&n), 2);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'c'", DB_NOARGS), 1);
    db_rollback(f->db);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(atomic_load(&n), 2); /* rolled back, or nothing written */
    /* A write inside a read transaction ends it and counts as autocommit. */
    assert_int_equal(db_read_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'd'", DB_NOARGS), 1);
    assert_int_equal(atomic_load(&n), 3);
    db_read_end(f->db);
    assert_int_equal(atomic_load(&n), 3);
    /* A write that changes no row changes nothing a reader could see. */
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'x' WHERE name = 'none'",
                             DB_NOARGS), 0);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "DELETE FROM distros WHERE name = 'none'", DB_NOARGS),
                     0);
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(atomic_load(&n), 3);
}

static void test_claim_is_exclusive(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    db_t *other = db_open(f->path, &e);
    assert_non_null(other);
    assert_int_equal(db_claim(f->db, &e), 0);
    assert_int_equal(db_claim(other, &e), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "in use by another process"));
    db_close(f->db); /* the claim goes with its connection */
    f->db = NULL;
    e = (err_t){0};
    assert_int_equal(db_claim(other, &e), 0);
    f->db = other;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_params_and_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraint_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_cache_by_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_is_exclusive, setup, teardown),
    };
    return cmocka_run_group_tests_name("db", tests, NULL, NULL);
}
