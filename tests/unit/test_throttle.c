/* Unit tests for throttle.h: the failure buckets and the argon2 gate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <time.h>

#include "../../src/api/throttle.h"

/* 3 failures at once, then one more every 10 s (window 30). */
static void test_burst_then_one_per_interval(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(64, 3, 30);
    assert_non_null(t);
    double now = 1000;
    assert_true(throttle_idle(t, now));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(throttle_wait(t, "kratos", now), 0);
        throttle_fail(t, "kratos", now);
    }
    assert_false(throttle_idle(t, now));
    assert_int_equal(throttle_wait(t, "kratos", now), 10);
    assert_int_equal(throttle_wait(t, "kratos", now + 4), 6);
    assert_int_equal(throttle_wait(t, "kratos", now + 9.5), 1); /* rounded up */
    assert_int_equal(throttle_wait(t, "kratos", now + 10), 0);
    /* That token spent, the next one is 10 s away again. */
    throttle_fail(t, "kratos", now + 10);
    assert_int_equal(throttle_wait(t, "kratos", now + 10), 10);
    /* A whole window later the burst is back, and nothing is throttled. */
    assert_true(throttle_idle(t, now + 40));
    for (int i = 0; i < 3; i++)
        throttle_fail(t, "kratos", now + 40);
    assert_int_equal(throttle_wait(t, "kratos", now + 40), 10);
    throttle_free(t);
}

static void test_keys_are_apart(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(64, 2, 20);
    throttle_fail(t, "a", 5);
    throttle_fail(t, "a", 5);
    assert_int_equal(throttle_wait(t, "a", 5), 10);
    assert_int_equal(throttle_wait(t, "b", 5), 0);
    assert_int_equal(throttle_wait(t, "", 5), 0);
    assert_int_equal(throttle_wait(t, "a ", 5), 0);
    throttle_free(t);
}

/* Failures of checks that ran while the bucket emptied cannot push its
 * wait past one token's time. */
static void test_wait_is_bounded(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(64, 2, 20);
    for (int i = 0; i < 50; i++)
        throttle_fail(t, "x", 7);
    assert_int_equal(throttle_wait(t, "x", 7), 10);
    assert_true(throttle_idle(t, 17.01));
    throttle_free(t);
}

static void test_limit_zero_is_off(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(64, 0, 60);
    for (int i = 0; i < 10; i++)
        throttle_fail(t, "k", 1);
    assert_true(throttle_idle(t, 1));
    assert_int_equal(throttle_wait(t, "k", 1), 0);
    throttle_free(t);
}

/* A full table forgets the fullest buckets first: a throttled key survives
 * a flood of new keys that failed once each. */
static void test_full_table_keeps_the_throttled(void **state)
{
    (void)state;
    throttle_t *t = throttle_new(16, 3, 30);
    for (int i = 0; i < 3; i++)
        throttle_fail(t, "victim", 100);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "spray%d", i);
        throttle_fail(t, key, 100);
    }
    assert_int_equal(throttle_wait(t, "victim", 100), 10);
    throttle_free(t);
}

static void test_gate_bounds_holders_and_waiters(void **state)
{
    (void)state;
    gate_t *g = gate_new(2, 1);
    assert_non_null(g);
    assert_true(gate_enter(g, 0));
    assert_false(gate_full(g));
    assert_true(gate_enter(g, 0));
    /* No slot, and no wait allowed: refused at once. */
    assert_false(gate_enter(g, 0));
    assert_false(gate_full(g)); /* the queue has room */
    /* Waiting for a slot that never frees: refused after the wait. */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_false(gate_enter(g, 50));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    assert_true(ms >= 45 && ms < 2000);
    gate_leave(g);
    assert_true(gate_enter(g, 0));
    gate_leave(g);
    gate_leave(g);
    gate_free(g);
}

typedef struct {
    gate_t *g;
    bool got;
} waiter_t;

static void *wait_for_slot(void *arg)
{
    waiter_t *w = arg;
    w->got = gate_enter(w->g, 5000);
    return NULL;
}

static void test_gate_queue_is_bounded_and_served(void **state)
{
    (void)state;
    gate_t *g = gate_new(1, 1);
    assert_true(gate_enter(g, 0));
    waiter_t w = {.g = g};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_for_slot, &w), 0);
    /* Once the waiter queues, the gate is full: others are refused at once. */
    for (int i = 0; i < 500 && !gate_full(g); i++)
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    assert_true(gate_full(g));
    assert_false(gate_enter(g, 5000));
    gate_leave(g); /* the waiter gets the slot */
    pthread_join(th, NULL);
    assert_true(w.got);
    gate_leave(g);
    gate_free(g);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_one_per_interval),
        cmocka_unit_test(test_keys_are_apart),
        cmocka_unit_test(test_wait_is_bounded),
        cmocka_unit_test(test_limit_zero_is_off),
        cmocka_unit_test(test_full_table_keeps_the_throttled),
        cmocka_unit_test(test_gate_bounds_holders_and_waiters),
        cmocka_unit_test(test_gate_queue_is_bounded_and_served),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
