/* Unit tests for the node's metrics (src/node/sampler.c) and the cgroup
 * files they read (src/runtime/cgroup.c's cgroup_stat_value): the router's
 * stats JSON into per (domain, container) deltas, with a node that
 * vanishes and a router that restarts; counter resets; memory.stat; a
 * round cut into bodies the API takes (sampler_bodies). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/validate.h"
#include "../../src/node/sampler.h"
#include "../../src/runtime/cgroup.h"

/* Two nodes of container 30001 (two vassals) and one of 30002 on
 * example.test, a TCP node (not a container's: ignored), and 30001 on a
 * second domain. */
static const char ROUND1[] =
    "{\"version\":\"2.0.21\",\"subscriptions\":["
    "{\"key\":\"example.test\",\"hits\":12,\"nodes\":["
    "{\"name\":\"/containers/30001/run/example.test_a.ini.socket\",\"requests\":5,"
    "\"tx\":5000,\"rx\":1000,\"failcnt\":0},"
    "{\"name\":\"/containers/30001/run/example.test_b.ini.socket\",\"requests\":3,"
    "\"tx\":3000,\"rx\":600,\"failcnt\":0},"
    "{\"name\":\"/containers/30002/run/example.test_app.ini.socket\",\"requests\":4,"
    "\"tx\":400,\"rx\":40,\"failcnt\":0},"
    "{\"name\":\"127.0.0.1:19184\",\"requests\":7,\"tx\":7315,\"rx\":2006}]},"
    "{\"key\":\"other.test\",\"hits\":2,\"nodes\":["
    "{\"name\":\"/containers/30001/run/other.test_a.ini.socket\",\"requests\":2,"
    "\"tx\":20,\"rx\":10}]}]}";

/* Node b of 30001 vanished (its vassal reloaded: it served 1 more before
 * that, lost), a grew by 2; 30002 unchanged; other.test unchanged. */
static const char ROUND2[] =
    "{\"subscriptions\":["
    "{\"key\":\"example.test\",\"nodes\":["
    "{\"name\":\"/containers/30001/run/example.test_a.ini.socket\",\"requests\":7,"
    "\"tx\":7000,\"rx\":1400},"
    "{\"name\":\"/containers/30002/run/example.test_app.ini.socket\",\"requests\":4,"
    "\"tx\":400,\"rx\":40}]},"
    "{\"key\":\"other.test\",\"nodes\":["
    "{\"name\":\"/containers/30001/run/other.test_a.ini.socket\",\"requests\":2,"
    "\"tx\":20,\"rx\":10}]}]}";

/* The router restarted: every counter starts again; b subscribes again. */
static const char ROUND3[] =
    "{\"subscriptions\":["
    "{\"key\":\"example.test\",\"nodes\":["
    "{\"name\":\"/containers/30001/run/example.test_a.ini.socket\",\"requests\":1,"
    "\"tx\":100,\"rx\":10},"
    "{\"name\":\"/containers/30001/run/example.test_b.ini.socket\",\"requests\":2,"
    "\"tx\":200,\"rx\":20}]}]}";

/* The entry of (name, uid) in out, or NULL. */
static json_t *entry(json_t *out, const char *name, long long uid)
{
    size_t i;
    json_t *d;
    json_array_foreach(out, i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "name")), name) == 0 &&
            json_integer_value(json_object_get(d, "uid")) == uid)
            return d;
    }
    return NULL;
}

static long long m(json_t *d, const char *k)
{
    assert_non_null(d);
    json_t *v = json_object_get(json_object_get(d, "m"), k);
    assert_non_null(v);
    return (long long)json_integer_value(v);
}

static json_t *round_of(sub_table_t *t, const char *json, bool baseline, long long unix_time)
{
    err_t e = {0};
    json_t *out = json_array();
    assert_non_null(out);
    if (sub_table_deltas(t, json, strlen(json), baseline, unix_time, out, &e) < 0)
        fail_msg("%s", e.msg);
    return out;
}

static void test_domain_deltas(void **state)
{
    (void)state;
    sub_table_t *t = sub_table_new();
    assert_non_null(t);

    /* A router seen for the first time after a node start counts from zero. */
    json_t *out = round_of(t, ROUND1, false, 100);
    assert_int_equal(json_array_size(out), 3); /* (example, 30001), (example, 30002), (other, 30001) */
    json_t *d = entry(out, "example.test", 30001);
    assert_int_equal(m(d, "hits"), 8); /* both vassals added up */
    assert_int_equal(m(d, "net.rx"), 1600);
    assert_int_equal(m(d, "net.tx"), 8000);
    assert_int_equal(json_integer_value(json_object_get(d, "unix")), 100);
    assert_int_equal(m(entry(out, "example.test", 30002), "hits"), 4);
    assert_int_equal(m(entry(out, "other.test", 30001), "hits"), 2);
    json_decref(out);

    /* Deltas; nothing new: no entry. */
    out = round_of(t, ROUND2, false, 160);
    assert_int_equal(json_array_size(out), 1);
    d = entry(out, "example.test", 30001);
    assert_int_equal(m(d, "hits"), 2);
    assert_int_equal(m(d, "net.rx"), 400);
    assert_int_equal(m(d, "net.tx"), 2000);
    json_decref(out);

    /* The restart: a went down (reset: its value is the growth), b is new. */
    out = round_of(t, ROUND3, false, 220);
    assert_int_equal(json_array_size(out), 1);
    d = entry(out, "example.test", 30001);
    assert_int_equal(m(d, "hits"), 3);
    assert_int_equal(m(d, "net.tx"), 300);
    json_decref(out);
    sub_table_free(t);
}

static void test_domain_baseline(void **state)
{
    (void)state;
    sub_table_t *t = sub_table_new();
    /* The first round of a daemon: what the router served before is not
     * this interval's (an earlier daemon reported it). */
    json_t *out = round_of(t, ROUND1, true, 100);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    out = round_of(t, ROUND2, false, 160);
    assert_int_equal(m(entry(out, "example.test", 30001), "hits"), 2);
    json_decref(out);
    sub_table_free(t);
}

static void test_domain_bad_json(void **state)
{
    (void)state;
    sub_table_t *t = sub_table_new();
    err_t e = {0};
    json_t *out = json_array();
    assert_int_equal(sub_table_deltas(t, "{\"subs", 6, false, 1, out, &e), -1);
    assert_non_null(strstr(e.msg, "subscriptions"));
    assert_int_equal(sub_table_deltas(t, "[]", 2, false, 1, out, &e), -1);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    sub_table_free(t);
}

static void test_counter_reset(void **state)
{
    (void)state;
    assert_int_equal(sampler_delta(100, 150), 50);
    assert_int_equal(sampler_delta(100, 100), 0);
    assert_int_equal(sampler_delta(1000, 30), 30); /* reset: the new value */
    assert_int_equal(sampler_delta(0, 7), 7);
}

static void test_memory_stat(void **state)
{
    (void)state;
    /* This kernel's v1 file (abridged): the hierarchical totals, not the
     * cgroup's own rss (a child cgroup's usage counts). */
    const char v1[] = "cache 9392128\nrss 6942720\nrss_huge 0\nshmem 9166848\n"
                      "total_cache 303505408\ntotal_rss 14999552\ntotal_rss_huge 0\n";
    assert_int_equal(cgroup_stat_value(v1, "total_rss"), 14999552);
    assert_int_equal(cgroup_stat_value(v1, "total_cache"), 303505408);
    assert_int_equal(cgroup_stat_value(v1, "rss"), 6942720); /* not rss_huge */
    assert_int_equal(cgroup_stat_value(v1, "missing"), -1);
    const char v2[] = "anon 1048576\nfile 2097152\nkernel 0\nfile_mapped 4096\n";
    assert_int_equal(cgroup_stat_value(v2, "anon"), 1048576);
    assert_int_equal(cgroup_stat_value(v2, "file"), 2097152); /* not file_mapped */
    const char cpu[] = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
    assert_int_equal(cgroup_stat_value(cpu, "usage_usec"), 123456);
    const char oom[] = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_int_equal(cgroup_stat_value(oom, "oom_kill"), 3);
    const char events[] = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
    assert_int_equal(cgroup_stat_value(events, "oom_kill"), 1);
    assert_int_equal(cgroup_stat_value(events, "oom"), 2);
    assert_int_equal(cgroup_stat_value("", "oom_kill"), -1);
    assert_int_equal(cgroup_stat_value("oom_kill x\n", "oom_kill"), -1);
}

/* A container's entry with every metric at a large value, as a big node
 * sends it (~200 bytes). */
static json_t *ctr_entry(int uid)
{
    json_t *o = json_pack("{s:i,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}}", "uid", uid,
                          "unix", (json_int_t)1700000000, "m", "cpu", (json_int_t)123456789012,
                          "mem", (json_int_t)1073741824, "mem.rss", (json_int_t)536870912,
                          "mem.cache", (json_int_t)536870912, "io.read", (json_int_t)98765432,
                          "io.write", (json_int_t)98765432, "net.rx", (json_int_t)1234567890,
                          "net.tx", (json_int_t)1234567890, "quota", (json_int_t)10737418240);
    assert_non_null(o);
    return o;
}

static json_t *domain_entry(int i)
{
    char name[64];
    snprintf(name, sizeof name, "www.domain-number-%04d.example.test", i);
    json_t *o = json_pack("{s:s,s:i,s:I,s:{s:I,s:I,s:I}}", "name", name, "uid", 30001 + i % 7,
                          "unix", (json_int_t)1700000000, "m", "hits", (json_int_t)1234567,
                          "net.rx", (json_int_t)987654321, "net.tx", (json_int_t)987654321);
    assert_non_null(o);
    return o;
}

static void free_bodies(char **bodies)
{
    for (size_t i = 0; bodies && bodies[i]; i++)
        free(bodies[i]);
    free(bodies);
}

/* A big node's round (1,000 containers, 500 domains: ~280 KB as one body,
 * which the API would answer 413) goes in several bodies, each a valid
 * batch under the bound, every entry in exactly one, in order. */
static void test_bodies_split(void **state)
{
    (void)state;
    enum { NC = 1000, ND = 500 };
    json_t *ctrs = json_array(), *doms = json_array();
    assert_non_null(ctrs);
    assert_non_null(doms);
    for (int i = 0; i < NC; i++)
        assert_int_equal(json_array_append_new(ctrs, ctr_entry(30001 + i)), 0);
    for (int i = 0; i < ND; i++)
        assert_int_equal(json_array_append_new(doms, domain_entry(i)), 0);
    char **bodies = sampler_bodies(ctrs, doms, REPORT_MAX_BODY);
    assert_non_null(bodies);
    size_t next_c = 0, next_d = 0, n = 0, total = 0;
    for (; bodies[n]; n++) {
        size_t len = strlen(bodies[n]);
        assert_true(len <= REPORT_MAX_BODY);
        total += len;
        json_error_t je;
        json_t *j = json_loads(bodies[n], 0, &je);
        if (!j)
            fail_msg("body %zu does not parse: %s", n, je.text);
        json_t *c = json_object_get(j, "containers"), *d = json_object_get(j, "domains");
        assert_true(json_is_array(c) && json_is_array(d));
        assert_int_equal(json_object_size(j), 2);
        assert_true(json_array_size(c) + json_array_size(d) > 0);
        size_t i;
        json_t *o;
        json_array_foreach(c, i, o)
        {
            assert_true(next_c < NC);
            assert_true(json_equal(o, json_array_get(ctrs, next_c++)));
        }
        json_array_foreach(d, i, o)
        {
            assert_true(next_d < ND);
            assert_true(json_equal(o, json_array_get(doms, next_d++)));
        }
        json_decref(j);
    }
    assert_int_equal(next_c, NC);
    assert_int_equal(next_d, ND);
    assert_true(total > 4 * (size_t)REPORT_MAX_BODY); /* the test is of a real split */
    assert_true(n <= total / (REPORT_MAX_BODY - 400) + 1); /* the bodies are filled */
    free_bodies(bodies);
    json_decref(ctrs);
    json_decref(doms);
}

/* An empty round: one empty batch, as before the split; an entry that no
 * body can hold is left out, the others still sent. */
static void test_bodies_edges(void **state)
{
    (void)state;
    json_t *ctrs = json_array(), *doms = json_array();
    char **bodies = sampler_bodies(ctrs, doms, REPORT_MAX_BODY);
    assert_non_null(bodies);
    assert_string_equal(bodies[0], "{\"containers\":[],\"domains\":[]}");
    assert_null(bodies[1]);
    free_bodies(bodies);

    json_array_append_new(ctrs, json_pack("{s:i}", "uid", 1));
    json_array_append_new(ctrs, json_pack("{s:s}", "big", "........................................"));
    json_array_append_new(doms, json_pack("{s:i}", "uid", 2));
    bodies = sampler_bodies(ctrs, doms, 60); /* the frame is 30 bytes */
    assert_non_null(bodies);
    assert_string_equal(bodies[0], "{\"containers\":[{\"uid\":1}],\"domains\":[{\"uid\":2}]}");
    assert_null(bodies[1]);
    free_bodies(bodies);

    /* Exactly at the bound: kept in one body; one byte less: two. */
    size_t one = strlen("{\"containers\":[{\"uid\":1}],\"domains\":[{\"uid\":2}]}");
    json_array_remove(ctrs, 1);
    bodies = sampler_bodies(ctrs, doms, one);
    assert_non_null(bodies);
    assert_null(bodies[1]);
    free_bodies(bodies);
    bodies = sampler_bodies(ctrs, doms, one - 1);
    assert_non_null(bodies);
    assert_string_equal(bodies[0], "{\"containers\":[{\"uid\":1}],\"domains\":[]}");
    assert_string_equal(bodies[1], "{\"containers\":[],\"domains\":[{\"uid\":2}]}");
    assert_null(bodies[2]);
    free_bodies(bodies);

    /* The same with the comma between two entries of one list. */
    json_array_append_new(ctrs, json_pack("{s:i}", "uid", 3));
    const char *both = "{\"containers\":[{\"uid\":1},{\"uid\":3}],\"domains\":[]}";
    bodies = sampler_bodies(ctrs, NULL, strlen(both));
    assert_non_null(bodies);
    assert_string_equal(bodies[0], both);
    assert_null(bodies[1]);
    free_bodies(bodies);
    bodies = sampler_bodies(ctrs, NULL, strlen(both) - 1);
    assert_non_null(bodies);
    assert_string_equal(bodies[1], "{\"containers\":[{\"uid\":3}],\"domains\":[]}");
    assert_null(bodies[2]);
    free_bodies(bodies);
    json_decref(ctrs);
    json_decref(doms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_deltas),   cmocka_unit_test(test_domain_baseline),
        cmocka_unit_test(test_domain_bad_json), cmocka_unit_test(test_counter_reset),
        cmocka_unit_test(test_memory_stat),     cmocka_unit_test(test_bodies_split),
        cmocka_unit_test(test_bodies_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
