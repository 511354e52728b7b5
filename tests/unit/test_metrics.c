/* Unit tests for metrics.h: storing the nodes' samples and reading a day. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/metrics.h"
#include "db_fixture.h"

/* 2024-03-10 00:00:00 UTC */
#define DAY 1710028800LL

typedef struct {
    db_fixture_t base;
    db_t *db; /* base.db */
    long long c1, c2, dom; /* two containers and a domain of one customer */
} fixture_t;

static long long insert(db_t *db, const char *sql)
{
    err_t e = {0};
    long long id = db_scalar_int(db, &e, 0, sql, DB_NOARGS);
    if (id <= 0)
        fprintf(stderr, "fixture: %s: %s\n", sql, e.msg);
    return id;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    if (db_fixture_open(&f->base, 0) < 0)
        return -1;
    f->db = f->base.db;
    insert(f->db, "INSERT INTO customers (username, password_hash, uuid, rsa_key, rsa_pubkey, "
                  "created) VALUES ('kratos', 'x', 'u-1', 'k', 'p', 0) RETURNING id");
    insert(f->db, "INSERT INTO servers (name, address, memory, storage) "
                  "VALUES ('s1', '10.1.1.1', 1000, 1000) RETURNING id");
    f->c1 = insert(f->db, "INSERT INTO containers (customer_id, server_id, name, memory, "
                          "storage, uuid, secret_uuid, created) "
                          "VALUES (1, 1, 'one', 10, 10, 'c-1', 's-1', 0) RETURNING id");
    f->c2 = insert(f->db, "INSERT INTO containers (customer_id, server_id, name, memory, "
                          "storage, uuid, secret_uuid, created) "
                          "VALUES (1, 1, 'two', 10, 10, 'c-2', 's-2', 0) RETURNING id");
    f->dom = insert(f->db, "INSERT INTO domains (customer_id, name, uuid, created) "
                           "VALUES (1, 'example.org', 'd-1', 0) RETURNING id");
    *state = f;
    return f->c1 > 0 && f->c2 > 0 && f->dom > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int rc = db_fixture_close(&f->base);
    free(f);
    return rc;
}

/* The day's samples as compact JSON text, for one comparison per case. */
static char *day_text(json_t *samples)
{
    assert_non_null(samples);
    char *s = json_dumps(samples, JSON_COMPACT);
    json_decref(samples);
    assert_non_null(s);
    return s;
}

static void assert_container_day(fixture_t *f, long long cid, const char *metric,
                                 const char *want)
{
    err_t e = {0};
    char *got = day_text(metrics_container_range(f->db, &e, cid, metric, DAY, DAY + 86400));
    assert_string_equal(got, want);
    free(got);
}

static void assert_domain_day(fixture_t *f, const char *metric, const char *want)
{
    err_t e = {0};
    char *got = day_text(metrics_domain_range(f->db, &e, f->dom, metric, DAY, DAY + 86400));
    assert_string_equal(got, want);
    free(got);
}

static void test_metric_names(void **state)
{
    (void)state;
    const char *container[] = {"io.read", "io.write", "net.rx", "net.tx", "cpu",
                               "mem", "mem.rss", "mem.cache", "quota"};
    for (size_t i = 0; i < sizeof container / sizeof *container; i++)
        assert_true(metric_container_known(container[i]));
    assert_true(metric_domain_known("net.rx"));
    assert_true(metric_domain_known("net.tx"));
    assert_true(metric_domain_known("hits"));
    assert_false(metric_container_known("hits"));
    assert_false(metric_domain_known("cpu"));
    assert_false(metric_container_known(""));
    assert_false(metric_container_known("CPU"));
    assert_false(metric_container_known("mem."));
}

static void test_container_day_oldest_first(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    /* Stored out of order, with neighbours outside the day and other series. */
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY + 600, 7), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY, 5), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY + 86399, 9), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY - 1, 1), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY + 86400, 2), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "mem", DAY + 60, 100), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c2, "cpu", DAY + 60, 42), 0);
    assert_container_day(f, f->c1, "cpu", "[[1710028800,5],[1710029400,7],[1710115199,9]]");
    assert_container_day(f, f->c1, "mem", "[[1710028860,100]]");
    assert_container_day(f, f->c2, "cpu", "[[1710028860,42]]");
    assert_container_day(f, f->c1, "quota", "[]");
    err_t e2 = {0};
    json_t *next = metrics_container_range(f->db, &e2, f->c1, "cpu", DAY + 86400, DAY + 2 * 86400);
    char *text = day_text(next);
    assert_string_equal(text, "[[1710115200,2]]");
    free(text);
}

static void test_resent_sample_replaces(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "net.rx", DAY + 5, 10), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "net.rx", DAY + 5, 11), 0);
    assert_container_day(f, f->c1, "net.rx", "[[1710028805,11]]");
}

static void test_container_rejects(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "hits", DAY, 1), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_non_null(strstr(e.msg, "'hits'"));
    err_clear(&e);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY, -3), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    err_clear(&e);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", 0, 3), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    err_clear(&e);
    assert_int_equal(metrics_store_container(f->db, &e, 9999, "cpu", DAY, 3), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    /* Nothing of the above was stored. */
    assert_container_day(f, f->c1, "cpu", "[]");
    assert_int_equal(db_scalar_int(f->db, &e, -1, "SELECT COUNT(*) FROM container_metrics",
                                   DB_NOARGS),
                     0);
}

/* The public platform's shape: one entry per container (by uid, in id
 * order), samples of no container in particular last. */
static void test_domain_samples_per_container(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c1, "hits", DAY + 60, 3), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c2, "hits", DAY + 60, 4), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, 0, "hits", DAY + 30, 1), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c1, "net.tx", DAY + 60, 9), 0);
    assert_domain_day(f, "hits",
                      "[{\"container\":30001,\"metrics\":[[1710028860,3]]},"
                      "{\"container\":30002,\"metrics\":[[1710028860,4]]},"
                      "{\"container\":null,\"metrics\":[[1710028830,1]]}]");
    assert_domain_day(f, "net.tx", "[{\"container\":30001,\"metrics\":[[1710028860,9]]}]");
    assert_domain_day(f, "net.rx", "[]");
    /* "no container" is stored as NULL, not as a dangling 0. */
    assert_int_equal(db_scalar_int(f->db, &e, -1,
                                   "SELECT COUNT(*) FROM domain_metrics WHERE "
                                   "container_id IS NULL",
                                   DB_NOARGS),
                     1);
}

static void test_domain_resend_replaces_per_container(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, 0, "hits", DAY + 1, 1), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, 0, "hits", DAY + 1, 2), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c1, "hits", DAY + 1, 10), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c1, "hits", DAY + 1, 20), 0);
    assert_domain_day(f, "hits",
                      "[{\"container\":30001,\"metrics\":[[1710028801,20]]},"
                      "{\"container\":null,\"metrics\":[[1710028801,2]]}]");
}

static void test_domain_rejects(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, 0, "cpu", DAY, 1), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    err_clear(&e);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, -1, "hits", DAY, 1), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    err_clear(&e);
    assert_int_equal(metrics_store_domain(f->db, &e, 777, 0, "hits", DAY, 1), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    err_clear(&e);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, 888, "hits", DAY, 1), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    assert_int_equal(db_scalar_int(f->db, &e, -1, "SELECT COUNT(*) FROM domain_metrics",
                                   DB_NOARGS),
                     0);
}

static void test_deleting_a_domain_drops_its_samples(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c1, "hits", DAY, 1), 0);
    assert_int_equal(db_exec(f->db, &e, "DELETE FROM domains WHERE id = $1",
                             DB_ARGS(DB_INT(f->dom))),
                     1);
    assert_int_equal(db_scalar_int(f->db, &e, -1, "SELECT COUNT(*) FROM domain_metrics",
                                   DB_NOARGS),
                     0);
}

static void test_day_start(void **state)
{
    (void)state;
    err_t e = {0};
    long long start = 0;
    assert_int_equal(metrics_day_start(2024, 3, 10, &start, &e), 0);
    assert_int_equal(start, DAY);
    assert_int_equal(metrics_day_start(1970, 1, 1, &start, &e), 0);
    assert_int_equal(start, 0);
    assert_int_equal(metrics_day_start(2024, 2, 29, &start, &e), 0); /* leap year */
    assert_int_equal(start, 1709164800LL);
    assert_int_equal(metrics_day_start(2000, 2, 29, &start, &e), 0);
    static const long long bad[][3] = {
        {2023, 2, 29}, {1900, 2, 29}, {2024, 4, 31}, {2024, 13, 1}, {2024, 0, 1},
        {2024, 1, 0},  {2024, 1, 32}, {1969, 12, 31}, {10000, 1, 1}, {-5, 1, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        start = 12345;
        assert_int_equal(metrics_day_start(bad[i][0], bad[i][1], bad[i][2], &start, &e), -1);
        assert_int_equal(e.kind, ERR_INPUT);
        assert_true(e.msg[0] == '\'');
        assert_int_equal(start, 12345);
    }
}

/* [from, to): both ends, across days, for both kinds. */
static void test_ranges(void **state)
{
    fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY - 1, 1), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY + 86400, 2), 0);
    assert_int_equal(metrics_store_container(f->db, &e, f->c1, "cpu", DAY + 3 * 86400, 3), 0);
    char *got = day_text(metrics_container_range(f->db, &e, f->c1, "cpu", DAY - 1,
                                                 DAY + 3 * 86400));
    assert_string_equal(got, "[[1710028799,1],[1710115200,2]]");
    free(got);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c2, "hits", DAY - 1, 5), 0);
    assert_int_equal(metrics_store_domain(f->db, &e, f->dom, f->c2, "hits", DAY + 86400, 6), 0);
    got = day_text(metrics_domain_range(f->db, &e, f->dom, "hits", DAY, DAY + 86401));
    assert_string_equal(got, "[{\"container\":30002,\"metrics\":[[1710115200,6]]}]");
    free(got);
    got = day_text(metrics_domain_range(f->db, &e, f->dom, "hits", DAY, DAY + 86400));
    assert_string_equal(got, "[]");
    free(got);
}

static void test_range_check(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(metrics_range_check(0, 1, &e), 0);
    assert_int_equal(metrics_range_check(DAY, DAY + 31 * 86400, &e), 0);
    static const long long bad[][2] = {
        {DAY, DAY}, {DAY, DAY - 1}, {DAY, DAY + 31 * 86400 + 1}, {-1, 5}, {0, 1LL << 40},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(metrics_range_check(bad[i][0], bad[i][1], &e), -1);
        assert_int_equal(e.kind, ERR_INPUT);
        assert_non_null(strstr(e.msg, "'"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metric_names),
        cmocka_unit_test_setup_teardown(test_container_day_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_sample_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_container_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domain_samples_per_container, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domain_resend_replaces_per_container, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_domain_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleting_a_domain_drops_its_samples, setup,
                                        teardown),
        cmocka_unit_test(test_day_start),
        cmocka_unit_test(test_range_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
