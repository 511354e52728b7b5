/* Unit tests for src/common/strutil.c's array_room: the growth every
 * node table (alarms.c, sampler.c) uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "../../src/common/strutil.h"

static void test_array_room(void **state)
{
    (void)state;
    int *v = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < 1000; i++) {
        int *room = array_room(v, n, &cap, sizeof *room);
        assert_non_null(room);
        v = room;
        v[n++] = i; /* ASan: the room is really there */
        assert_true(n <= cap);
    }
    assert_int_equal(cap, 1024); /* 16 doubled */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(v[i], i);
    assert_ptr_equal(array_room(v, 10, &cap, sizeof *v), v); /* room already: no move */
    /* Too large to allocate: NULL, the array and its count untouched. */
    size_t big = SIZE_MAX / 2 + 1;
    assert_null(array_room(v, big, &big, sizeof *v));
    assert_int_equal(big, SIZE_MAX / 2 + 1);
    assert_int_equal(v[999], 999);
    free(v);
}

/* mountinfo's escapes undone; a backslash not followed by three octal
 * digits stays as it is. */
static void test_unescape_octal(void **state)
{
    (void)state;
    char a[] = "/containers/30001/my\\040box\\134x";
    str_unescape_octal(a);
    assert_string_equal(a, "/containers/30001/my box\\x");
    char b[] = "a\\09b\\4\\";
    str_unescape_octal(b);
    assert_string_equal(b, "a\\09b\\4\\");
}

static void test_why(void **state)
{
    (void)state;
    char why[8];
    assert_int_equal(str_why(why, sizeof why, "no %s", "key"), -1);
    assert_string_equal(why, "no key");
    assert_int_equal(str_why(why, sizeof why, "%d bytes too long", 1000), -1);
    assert_string_equal(why, "1000 by"); /* cut, terminated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_array_room),
                                       cmocka_unit_test(test_unescape_octal),
                                       cmocka_unit_test(test_why)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
