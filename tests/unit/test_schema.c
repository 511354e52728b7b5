/* Unit tests for the schema's migrations (src/common/schema.c) on SQLite: a
 * database made by an older binary keeps its rows, and afterwards never
 * hands out an id twice; several processes may migrate at once; the tables
 * a copy walks are all of them, in foreign key order. */
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

#include "db_fixture.h"

typedef db_fixture_t fixture_t;

/* A database at schema version 1, as the first release left it. */
static int setup_v1(void **state) { return db_fixture_setup_version(state, 1); }

static int teardown(void **state) { return db_fixture_teardown(state); }

static long long scalar(db_t *db, const char *sql)
{
    err_t e = {0};
    long long v = db_scalar_int(db, &e, -2, sql, DB_NOARGS);
    if (v == -1)
        fprintf(stderr, "%s: %s\n", sql, e.msg);
    return v;
}

static void exec_ok(db_t *db, const char *sql)
{
    err_t e = {0};
    if (db_exec(db, &e, sql, DB_NOARGS) < 0)
        fail_msg("%s: %s", sql, e.msg);
}

static void add_container(db_t *db, int n)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO containers (customer_id, server_id, name, memory, storage, uuid, "
             "secret_uuid, created) VALUES (1, 1, 'c%d', 10, 10, 'u%d', 's', 0)",
             n, n);
    exec_ok(db, sql);
}

/* A customer, a server, containers 1..3, a custom distro of container 1
 * booted by container 2, and container 3 booting custom distro 9 that a
 * deleted storage container took with it (what version 1 allowed). */
static void fill_v1(db_t *db)
{
    exec_ok(db, "INSERT INTO customers (username, password_hash, uuid, rsa_key, rsa_pubkey, "
                "created) VALUES ('kratos', 'h', 'cu', 'k', 'p', 0)");
    exec_ok(db, "INSERT INTO servers (name, address, memory, storage) "
                "VALUES ('s', '10.0.0.1', 100, 100)");
    for (int i = 1; i <= 3; i++)
        add_container(db, i);
    exec_ok(db, "UPDATE containers SET custom_distros_storage = 1 WHERE id = 1");
    exec_ok(db, "INSERT INTO custom_distros (container_id, name, path, uuid) "
                "VALUES (1, 'jessie', 'jessie', 'cd1')");
    exec_ok(db, "UPDATE containers SET custom_distro_id = 1 WHERE id = 2");
    exec_ok(db, "UPDATE containers SET custom_distro_id = 9 WHERE id = 3");
    exec_ok(db, "INSERT INTO ssh_keys (container_id, pos, key) VALUES (2, 0, 'ssh-ed25519 A')");
}

static void test_rows_survive_the_migration(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    fill_v1(f->db);
    assert_int_equal(schema_migrate(f->db, &e), 0);
    assert_int_equal(scalar(f->db, "SELECT MAX(version) FROM schema_version"),
                     schema_latest_version());
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM containers"), 3);
    assert_int_equal(scalar(f->db, "SELECT custom_distro_id FROM containers WHERE id = 2"), 1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM ssh_keys WHERE container_id = 2"), 1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM customers WHERE username = 'kratos'"),
                     1);
    /* The new columns, with their defaults. */
    assert_int_equal(scalar(f->db, "SELECT purge_deleted_before FROM servers"), 0);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM containers "
                                   "WHERE stopped_reason IS NOT NULL"),
                     1);
    /* The dangling custom distro is unset, with the reason. */
    db_res_t *r = db_query(f->db, &e,
                           "SELECT custom_distro_id, stopped_reason FROM containers WHERE id = 3",
                           DB_NOARGS);
    assert_non_null(r);
    assert_true(db_is_null(r, 0, 0));
    assert_string_equal(db_get(r, 0, 1), "stopped: custom distro 9 was deleted");
    db_res_free(r);
    /* Indexes and constraints came along. */
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                                   "AND name IN ('containers_customer', 'containers_server', "
                                   "'alarms_container', 'domains_customer')"),
                     4);
    assert_int_equal(db_exec(f->db, &e,
                             "INSERT INTO containers (customer_id, server_id, name, memory, "
                             "storage, uuid, secret_uuid, created) "
                             "VALUES (77, 1, 'x', 1, 1, 'ux', 's', 0)",
                             DB_NOARGS),
                     -1);
    assert_int_equal(e.kind, ERR_CONSTRAINT); /* foreign keys enforced again */
    e = (err_t){0};
    assert_int_equal(db_exec(f->db, &e,
                             "INSERT INTO tags (customer_id, name) VALUES (1, 'a'), (1, 'a')",
                             DB_NOARGS),
                     -1);
    assert_int_equal(e.kind, ERR_CONSTRAINT); /* UNIQUE (customer_id, name) kept */
    /* Deleting a container still cascades to its keys. */
    exec_ok(f->db, "DELETE FROM containers WHERE id = 2");
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM ssh_keys"), 0);
}

static void test_ids_never_reused(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    fill_v1(f->db);
    assert_int_equal(schema_migrate(f->db, &e), 0);
    /* The newest container goes: version 1 gave its id to the next one. */
    exec_ok(f->db, "DELETE FROM containers WHERE id = 3");
    add_container(f->db, 4);
    assert_int_equal(scalar(f->db, "SELECT MAX(id) FROM containers"), 4);
    /* Emptying a table does not reset it either, nor does a new custom distro
     * take the id of a deleted one. */
    exec_ok(f->db, "DELETE FROM custom_distros");
    exec_ok(f->db, "INSERT INTO custom_distros (container_id, name, path, uuid) "
                   "VALUES (1, 'b', 'b', 'cd2')");
    assert_int_equal(scalar(f->db, "SELECT id FROM custom_distros"), 2);
    exec_ok(f->db, "DELETE FROM news");
    exec_ok(f->db, "INSERT INTO news (content, date) VALUES ('a', 0)");
    exec_ok(f->db, "DELETE FROM news");
    exec_ok(f->db, "INSERT INTO news (content, date) VALUES ('b', 0)");
    assert_int_equal(scalar(f->db, "SELECT id FROM news"), 2);
}

/* Every table keyed by `id` grows only, fresh databases included, and so
 * must any table a later migration adds. */
static void test_every_id_table_grows_only(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(schema_migrate(f->db, &e), 0);
    db_res_t *r = db_query(f->db, &e,
                           "SELECT m.name, m.sql FROM sqlite_master m WHERE m.type = 'table' "
                           "AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) p "
                           "WHERE p.name = 'id' AND p.pk = 1)",
                           DB_NOARGS);
    assert_non_null(r);
    assert_true(r->nrows >= 12);
    for (int i = 0; i < r->nrows; i++)
        if (!strstr(db_get(r, i, 1), "id INTEGER PRIMARY KEY AUTOINCREMENT"))
            fail_msg("table %s: ids may be reused", db_get(r, i, 0));
    db_res_free(r);
    /* Running a rebuild again is a no-op. */
    assert_int_equal(db_schema_begin(f->db, &e), 0);
    assert_int_equal(db_ids_never_reused(f->db, &e, "containers"), 0);
    assert_int_equal(db_ids_never_reused(f->db, &e, "container_status"), -1);
    assert_non_null(strstr(e.msg, "container_status"));
    db_schema_rollback(f->db);
}

/* Version 4 gives each server the alarm_seq its alarms already had: the
 * newest alarm raised with the API for its containers (a node's own alarm,
 * node_ref set, is not one), 0 for a server without any. */
static int setup_v3(void **state) { return db_fixture_setup_version(state, 3); }

static void test_alarm_seq_from_the_alarms(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    fill_v1(f->db);
    exec_ok(f->db, "INSERT INTO servers (name, address, memory, storage) "
                   "VALUES ('t', '10.0.0.2', 100, 100)");
    exec_ok(f->db, "INSERT INTO alarms (id, container_id, level, unix, msg, node_ref) VALUES "
                   "(4, 1, 1, 0, 'api', NULL), (7, 2, 1, 0, 'api', NULL), "
                   "(9, 3, 0, 0, 'node', 'boot-1')");
    assert_int_equal(schema_migrate(f->db, &e), 0);
    assert_int_equal(scalar(f->db, "SELECT alarm_seq FROM servers WHERE id = 1"), 7);
    assert_int_equal(scalar(f->db, "SELECT alarm_seq FROM servers WHERE id = 2"), 0);
}

/* The index of `table` in a NULL-terminated list, -1 when absent. */
static int index_of(const char *const *list, const char *table)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], table))
            return i;
    return -1;
}

/* Every table but schema_version is copied, after each table its foreign
 * keys name, and every table keyed by id is in schema_id_tables. */
static void test_copy_order_is_every_table_parents_first(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(schema_migrate(f->db, &e), 0);
    db_res_t *r = db_query(f->db, &e,
                           "SELECT name, EXISTS (SELECT 1 FROM pragma_table_info(m.name) p "
                           "WHERE p.name = 'id' AND p.pk = 1) FROM sqlite_master m "
                           "WHERE type = 'table' AND name NOT IN ('schema_version', "
                           "'sqlite_sequence')",
                           DB_NOARGS);
    assert_non_null(r);
    int n = 0;
    while (schema_copy_order[n])
        n++;
    assert_int_equal(r->nrows, n); /* nothing listed twice, nothing missing */
    for (int i = 0; i < r->nrows; i++) {
        const char *t = db_get(r, i, 0);
        int at = index_of(schema_copy_order, t);
        if (at < 0)
            fail_msg("table %s is not in schema_copy_order", t);
        if ((index_of(schema_id_tables, t) >= 0) != (db_get_int(r, i, 1) == 1))
            fail_msg("table %s: schema_id_tables is wrong about its id", t);
        db_res_t *fk = db_query(f->db, &e, "SELECT \"table\" FROM pragma_foreign_key_list($1)",
                                DB_ARGS(DB_TEXT(t)));
        assert_non_null(fk);
        for (int k = 0; k < fk->nrows; k++)
            if (index_of(schema_copy_order, db_get(fk, k, 0)) >= at)
                fail_msg("table %s is copied before %s, which it refers to", t,
                         db_get(fk, k, 0));
        db_res_free(fk);
    }
    db_res_free(r);
}

/* The fixture's directory and URL, no database opened yet. */
static void new_file(db_fixture_t *f)
{
    strcpy(f->dir, "/tmp/imperium-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "sqlite:%s/t.db", f->dir);
}

/* schema_version reads without writing: a new database stays without a
 * schema_version table. */
static void test_version_of_a_new_database(void **state)
{
    (void)state;
    db_fixture_t f = {0};
    new_file(&f);
    err_t e = {0};
    assert_non_null(f.db = db_open(f.path, &e));
    assert_int_equal(schema_version(f.db, &e), 0);
    assert_int_equal(scalar(f.db, "SELECT COUNT(*) FROM sqlite_master"), 0);
    assert_int_equal(schema_migrate_to(f.db, &e, 2), 0);
    assert_int_equal(schema_version(f.db, &e), 2);
    assert_int_equal(schema_migrate(f.db, &e), 0);
    assert_int_equal(schema_version(f.db, &e), schema_latest_version());
    assert_int_equal(db_fixture_close(&f), 0);
}

typedef struct {
    const char *url;
    int rc;
    char msg[512];
} starter_t;

static void *start_one(void *arg)
{
    starter_t *s = arg;
    err_t e = {0};
    db_t *db = db_open(s->url, &e);
    s->rc = db ? schema_migrate(db, &e) : -1;
    snprintf(s->msg, sizeof s->msg, "%s", e.msg);
    db_close(db);
    return NULL;
}

/* Several instances starting at once on a new database all succeed, and
 * each step is applied once: the version is read under the step's lock. */
static void test_instances_migrating_at_once(void **state)
{
    (void)state;
    db_fixture_t f = {0};
    new_file(&f);
    enum { N = 4 };
    starter_t s[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        s[i] = (starter_t){.url = f.path};
        assert_int_equal(pthread_create(&th[i], NULL, start_one, &s[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (s[i].rc != 0)
            fail_msg("instance %d: %s", i, s[i].msg);
    }
    err_t e = {0};
    assert_non_null(f.db = db_open(f.path, &e));
    assert_int_equal(scalar(f.db, "SELECT COUNT(*) FROM schema_version"),
                     schema_latest_version());
    assert_int_equal(scalar(f.db, "SELECT COUNT(DISTINCT version) FROM schema_version"),
                     schema_latest_version());
    assert_int_equal(db_fixture_close(&f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rows_survive_the_migration, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_ids_never_reused, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_every_id_table_grows_only, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_alarm_seq_from_the_alarms, setup_v3, teardown),
        cmocka_unit_test_setup_teardown(test_copy_order_is_every_table_parents_first, setup_v1,
                                        teardown),
        cmocka_unit_test(test_version_of_a_new_database),
        cmocka_unit_test(test_instances_migrating_at_once),
    };
    return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
