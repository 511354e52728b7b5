/* Unit tests for the nodes' reports (src/api/node_channel.c, issue 16):
 * POST <node_prefix>/metrics and POST <node_prefix>/alarms, run through the
 * node route table on a migrated database, as a node of server 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/api/alarms.h"
#include "../../src/api/container_model.h"
#include "../../src/api/metrics.h"
#include "../../src/api/node_channel.h"
#include "../../src/api/routes.h"
#include "../../src/api/throttle.h"
#include "db_fixture.h"

#define T0 1700000040LL /* a sample's second */

static void exec_ok(db_t *db, const char *sql)
{
    err_t e = {0};
    if (db_exec(db, &e, sql, DB_NOARGS) < 0)
        fail_msg("%s: %s", sql, e.msg);
}

/* Customer 1 with containers 1 and 2 (uids 30001, 30002) on server 1,
 * container 3 on server 2; customer 2 with container 4 on server 1.
 * Domains: example.test (customer 1), other.test (customer 2). */
static int setup(void **state)
{
    if (db_fixture_setup(state) < 0)
        return -1;
    db_fixture_t *f = *state;
    static const char *const sql[] = {
        "INSERT INTO customers (id, username, password_hash, uuid, rsa_key, rsa_pubkey, "
        "created) VALUES (1, 'a', 'x', 'cu1', 'k', 'p', 0), (2, 'b', 'x', 'cu2', 'k', 'p', 0)",
        "INSERT INTO servers (id, name, address, memory, storage) VALUES "
        "(1, 'n1', '10.0.0.1', 9000, 9000), (2, 'n2', '10.0.0.2', 9000, 9000)",
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, uuid, "
        "secret_uuid, max_alarms, created) VALUES (1, 1, 1, 'a', 10, 10, 'u1', 's', 3, 0), "
        "(2, 1, 1, 'b', 10, 10, 'u2', 's', 100, 0), (3, 1, 2, 'c', 10, 10, 'u3', 's', 100, 0), "
        "(4, 2, 1, 'd', 10, 10, 'u4', 's', 100, 0)",
        "INSERT INTO domains (id, customer_id, name, uuid, created) VALUES "
        "(1, 1, 'example.test', 'd1', 0), (2, 2, 'other.test', 'd2', 0)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++)
        exec_ok(f->db, sql[i]);
    return 0;
}

static int teardown(void **state) { return db_fixture_teardown(state); }

/* The answer of `method` <node_prefix>/`route` with `body`, as server 1's
 * node; its status, and its JSON in *out (the caller frees it). */
static int node_call(db_t *db, const char *method, const char *route, const char *body,
                     json_t **out)
{
    char seg[32];
    snprintf(seg, sizeof seg, "%s", route);
    char *segs[API_MAX_SEGS] = {seg};
    bool known;
    const route_t *rt = route_find(node_tables, method, segs, 1, &known);
    assert_non_null(rt);
    req_t r = {.db = db, .method = method, .path = route, .body = body,
               .body_len = strlen(body), .node_server_id = 1, .status = 500};
    rt->fn(&r);
    int status = r.status;
    *out = r.out;
    r.out = NULL;
    req_free(&r);
    return status;
}

static long long scalar(db_t *db, const char *sql)
{
    err_t e = {0};
    long long v = db_scalar_int(db, &e, -2, sql, DB_NOARGS);
    if (v < 0)
        fail_msg("%s: %s", sql, e.msg);
    return v;
}

static long long answer_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("answer has no integer '%s'", key);
    return json_integer_value(v);
}

static char *range_text(json_t *j)
{
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static const char batch[] =
    "{\"containers\": [{\"uid\": 30001, \"unix\": 1700000040, "
    "\"m\": {\"cpu\": 1200, \"mem\": 5242880, \"quota\": 1048576}},"
    " {\"uid\": 30002, \"unix\": 1700000040, \"m\": {\"io.write\": 4096}}],"
    " \"domains\": [{\"name\": \"example.test\", \"uid\": 30001, \"unix\": 1700000040,"
    " \"m\": {\"hits\": 7, \"net.rx\": 2006, \"net.tx\": 7315}},"
    " {\"name\": \"example.test\", \"uid\": 30002, \"unix\": 1700000040, \"m\": {\"hits\": 3}}]}";

static void test_metrics_are_stored_once(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    for (int round = 0; round < 2; round++) { /* the second: a resend after a lost answer */
        json_t *out;
        assert_int_equal(node_call(f->db, "POST", "metrics", batch, &out), 200);
        assert_int_equal(answer_int(out, "stored"), 8);
        assert_int_equal(answer_int(out, "skipped"), 0);
        json_decref(out);
        assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM container_metrics"), 4);
        assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM domain_metrics"), 4);
    }
    char *got = range_text(metrics_container_range(f->db, &e, 1, "cpu", T0 - 60, T0 + 60));
    assert_string_equal(got, "[[1700000040,1200]]");
    free(got);
    /* Two containers served the domain in the same second: one entry each,
     * in the public platform's shape, by uid. */
    got = range_text(metrics_domain_range(f->db, &e, 1, "hits", T0 - 60, T0 + 60));
    assert_string_equal(got, "[{\"container\":30001,\"metrics\":[[1700000040,7]]},"
                             "{\"container\":30002,\"metrics\":[[1700000040,3]]}]");
    free(got);
}

/* Well formed but not storable: skipped and counted, the rest stored. */
static void test_what_is_not_this_nodes_is_skipped(void **state)
{
    db_fixture_t *f = *state;
    json_t *out;
    const char *body =
        "{\"containers\": [{\"uid\": 30003, \"unix\": 1700000040, \"m\": {\"cpu\": 1}},"
        " {\"uid\": 39999, \"unix\": 1700000040, \"m\": {\"cpu\": 1}},"
        " {\"uid\": 7, \"unix\": 1700000040, \"m\": {\"cpu\": 1}},"
        " {\"uid\": 30001, \"unix\": 1700000040, \"m\": {\"cpu\": 5, \"temperature\": 40}}],"
        " \"domains\": [{\"name\": \"other.test\", \"uid\": 30001, \"unix\": 1700000040,"
        " \"m\": {\"hits\": 1}},"
        " {\"name\": \"nowhere.test\", \"uid\": 30001, \"unix\": 1700000040, \"m\": {\"hits\": 1}},"
        " {\"name\": \"example.test\", \"uid\": 30003, \"unix\": 1700000040, \"m\": {\"hits\": 1}},"
        " {\"name\": \"example.test\", \"uid\": 30001, \"unix\": 1700000040,"
        " \"m\": {\"hits\": 2, \"cpu\": 9}}]}";
    assert_int_equal(node_call(f->db, "POST", "metrics", body, &out), 200);
    assert_int_equal(answer_int(out, "stored"), 2);
    assert_int_equal(answer_int(out, "skipped"), 8);
    json_decref(out);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM container_metrics"), 1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM container_metrics WHERE "
                                   "container_id = 1 AND metric = 'cpu' AND value = 5"),
                     1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM domain_metrics"), 1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM domain_metrics WHERE domain_id = 1 "
                                   "AND container_id = 1 AND value = 2"),
                     1);
}

/* A malformed part anywhere: 400 naming it, and nothing stored, not even
 * the good entries before it. */
static void test_bad_metrics_change_nothing(void **state)
{
    db_fixture_t *f = *state;
    static const char good[] = "{\"uid\": 30001, \"unix\": 1700000040, \"m\": {\"cpu\": 1}}";
    static const struct {
        const char *tail, *words;
    } bad[] = {
        {"{\"uid\": \"30001\", \"unix\": 1, \"m\": {}}", "containers[1].uid must be an integer"},
        {"{\"uid\": 30001, \"unix\": 0, \"m\": {}}", "containers[1].unix must be a positive"},
        {"{\"uid\": 30001, \"unix\": 5, \"m\": []}", "containers[1].m must be an object"},
        {"{\"uid\": 30001, \"unix\": 5, \"m\": {\"cpu\": -1}}",
         "containers[1].m.cpu must be a non-negative integer"},
        {"{\"uid\": 30001, \"unix\": 5, \"m\": {\"mem\": 1.5}}",
         "containers[1].m.mem must be a non-negative integer"},
        {"7", "containers[1] must be an object"},
        /* Past 2^53: refused, not stored to overflow what is made of it. */
        {"{\"uid\": 30001, \"unix\": 5, \"m\": {\"quota\": 9007199254740993}}",
         "containers[1].m.quota must be a non-negative integer of at most 2^53"},
        {"{\"uid\": 30001, \"unix\": 5, \"m\": {\"quota\": 9223372036854775807}}",
         "containers[1].m.quota must be"},
        /* Dated 2100: it would be the newest sample until then. */
        {"{\"uid\": 30001, \"unix\": 4102444800, \"m\": {\"quota\": 1}}",
         "containers[1].unix is more than 86400 seconds ahead of the API's clock"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"containers\": [%s, %s]}", good, bad[i].tail);
        json_t *out;
        assert_int_equal(node_call(f->db, "POST", "metrics", body, &out), 400);
        const char *reason = json_string_value(json_object_get(out, "reason"));
        if (!reason || !strstr(reason, bad[i].words))
            fail_msg("%s: reason %s, expected %s", body, reason, bad[i].words);
        json_decref(out);
    }
    static const char *const bodies[] = {
        "not json", "[1]", "{\"containers\": {}}",
        "{\"domains\": [{\"uid\": 30001, \"unix\": 5, \"m\": {\"hits\": 1}}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        json_t *out;
        assert_int_equal(node_call(f->db, "POST", "metrics", bodies[i], &out), 400);
        json_decref(out);
    }
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM container_metrics"), 0);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM domain_metrics"), 0);
}

static int post_alarms(db_t *db, const char *body, long long *stored)
{
    json_t *out;
    int status = node_call(db, "POST", "alarms", body, &out);
    if (status == 200)
        *stored = answer_int(out, "stored");
    json_decref(out);
    return status;
}

/* Level 0, in the container's slots (max_alarms 3: the oldest goes, node
 * alarms counted), a resent ref stored once, another server's skipped. */
static void test_node_alarms(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    alarm_t api_alarm = {.level = 1, .line = -1, .unix_time = 100, .msg = "raised"};
    assert_int_equal(alarm_store(f->db, &e, 1, &api_alarm), 1);
    api_alarm.unix_time = 101;
    assert_int_equal(alarm_store(f->db, &e, 1, &api_alarm), 1);
    const char *body = "{\"alarms\": ["
                       "{\"ref\": \"boot-1\", \"uid\": 30001, \"unix\": 200, \"class\": \"oom\","
                       " \"msg\": \"killed\"},"
                       "{\"ref\": \"boot-2\", \"uid\": 30001, \"unix\": 201, \"class\": \"quota\","
                       " \"msg\": \"90%\"},"
                       "{\"ref\": \"boot-3\", \"uid\": 30003, \"unix\": 201, \"msg\": \"x\"}]}";
    long long stored = -1;
    assert_int_equal(post_alarms(f->db, body, &stored), 200);
    assert_int_equal(stored, 2);
    /* 3 slots: the oldest API alarm made room. */
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms WHERE container_id = 1"), 3);
    assert_int_equal(scalar(f->db, "SELECT MIN(unix) FROM alarms WHERE container_id = 1"), 101);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms WHERE level = 0 AND "
                                   "class = 'oom' AND msg = 'killed' AND vassal = '' AND "
                                   "color = '#ffffff' AND node_ref = 'boot-1'"),
                     1);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms WHERE container_id = 3"), 0);
    /* Resent: nothing new, and nothing pushed out of the ring. */
    assert_int_equal(post_alarms(f->db, body, &stored), 200);
    assert_int_equal(stored, 0);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms WHERE container_id = 1"), 3);
    assert_int_equal(scalar(f->db, "SELECT MIN(unix) FROM alarms WHERE container_id = 1"), 101);
    /* The same ref from another container is another alarm. */
    assert_int_equal(post_alarms(f->db,
                                 "{\"alarms\": [{\"ref\": \"boot-1\", \"uid\": 30002, "
                                 "\"unix\": 5, \"msg\": \"m\"}]}",
                                 &stored),
                     200);
    assert_int_equal(stored, 1);
}

/* The node state's alarm_seq follows the API's alarms, not the node's. */
static void test_alarm_seq_follows_api_alarms(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    json_t *st = node_state_json(f->db, &e, 1);
    assert_non_null(st);
    assert_int_equal(answer_int(json_object_get(st, "server"), "alarm_seq"), 0);
    json_decref(st);
    long long stored;
    assert_int_equal(post_alarms(f->db,
                                 "{\"alarms\": [{\"ref\": \"r\", \"uid\": 30002, \"unix\": 5, "
                                 "\"msg\": \"m\"}]}",
                                 &stored),
                     200);
    alarm_t a = {.level = 1, .line = -1, .unix_time = 100, .msg = "raised"};
    assert_int_equal(alarm_store(f->db, &e, 3, &a), 1); /* server 2's container */
    st = node_state_json(f->db, &e, 1);
    assert_non_null(st);
    assert_int_equal(answer_int(json_object_get(st, "server"), "alarm_seq"), 0);
    json_decref(st);
    assert_int_equal(alarm_store(f->db, &e, 4, &a), 1);
    long long id = scalar(f->db, "SELECT MAX(id) FROM alarms");
    st = node_state_json(f->db, &e, 1);
    assert_non_null(st);
    assert_int_equal(answer_int(json_object_get(st, "server"), "alarm_seq"), id);
    json_decref(st);
    /* A column, not a MAX over the alarms: kept by the insert, and a
     * high-water mark (deleting the newest does not take it back). */
    assert_int_equal(scalar(f->db, "SELECT alarm_seq FROM servers WHERE id = 1"), id);
    exec_ok(f->db, "DELETE FROM alarms");
    st = node_state_json(f->db, &e, 1);
    assert_non_null(st);
    assert_int_equal(answer_int(json_object_get(st, "server"), "alarm_seq"), id);
    json_decref(st);
    json_t *out;
    assert_int_equal(node_call(f->db, "GET", "alarms", "", &out), 200);
    assert_int_equal(answer_int(out, "alarm_seq"), id);
    json_decref(out);
}

static void test_bad_alarms_change_nothing(void **state)
{
    db_fixture_t *f = *state;
    static const struct {
        const char *entry, *words;
    } bad[] = {
        {"{\"uid\": 30001, \"unix\": 5, \"msg\": \"m\"}", "alarms[1].ref must be non-empty"},
        {"{\"ref\": \"\", \"uid\": 30001, \"unix\": 5, \"msg\": \"m\"}", "alarms[1].ref"},
        {"{\"ref\": \"r\", \"uid\": 30001, \"unix\": 5}", "alarms[1].msg must be"},
        {"{\"ref\": \"r\", \"uid\": 30001, \"unix\": -1, \"msg\": \"m\"}",
         "alarms[1].unix must be an integer"},
        {"{\"ref\": \"r\", \"uid\": \"x\", \"unix\": 1, \"msg\": \"m\"}",
         "alarms[1].uid must be an integer"},
        {"{\"ref\": \"r\", \"uid\": 30001, \"unix\": 1, \"msg\": \"m\", \"class\": 4}",
         "alarms[1].class must be"},
        {"[]", "alarms[1] must be an object"},
        {"{\"ref\": \"r\", \"uid\": 30001, \"unix\": 4102444800, \"msg\": \"m\"}",
         "alarms[1].unix is more than 86400 seconds ahead of the API's clock"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"alarms\": [{\"ref\": \"ok\", \"uid\": 30001, \"unix\": 5, \"msg\": \"m\"}, "
                 "%s]}",
                 bad[i].entry);
        json_t *out;
        assert_int_equal(node_call(f->db, "POST", "alarms", body, &out), 400);
        const char *reason = json_string_value(json_object_get(out, "reason"));
        if (!reason || !strstr(reason, bad[i].words))
            fail_msg("%s: reason %s, expected %s", body, reason, bad[i].words);
        json_decref(out);
    }
    json_t *out;
    assert_int_equal(node_call(f->db, "POST", "alarms", "{\"alarms\": 3}", &out), 400);
    json_decref(out);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms"), 0);
}

/* Lowering storage below the newest reported quota sample: 409 naming both. */
static void test_storage_below_usage(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    assert_int_equal(storage_check_usage(f->db, &e, 1, 10, 5), 0); /* no sample yet */
    json_t *out;
    const char *body = "{\"containers\": [{\"uid\": 30001, \"unix\": 100, "
                       "\"m\": {\"quota\": 9000000}}, {\"uid\": 30001, \"unix\": 200, "
                       "\"m\": {\"quota\": 7340033}}]}"; /* the newest: 7 MB and a byte */
    assert_int_equal(node_call(f->db, "POST", "metrics", body, &out), 200);
    json_decref(out);
    assert_int_equal(storage_check_usage(f->db, &e, 1, 10, 7), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    assert_string_equal(e.msg, "storage 7 MB is below what the container uses (8 MB)");
    e = (err_t){0};
    assert_int_equal(storage_check_usage(f->db, &e, 1, 10, 8), 0);
    assert_int_equal(storage_check_usage(f->db, &e, 1, 6, 7), 0); /* raised: allowed */
    assert_int_equal(storage_check_usage(f->db, &e, 2, 10, 1), 0); /* another container */
}

/* A quota stored near LLONG_MAX (before the intake's bound): the MB it
 * reads as are rounded up without overflowing (UBSan aborted here). */
static void test_storage_check_huge_sample(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    exec_ok(f->db, "INSERT INTO container_metrics (container_id, metric, unix, value) "
                   "VALUES (1, 'quota', 100, 9223372036854775807)");
    assert_int_equal(storage_check_usage(f->db, &e, 1, 10, 5), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    assert_string_equal(e.msg,
                        "storage 5 MB is below what the container uses (8796093022208 MB)");
}

/* The newest sample by date, but not one dated far ahead (stored before
 * the intake refused them): it would decide the check until its date. */
static void test_storage_check_passes_over_far_future(void **state)
{
    db_fixture_t *f = *state;
    err_t e = {0};
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO container_metrics (container_id, metric, unix, value) VALUES "
             "(1, 'quota', 4102444800, 1), (1, 'quota', %lld, 9437184), "
             "(1, 'quota', %lld, 8388608)",
             (long long)time(NULL) - 60, (long long)time(NULL) - 60);
    exec_ok(f->db, sql);
    /* 2100's 1 byte ignored; of the two of one second, the larger (9 MB). */
    assert_int_equal(storage_check_usage(f->db, &e, 1, 10, 8), -1);
    assert_string_equal(e.msg, "storage 8 MB is below what the container uses (9 MB)");
}

/* A sample or alarm dated within a day ahead (a node's clock a little
 * off) is taken. */
static void test_near_future_is_taken(void **state)
{
    db_fixture_t *f = *state;
    char body[256];
    long long soon = (long long)time(NULL) + 3600;
    snprintf(body, sizeof body,
             "{\"containers\": [{\"uid\": 30001, \"unix\": %lld, \"m\": {\"cpu\": 1}}]}", soon);
    json_t *out;
    assert_int_equal(node_call(f->db, "POST", "metrics", body, &out), 200);
    assert_int_equal(answer_int(out, "stored"), 1);
    json_decref(out);
    snprintf(body, sizeof body,
             "{\"alarms\": [{\"ref\": \"r\", \"uid\": 30001, \"unix\": %lld, \"msg\": \"m\"}]}",
             soon);
    long long stored = 0;
    assert_int_equal(post_alarms(f->db, body, &stored), 200);
    assert_int_equal(stored, 1);
}

/* A container gone between node_container's look and the insert (here:
 * alarm_store_in finds no ring for it): skipped, the rest of the batch
 * stored, not a 404 that makes the node drop the whole batch. */
static void test_container_gone_meanwhile_is_skipped(void **state)
{
    db_fixture_t *f = *state;
    exec_ok(f->db, "UPDATE containers SET max_alarms = 0 WHERE id = 1");
    json_t *out;
    assert_int_equal(node_call(f->db, "POST", "alarms",
                               "{\"alarms\": [{\"ref\": \"a\", \"uid\": 30001, \"unix\": 5, "
                               "\"msg\": \"m\"}, {\"ref\": \"b\", \"uid\": 30002, "
                               "\"unix\": 5, \"msg\": \"m\"}]}",
                               &out),
                     200);
    assert_int_equal(answer_int(out, "stored"), 1);
    assert_int_equal(answer_int(out, "skipped"), 1);
    json_decref(out);
    assert_int_equal(scalar(f->db, "SELECT COUNT(*) FROM alarms WHERE container_id = 2"), 1);
}

/* The raise limit: a burst of `limit` per container, then one more every
 * 60 / limit seconds; other containers unaffected; 0 never limits. */
static void test_raise_limit(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(ALARM_RAISE_KEYS, 3, 60);
    assert_non_null(t);
    double now = 1000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(alarm_raise_admit(t, 1, now), 0);
    int wait = alarm_raise_admit(t, 1, now);
    assert_in_range(wait, 19, 20); /* one token every 20 s */
    assert_int_equal(alarm_raise_admit(t, 1, now + 5), 15);
    assert_int_equal(alarm_raise_admit(t, 2, now), 0);
    assert_int_equal(alarm_raise_admit(t, 1, now + 20), 0);
    assert_true(alarm_raise_admit(t, 1, now + 20) > 0);
    throttle_free(t);
    throttle_t *off = throttle_new(ALARM_RAISE_KEYS, 0, 60);
    assert_non_null(off);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(alarm_raise_admit(off, 1, now), 0);
    throttle_free(off);
    assert_int_equal(alarm_raise_admit(NULL, 1, now), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_are_stored_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_what_is_not_this_nodes_is_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_metrics_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_alarms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alarm_seq_follows_api_alarms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_alarms_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_below_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_check_huge_sample, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_check_passes_over_far_future, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_near_future_is_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_container_gone_meanwhile_is_skipped, setup,
                                        teardown),
        cmocka_unit_test(test_raise_limit),
    };
    return cmocka_run_group_tests_name("node_reports", tests, NULL, NULL);
}
