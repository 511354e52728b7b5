/* Unit tests for alarm_burst (src/node/alarm_burst.c): a flood of events
 * (OOM kills) makes at most one alarm per window, the window's others
 * counted and said at its end; and alarm_freq's clamp to the API's bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>

#include "../../src/common/validate.h"
#include "../../src/node/alarm_burst.h"

#define T0 1000000LL
#define WIN 60000LL

static void test_flood_is_one_alarm_per_window(void **state)
{
    (void)state;
    alarm_burst_t b;
    alarm_burst_init(&b);
    time_t since = 0;
    assert_int_equal(alarm_burst_deadline(&b, WIN), -1);
    assert_int_equal(alarm_burst_take(&b, T0, WIN, &since), 0);

    /* The first kill: said at once. */
    alarm_burst_add(&b, 1, 100);
    assert_int_equal(alarm_burst_deadline(&b, WIN), 0);
    assert_int_equal(alarm_burst_take(&b, T0, WIN, &since), 1);
    assert_int_equal(since, 100);
    assert_int_equal(alarm_burst_deadline(&b, WIN), -1);

    /* 500 more within the window (a few per wake): none said, all counted. */
    for (int i = 0; i < 250; i++) {
        alarm_burst_add(&b, 2, 101 + i / 10);
        assert_int_equal(alarm_burst_take(&b, T0 + 1 + i * 100, WIN, &since), 0);
    }
    assert_int_equal(alarm_burst_deadline(&b, WIN), T0 + WIN);
    assert_int_equal(alarm_burst_take(&b, T0 + WIN - 1, WIN, &since), 0);
    /* The window's end: one alarm with the count and the first one's time. */
    assert_int_equal(alarm_burst_take(&b, T0 + WIN, WIN, &since), 500);
    assert_int_equal(since, 101);
    assert_int_equal(alarm_burst_deadline(&b, WIN), -1);

    /* A kill in the next window waits for its end. */
    alarm_burst_add(&b, 1, 200);
    assert_int_equal(alarm_burst_take(&b, T0 + WIN + 5, WIN, &since), 0);
    assert_int_equal(alarm_burst_deadline(&b, WIN), T0 + 2 * WIN);
    assert_int_equal(alarm_burst_take(&b, T0 + 2 * WIN, WIN, &since), 1);
    assert_int_equal(since, 200);

    /* Quiet for longer than a window: the next is said at once. */
    alarm_burst_add(&b, 3, 300);
    assert_int_equal(alarm_burst_take(&b, T0 + 10 * WIN, WIN, &since), 3);

    /* Nothing overflows. */
    alarm_burst_add(&b, LLONG_MAX, 400);
    alarm_burst_add(&b, LLONG_MAX, 401);
    assert_int_equal(alarm_burst_deadline(&b, LLONG_MAX), LLONG_MAX);
}

static void test_freq_clamp(void **state)
{
    (void)state;
    assert_int_equal(alarm_freq_ms(0), 60000);
    assert_int_equal(alarm_freq_ms(-5), 60000);
    assert_int_equal(alarm_freq_ms(5), ALARM_FREQ_MIN * 1000LL);
    assert_int_equal(alarm_freq_ms(120), 120000);
    assert_int_equal(alarm_freq_ms(ALARM_FREQ_MAX), ALARM_FREQ_MAX * 1000LL);
    assert_int_equal(alarm_freq_ms(ALARM_FREQ_MAX + 1), ALARM_FREQ_MAX * 1000LL);
    assert_int_equal(alarm_freq_ms(LLONG_MAX), ALARM_FREQ_MAX * 1000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_is_one_alarm_per_window),
        cmocka_unit_test(test_freq_clamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
