/* Unit tests for the storage interface (db.h) on its SQLite backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/clock.h"
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

/* The response cache's invariant: the data version (DB_FEED_WRITES) moves
 * when, and only when, a change is committed. */
static unsigned long long writes_since(db_t *db, unsigned long long base)
{
    return db_data_version(db, DB_FEED_WRITES) - base;
}

static void test_data_version_moves_on_commit(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    unsigned long long base = db_data_version(f->db, DB_FEED_WRITES);
    assert_int_equal(db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('a', '/a')",
                             DB_NOARGS), 1);
    assert_int_equal(writes_since(f->db, base), 1); /* autocommit: at once */
    db_res_t *r = db_query(f->db, &e, "SELECT count(*) FROM distros", DB_NOARGS);
    assert_non_null(r);
    db_res_free(r);
    assert_int_equal(db_read_begin(f->db, &e), 0);
    db_read_end(f->db);
    assert_int_equal(writes_since(f->db, base), 1); /* reads and read transactions: never */
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'b'", DB_NOARGS), 1);
    assert_int_equal(writes_since(f->db, base), 1); /* not before the commit */
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(writes_since(f->db, base), 2);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'c'", DB_NOARGS), 1);
    db_rollback(f->db);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(writes_since(f->db, base), 2); /* rolled back, or nothing written */
    /* A write inside a read transaction ends it and counts as autocommit. */
    assert_int_equal(db_read_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'd'", DB_NOARGS), 1);
    assert_int_equal(writes_since(f->db, base), 3);
    db_read_end(f->db);
    assert_int_equal(writes_since(f->db, base), 3);
    /* A write that changes no row changes nothing a reader could see. */
    assert_int_equal(db_exec(f->db, &e, "UPDATE distros SET name = 'x' WHERE name = 'none'",
                             DB_NOARGS), 0);
    assert_int_equal(db_begin(f->db, &e), 0);
    assert_int_equal(db_exec(f->db, &e, "DELETE FROM distros WHERE name = 'none'", DB_NOARGS),
                     0);
    assert_int_equal(db_commit(f->db, &e), 0);
    assert_int_equal(writes_since(f->db, base), 3);
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

/* db_open(url) must fail with ERR_INPUT and a message holding `want`. */
static void refused(const char *url, const char *want)
{
    err_t e = {0};
    db_t *db = db_open(url, &e);
    if (db)
        db_close(db);
    assert_null(db);
    assert_int_equal(e.kind, ERR_INPUT);
    if (!strstr(e.msg, want))
        fail_msg("db_open(%s): \"%s\" lacks \"%s\"", url, e.msg, want);
}

/* The backend is chosen by the URL's scheme; a plain path is SQLite. */
static void test_url_schemes(void **state)
{
    fixture_t *f = *state;
    const char *dir = f->dir; /* absolute: /tmp/imperium-unit-... */
    char url[256], file[256];
    err_t e = {0};
    /* A plain path, "sqlite:/path" (the fixture's) and "sqlite:///path":
     * all one SQLite file, the same database. */
    snprintf(url, sizeof url, "%s/t.db", dir);
    db_t *plain = db_open(url, &e);
    assert_non_null(plain);
    snprintf(url, sizeof url, "sqlite://%s/t.db", dir);
    db_t *triple = db_open(url, &e);
    assert_non_null(triple);
    assert_int_equal(db_exec(plain, &e, "INSERT INTO distros (name, path) VALUES ('p', '/p')",
                             DB_NOARGS), 1);
    assert_int_equal(db_scalar_int(triple, &e, 0, "SELECT COUNT(*) FROM distros WHERE "
                                   "name = 'p'", DB_NOARGS), 1);
    assert_int_equal(db_scalar_int(f->db, &e, 0, "SELECT COUNT(*) FROM distros WHERE "
                                   "name = 'p'", DB_NOARGS), 1);
    db_close(triple);
    db_close(plain);
    /* PostgreSQL: libpq's to connect, not a file, and the URL's password
     * is not repeated (nothing listens on port 1). */
    static const char *const pg_urls[] = {
        "postgresql://imperium:s3cret@127.0.0.1:1/imperium?sslmode=disable&gssencmode=disable",
        "postgres://127.0.0.1:1/imperium?sslmode=disable&gssencmode=disable",
    };
    for (size_t i = 0; i < sizeof pg_urls / sizeof pg_urls[0]; i++) {
        e = (err_t){0};
        assert_null(db_open(pg_urls[i], &e));
        assert_int_equal(e.kind, ERR_UNAVAILABLE);
        assert_non_null(strstr(e.msg, "PostgreSQL"));
        assert_null(strstr(e.msg, "s3cret"));
    }
    assert_int_equal(access("postgresql:", F_OK), -1);
    assert_int_equal(access("postgres:", F_OK), -1);
    /* An unknown scheme names itself and the known ones. */
    refused("mysql://db.example/imperium", "\"mysql:\"");
    refused("mysql://db.example/imperium", "sqlite:, postgresql:, postgres:");
    assert_int_equal(access("mysql:", F_OK), -1);
    /* A SQLite URL names a local file. */
    refused("sqlite://db.example/imperium.db", "names a host");
    refused("sqlite:", "names no file");
    /* Nothing was created for the refused ones. */
    snprintf(file, sizeof file, "%s/imperium.db", dir);
    assert_int_equal(access(file, F_OK), -1);
}

/* What the API logs of its database URL: never a password. */
static void test_url_redacted(void **state)
{
    (void)state;
    char buf[256];
    static const char *const cases[][2] = {
        {"sqlite:imperium.db", "sqlite:imperium.db"},
        {"sqlite:///var/lib/imperium/imperium.db", "sqlite:///var/lib/imperium/imperium.db"},
        {"/tmp/x:y@z.db", "/tmp/x:y@z.db"},
        {"postgresql://imperium:s3cret@db.example:5432/imperium",
         "postgresql://imperium:***@db.example:5432/imperium"},
        {"postgres://u:p@ss@db/x", "postgres://u:***@db/x"},
        {"postgresql://imperium@db.example/imperium", "postgresql://imperium@db.example/imperium"},
        {"postgresql://db.example/imperium?user=i&password=s3cret&sslmode=require",
         "postgresql://db.example/imperium?user=i&password=***"},
        {"postgresql://db/x?password=s3cret", "postgresql://db/x?password=***"},
        {"postgresql://db/x?a=b:c@d", "postgresql://db/x?a=b:c@d"},
        /* What libpq would read as a password, unencoded '?', '#', '/' in it
         * (the last one a URL libpq refuses, but logged in its error), a
         * percent-encoded key, an unencoded '&' in the value. */
        {"postgresql://u:pa?ss#w@db/x", "postgresql://u:***@db/x"},
        {"postgresql://u:pa/ss@db/x", "postgresql://u:***@db/x"},
        {"postgresql://db/x?pass%77ord=s3cret&sslmode=require",
         "postgresql://db/x?pass%77ord=***"},
        {"postgresql://db/x?password=s3c&ret", "postgresql://db/x?password=***"},
        {"postgresql://db/x?passwordx=a&user=password", "postgresql://db/x?passwordx=a&user=password"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(db_url_redacted(cases[i][0], buf, sizeof buf), cases[i][1]);
    assert_string_equal(db_url_redacted(NULL, buf, sizeof buf), "");
    char small[16];
    assert_string_equal(db_url_redacted("postgresql://u:s3cret@h/d", small, sizeof small),
                        "postgresql://u:");
}

/* The version is the database's: a write through any connection of the
 * process moves it for all of them. */
static void test_data_version_is_the_databases(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    char url[256];
    snprintf(url, sizeof url, "%s/t.db", f->dir); /* another spelling of the file */
    db_t *other = db_open(url, &e);
    assert_non_null(other);
    unsigned long long base = db_data_version(f->db, DB_FEED_WRITES);
    assert_int_equal(db_data_version(other, DB_FEED_WRITES), base);
    assert_int_equal(db_exec(other, &e, "INSERT INTO distros (name, path) VALUES ('o', '/o')",
                             DB_NOARGS), 1);
    assert_int_equal(db_data_version(f->db, DB_FEED_WRITES), base + 1);
    /* Another database has its own. */
    db_t *mem = db_open("sqlite::memory:", &e);
    assert_non_null(mem);
    unsigned long long mine = db_data_version(mem, DB_FEED_WRITES);
    assert_int_equal(db_exec(mem, &e, "CREATE TABLE x (a)", DB_NOARGS), 0);
    assert_int_equal(db_exec(mem, &e, "INSERT INTO x VALUES (1)", DB_NOARGS), 1);
    assert_int_equal(db_data_version(mem, DB_FEED_WRITES), mine + 1);
    assert_int_equal(db_data_version(f->db, DB_FEED_WRITES), base + 1);
    db_close(mem);
    db_close(other);
}

/* Notices (the nodes' wake-ups) and writes are two feeds: a node's own
 * report commits a write but wakes no one. */
static void test_notices_are_their_own_feed(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    unsigned long long w = db_data_version(f->db, DB_FEED_WRITES);
    unsigned long long n = db_data_version(f->db, DB_FEED_NOTICES);
    assert_int_equal(db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('a', '/a')",
                             DB_NOARGS), 1);
    assert_int_equal(db_data_version(f->db, DB_FEED_NOTICES), n);
    db_notify(f->db);
    assert_int_equal(db_data_version(f->db, DB_FEED_NOTICES), n + 1);
    assert_int_equal(db_data_version(f->db, DB_FEED_WRITES), w + 1);
}

typedef struct {
    db_t *db;
    db_feed feed;
} mover_t;

/* 50 ms from now, move `feed` through another connection. */
static void *move_later(void *arg)
{
    mover_t *m = arg;
    sleep_ms(50);
    if (m->feed == DB_FEED_NOTICES)
        db_notify(m->db);
    else
        db_exec(m->db, NULL, "INSERT INTO distros (name, path) VALUES ('w', '/w')", DB_NOARGS);
    return NULL;
}

static void test_data_wait(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    char url[256];
    snprintf(url, sizeof url, "sqlite:%s/t.db", f->dir);
    db_t *other = db_open(url, &e);
    assert_non_null(other);
    for (int feed = 0; feed < DB_FEEDS; feed++) {
        /* Nothing moves: back at the deadline, with the same version. */
        unsigned long long v = db_data_version(f->db, feed);
        long long t0 = now_ms();
        assert_int_equal(db_data_wait(f->db, feed, v, t0 + 100), v);
        assert_true(now_ms() - t0 >= 100);
        /* Already moved past `since`: at once. */
        assert_int_equal(db_data_wait(f->db, feed, v - 1, t0 + 60000), v);
        /* A move by another thread and connection: back with it, long
         * before the deadline. */
        mover_t m = {other, feed};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, move_later, &m), 0);
        t0 = now_ms();
        assert_int_equal(db_data_wait(f->db, feed, v, t0 + 10000), v + 1);
        assert_true(now_ms() - t0 < 5000);
        pthread_join(th, NULL);
    }
    db_close(other);
}

/* The calls for several processes, on SQLite: one process, the version in
 * it, ids high marks in sqlite_sequence. */
static void test_shared_calls(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_false(db_shared(f->db));
    unsigned long long v = 99;
    assert_int_equal(db_data_version_now(f->db, &e, &v), 0);
    assert_int_equal(v, db_data_version(f->db, DB_FEED_WRITES));
    assert_int_equal(db_exec(f->db, &e, "INSERT INTO distros (name, path) VALUES ('a', '/a')",
                             DB_NOARGS), 1);
    assert_int_equal(db_data_version_now(f->db, &e, &v), 0);
    assert_int_equal(v, db_data_version(f->db, DB_FEED_WRITES));
    /* Result columns are named. */
    db_res_t *r = db_query(f->db, &e, "SELECT id, name AS n FROM distros", DB_NOARGS);
    assert_non_null(r);
    assert_string_equal(db_col_name(r, 0), "id");
    assert_string_equal(db_col_name(r, 1), "n");
    assert_null(db_col_name(r, 2));
    assert_null(db_col_name(r, -1));
    db_res_free(r);
    /* The mark outlives the newest row, is set forward only, and is used. */
    long long id = db_scalar_int(f->db, &e, -1, "SELECT MAX(id) FROM distros", DB_NOARGS);
    assert_int_equal(db_id_high(f->db, &e, "distros"), id);
    assert_int_equal(db_exec(f->db, &e, "DELETE FROM distros", DB_NOARGS), 1);
    assert_int_equal(db_id_high(f->db, &e, "distros"), id);
    assert_int_equal(db_id_set_high(f->db, &e, "distros", 100), 0);
    assert_int_equal(db_id_set_high(f->db, &e, "distros", 7), 0);
    assert_int_equal(db_id_high(f->db, &e, "distros"), 100);
    assert_int_equal(db_scalar_int(f->db, &e, -1, "INSERT INTO distros (name, path) VALUES "
                                   "('b', '/b') RETURNING id", DB_NOARGS),
                     101);
    /* A table never used yet has no sqlite_sequence row: 0, then one. */
    assert_int_equal(db_id_high(f->db, &e, "news"), 0);
    assert_int_equal(db_id_set_high(f->db, &e, "news", 12), 0);
    assert_int_equal(db_id_high(f->db, &e, "news"), 12);
    /* A table without AUTOINCREMENT has nowhere to keep a mark. */
    e = (err_t){0};
    assert_int_equal(db_id_set_high(f->db, &e, "container_status", 5), -1);
    assert_non_null(strstr(e.msg, "AUTOINCREMENT"));
    e = (err_t){0};
    assert_int_equal(db_id_high(f->db, &e, "no_such_table"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_params_and_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraint_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_cache_by_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_version_moves_on_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_is_exclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_schemes, setup, teardown),
        cmocka_unit_test(test_url_redacted),
        cmocka_unit_test_setup_teardown(test_data_version_is_the_databases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notices_are_their_own_feed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_calls, setup, teardown),
    };
    return cmocka_run_group_tests_name("db", tests, NULL, NULL);
}
