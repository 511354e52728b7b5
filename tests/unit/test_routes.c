/* Unit tests for the route matcher (routes.c) and the route tables'
 * declarations (what wakes the nodes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../src/api/routes.h"

static void h_a(req_t *r) { (void)r; }
static void h_b(req_t *r) { (void)r; }

static const route_t table1[] = {
    {"GET", "me", h_a, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"GET", "containers/*", h_a, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"POST", "containers/*", h_b, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
static const route_t table2[] = {
    {"GET", "containers/*/domains", h_b, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
static const route_t *const tables[] = {table1, table2, NULL};

static const route_t *find(const char *method, const char *path, bool *known)
{
    static char buf[256];
    char *segs[API_MAX_SEGS];
    int n = 0;
    strcpy(buf, path);
    for (char *s = strtok(buf, "/"); s; s = strtok(NULL, "/"))
        segs[n++] = s;
    return route_find(tables, method, segs, n, known);
}

static void test_match(void **state)
{
    (void)state;
    bool known;
    assert_ptr_equal(find("GET", "me", &known)->fn, h_a);
    assert_ptr_equal(find("GET", "containers/30001", &known)->fn, h_a);
    assert_ptr_equal(find("POST", "containers/30001", &known)->fn, h_b);
    assert_ptr_equal(find("GET", "containers/30001/domains", &known)->fn, h_b);
}

static void test_method_not_allowed_vs_not_found(void **state)
{
    (void)state;
    bool known;
    assert_null(find("DELETE", "containers/30001", &known));
    assert_true(known); /* 405 */
    assert_null(find("GET", "containers", &known));
    assert_false(known); /* 404: no pattern has one segment "containers" */
    assert_null(find("GET", "me/extra", &known));
    assert_false(known);
    assert_null(find("GET", "", &known));
    assert_false(known);
    assert_null(find("GET", "mee", &known));
    assert_false(known);
}

/* The wake the nodes' long polls get after a successful write: every write of
 * a customer or the supplier (it may change what a node runs), raising an
 * alarm (AUTH_ALARM) included since issue 16 (the node delivers it: its
 * state's server.alarm_seq moves); never a read, never the nodes' own
 * channel. */
static enum route_wake expected_wake(const route_t *rt)
{
    if (strcmp(rt->method, "GET") == 0 || rt->auth == AUTH_NODE)
        return WAKE_NONE;
    return WAKE_NODES;
}

/* Raising an alarm wakes the nodes (pinned by name: the rule above would
 * also pass with no AUTH_ALARM route at all). */
static void test_raising_an_alarm_wakes_the_nodes(void **state)
{
    (void)state;
    static const char *const paths[] = {"alarms/raise/30001", "alarms/trigger/30001"};
    for (int i = 0; i < 2; i++) {
        char buf[64], *segs[API_MAX_SEGS];
        int n = 0;
        strcpy(buf, paths[i]);
        for (char *s = strtok(buf, "/"); s; s = strtok(NULL, "/"))
            segs[n++] = s;
        bool known;
        const route_t *rt = route_find(customer_tables, "POST", segs, n, &known);
        assert_non_null(rt);
        assert_int_equal(rt->auth, AUTH_ALARM);
        assert_int_equal(rt->wake, WAKE_NODES);
    }
}

static void check_wakes(const route_t *const *list, int *writes)
{
    for (const route_t *const *t = list; *t; t++) {
        for (const route_t *rt = *t; rt->method; rt++) {
            if (rt->wake != expected_wake(rt))
                fail_msg("%s %s declares %s", rt->method, rt->pattern,
                         rt->wake == WAKE_NODES ? "WAKE_NODES" : "WAKE_NONE");
            *writes += rt->wake == WAKE_NODES;
        }
    }
}

static void test_writes_declare_their_wake(void **state)
{
    (void)state;
    int customer = 0, admin = 0, node = 0;
    check_wakes(customer_tables, &customer);
    check_wakes(admin_tables, &admin);
    check_wakes(node_tables, &node);
    assert_true(customer > 10); /* the tables were really walked */
    assert_true(admin > 10);
    assert_int_equal(node, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_method_not_allowed_vs_not_found),
        cmocka_unit_test(test_writes_declare_their_wake),
        cmocka_unit_test(test_raising_an_alarm_wakes_the_nodes),
    };
    return cmocka_run_group_tests_name("routes", tests, NULL, NULL);
}
