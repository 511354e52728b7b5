/* Unit tests for src/runtime/emperor.c: the Emperor's command line, with
 * and without the container's `nofollow`, and its environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/runtime/runtime.h"

static bool has_arg(char *const *argv, const char *arg)
{
    for (; *argv; argv++)
        if (strcmp(*argv, arg) == 0)
            return true;
    return false;
}

static rt_plan_t *plan(bool nofollow)
{
    rt_plan_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->uid = 30001;
    p->nofollow = nofollow;
    snprintf(p->home_inside, sizeof p->home_inside, "/containers/30001");
    snprintf(p->log_inside, sizeof p->log_inside, "/containers/30001/logs/emperor.log");
    p->log_maxsize = 1000;
    err_t e = {0};
    if (rt_emperor_plan(p, "/usr/bin/uwsgi", true, &e) < 0)
        fail_msg("rt_emperor_plan: %s", e.msg);
    return p;
}

static void test_nofollow_adds_the_option(void **state)
{
    (void)state;
    rt_plan_t *p = plan(true);
    assert_true(has_arg(p->argv, "--emperor-nofollow"));
    /* imperium-init passes the same argv on to the Emperor. */
    assert_true(has_arg(p->init_argv, "--emperor-nofollow"));
    assert_true(has_arg(p->argv, "--die-on-term"));
    free(p);
}

static void test_without_nofollow_symlinks_are_followed(void **state)
{
    (void)state;
    rt_plan_t *p = plan(false);
    assert_false(has_arg(p->argv, "--emperor-nofollow"));
    assert_false(has_arg(p->init_argv, "--emperor-nofollow"));
    assert_true(has_arg(p->argv, "--emperor"));
    free(p);
}

/* cluster-domain: the Emperor's environment names the node's cluster
 * endpoint (IMPERIUM_CLUSTER), "none:0" when the node gave none. */
static void test_the_cluster_endpoint_is_in_the_environment(void **state)
{
    (void)state;
    rt_plan_t *p = plan(false);
    assert_true(has_arg(p->envp, "IMPERIUM_CLUSTER=none:0"));
    free(p);
    p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->uid = 30001;
    snprintf(p->cluster, sizeof p->cluster, "203.0.113.2:3032");
    err_t e = {0};
    assert_int_equal(rt_emperor_plan(p, "/usr/bin/uwsgi", true, &e), 0);
    assert_true(has_arg(p->envp, "IMPERIUM_CLUSTER=203.0.113.2:3032"));
    assert_true(has_arg(p->envp, "HOME="));
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nofollow_adds_the_option),
        cmocka_unit_test(test_without_nofollow_symlinks_are_followed),
        cmocka_unit_test(test_the_cluster_endpoint_is_in_the_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
