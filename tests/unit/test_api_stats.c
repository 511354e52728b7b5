/* Unit tests for the API's own metrics (src/api/stats.c, admin_metrics.c):
 * the Prometheus text format 0.0.4 of the request counters, the latency
 * histogram and the gauges read from the database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/admin_metrics.h"
#include "../../src/api/stats.h"
#include "db_fixture.h"

static void h(req_t *r) { (void)r; }

static const route_t customers[] = {
    {"GET", "containers", h, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"GET", "containers/*", h, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"POST", "containers/*", h, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
static const route_t more[] = {
    {"GET", "containers/*/domains", h, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"GET", "me", h, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
static const route_t nodes[] = {
    {"GET", "state", h, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
static const route_t *const customer_list[] = {customers, more, NULL};
static const route_t *const admin_list[] = {NULL};
static const route_t *const node_list[] = {nodes, NULL};

/* Every line is a comment (# HELP / # TYPE) or `name{labels} value`:
 * what a Prometheus scraper accepts of format 0.0.4. */
static void check_format(const char *text)
{
    regex_t sample, comment;
    assert_int_equal(regcomp(&sample,
                             "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|"
                             "\\\\.)*\",?)*\\})? [0-9.eE+-]+$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    assert_int_equal(regcomp(&comment, "^# (HELP [a-z_]+ .+|TYPE [a-z_]+ "
                                       "(counter|gauge|histogram))$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    char *copy = strdup(text), *save = NULL;
    assert_non_null(copy);
    assert_true(text[strlen(text) - 1] == '\n');
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (regexec(&sample, line, 0, NULL, 0) != 0 && regexec(&comment, line, 0, NULL, 0) != 0)
            fail_msg("not Prometheus text: '%s'", line);
    free(copy);
    regfree(&sample);
    regfree(&comment);
}

static void assert_has(const char *text, const char *line)
{
    if (!strstr(text, line))
        fail_msg("missing '%s' in:\n%s", line, text);
}

static void test_requests_by_group_and_class(void **state)
{
    (void)state;
    api_stats_t *s = api_stats_new(customer_list, admin_list, node_list);
    assert_non_null(s);
    /* "containers/<uid>" and "containers/<uid>/domains": one group, containers, GET. */
    api_stats_request(s, STATS_API_CUSTOMER, &customers[1], 200, 300);
    api_stats_request(s, STATS_API_CUSTOMER, &more[0], 200, 3000);
    api_stats_request(s, STATS_API_CUSTOMER, &customers[0], 403, 3000);
    api_stats_request(s, STATS_API_CUSTOMER, &customers[2], 409, 20000);
    api_stats_request(s, STATS_API_NODE, &nodes[0], 200, 30000000); /* a long poll */
    api_stats_request(s, STATS_API_CUSTOMER, NULL, 404, 100);
    api_stats_request(s, STATS_API_NONE, NULL, 413, 100);
    buf_t out = {0};
    assert_int_equal(api_stats_render(s, &out), 0);
    check_format(out.data);
    assert_has(out.data, "# TYPE imperium_api_requests_total counter\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"customer\",group=\"containers\","
                         "method=\"GET\",status=\"2xx\"} 2\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"customer\",group=\"containers\","
                         "method=\"GET\",status=\"4xx\"} 1\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"customer\",group=\"containers\","
                         "method=\"POST\",status=\"4xx\"} 1\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"node\",group=\"state\","
                         "method=\"GET\",status=\"2xx\"} 1\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"customer\",group=\"-\","
                         "method=\"-\",status=\"4xx\"} 1\n");
    assert_has(out.data, "imperium_api_requests_total{api=\"none\",group=\"-\","
                         "method=\"-\",status=\"4xx\"} 1\n");
    /* One line per group: the GET containers group is not repeated. */
    const char *first = strstr(out.data, "group=\"containers\",method=\"GET\",status=\"2xx\"");
    assert_null(strstr(first + 1, "group=\"containers\",method=\"GET\",status=\"2xx\""));
    assert_null(strstr(out.data, "group=\"me\"")); /* nothing counted: no line */
    /* The histogram is cumulative, +Inf = count, sum in seconds. */
    assert_has(out.data, "# TYPE imperium_api_request_duration_seconds histogram\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"customer\","
                         "le=\"0.001\"} 2\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"customer\","
                         "le=\"0.005\"} 4\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"customer\","
                         "le=\"0.025\"} 5\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"customer\","
                         "le=\"+Inf\"} 5\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_sum{api=\"customer\"} "
                         "0.026400\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"node\","
                         "le=\"10\"} 0\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_bucket{api=\"node\","
                         "le=\"+Inf\"} 1\n");
    assert_has(out.data, "imperium_api_request_duration_seconds_count{api=\"node\"} 1\n");
    buf_free(&out);
    api_stats_free(s);
}

static void test_label_values_are_escaped(void **state)
{
    (void)state;
    buf_t out = {0};
    assert_int_equal(prom_label_value(&out, "a\"b\\c\nd"), 0);
    assert_string_equal(out.data, "\"a\\\"b\\\\c\\nd\"");
    buf_free(&out);
}

static void exec_ok(db_t *db, const char *sql)
{
    err_t e = {0};
    if (db_exec(db, &e, sql, DB_NOARGS) < 0)
        fail_msg("%s: %s", sql, e.msg);
}

static void test_gauges_from_the_database(void **state)
{
    db_fixture_t *f = *state;
    exec_ok(f->db, "INSERT INTO customers (id, username, password_hash, uuid, rsa_key, "
                   "rsa_pubkey, created) VALUES (1, 'a', 'x', 'cu1', 'k', 'p', 0)");
    exec_ok(f->db, "INSERT INTO servers (id, name, address, memory, storage) VALUES "
                   "(1, 'n1', '10.0.0.1', 9000, 9000), (2, 'n\"2', '10.0.0.2', 9000, 9000)");
    exec_ok(f->db, "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, "
                   "uuid, secret_uuid, created) VALUES (1, 1, 1, 'a', 10, 10, 'u1', 's', 0), "
                   "(2, 1, 1, 'b', 10, 10, 'u2', 's', 0), (3, 1, 2, 'c', 10, 10, 'u3', 's', 0)");
    exec_ok(f->db, "INSERT INTO container_status (container_id, state, since) VALUES "
                   "(1, 'running', 0), (2, 'running', 0)");
    exec_ok(f->db, "INSERT INTO alarms (container_id, level, unix, msg, node_ref) VALUES "
                   "(1, 0, 0, 'oom', 'r1'), (1, 1, 0, 'hi', NULL), (2, 0, 0, 'q', 'r2')");
    api_stats_t *s = api_stats_new(customer_list, admin_list, node_list);
    assert_non_null(s);
    api_stats_node_seen(s, 1, 1700000000);
    api_stats_node_seen(s, 1, 1700000005);
    buf_t out = {0};
    err_t e = {0};
    assert_int_equal(admin_metrics_render(s, f->db, &e, &out), 0);
    check_format(out.data);
    assert_has(out.data, "# TYPE imperium_api_containers gauge\n");
    assert_has(out.data, "imperium_api_containers{state=\"running\"} 2\n");
    assert_has(out.data, "imperium_api_containers{state=\"failed\"} 0\n");
    assert_has(out.data, "imperium_api_containers{state=\"unknown\"} 1\n");
    assert_has(out.data, "imperium_api_node_last_seen_seconds{server=\"n1\"} 1700000005\n");
    assert_has(out.data, "imperium_api_node_last_seen_seconds{server=\"n\\\"2\"} 0\n");
    assert_has(out.data, "imperium_api_alarms{source=\"node\"} 2\n");
    assert_has(out.data, "imperium_api_alarms{source=\"api\"} 1\n");
    buf_free(&out);
    api_stats_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_by_group_and_class),
        cmocka_unit_test(test_label_values_are_escaped),
        cmocka_unit_test_setup_teardown(test_gauges_from_the_database, db_fixture_setup,
                                        db_fixture_teardown),
    };
    return cmocka_run_group_tests_name("api_stats", tests, NULL, NULL);
}
