/* Unit tests for what the alarms write to terminals (src/ssh/shells.c):
 * control characters dropped, tty_nr decoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "../../src/ssh/shells.h"

/* The framed text of msg, minus the frame. */
static void expect_frame(const char *msg, const char *want)
{
    char *got = shells_frame(msg);
    assert_non_null(got);
    const char *head = "\r\n[imperium] ", *tail = "\r\n";
    size_t n = strlen(got);
    assert_true(n >= strlen(head) + strlen(tail));
    assert_memory_equal(got, head, strlen(head));
    assert_string_equal(got + n - strlen(tail), tail);
    got[n - strlen(tail)] = '\0';
    assert_string_equal(got + strlen(head), want);
    free(got);
}

static void test_plain_text_tab_and_newlines(void **state)
{
    (void)state;
    expect_frame("disk full", "disk full");
    expect_frame("a\tb\nc", "a\tb\r\nc");
    expect_frame("", "");
}

static void test_c0_controls_and_del_dropped(void **state)
{
    (void)state;
    expect_frame("\x1b[2Jclear\r\a\b\x7f!", "[2Jclear!");
    expect_frame("\x01\x1f", "");
}

static void test_c1_as_utf8_dropped(void **state)
{
    (void)state;
    /* U+009B (CSI), U+0080, U+009F, U+0085 (NEL). */
    expect_frame("a\xc2\x9b" "31mb", "a31mb");
    expect_frame("\xc2\x80\xc2\x9f\xc2\x85x", "x");
}

static void test_raw_c1_bytes_dropped(void **state)
{
    (void)state;
    expect_frame("a\x9b" "31mb", "a31mb");
    expect_frame("\x80\x90\x9fz", "z");
    /* A lone lead byte, a truncated sequence, an overlong NUL and an
     * encoded surrogate are not UTF-8 either. */
    expect_frame("\xc3x\xe2\x82y\xc0\x80z\xed\xa0\x80w", "xyzw");
}

static void test_printable_utf8_kept(void **state)
{
    (void)state;
    /* U+00A0, é, €, 😀: beyond C1. */
    expect_frame("\xc2\xa0 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                 "\xc2\xa0 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

static void test_tty_nr_decoding(void **state)
{
    (void)state;
    /* /dev/pts/5: major 136, minor 5: tty_nr 0x8805. */
    assert_true(shells_tty_dev(0x8805) == makedev(136, 5));
    /* /dev/pts/300: minor 0x12c: low byte 0x2c, high bits 0x100 << 12. */
    unsigned long nr = (0x12cUL & 0xff) | (136UL << 8) | ((0x12cUL & 0xfff00) << 12);
    assert_true(shells_tty_dev(nr) == makedev(136, 300));
    assert_int_equal(major(shells_tty_dev(nr)), 136);
    assert_int_equal(minor(shells_tty_dev(nr)), 300);
    /* /dev/pts/1048575, the largest minor. */
    nr = 0xffUL | (136UL << 8) | (0xfff00UL << 12);
    assert_int_equal(minor(shells_tty_dev(nr)), 0xfffff);
    assert_int_equal(major(shells_tty_dev(nr)), 136);
    /* /dev/tty1: major 4, minor 1. */
    assert_true(shells_tty_dev(0x401) == makedev(4, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text_tab_and_newlines),
        cmocka_unit_test(test_c0_controls_and_del_dropped),
        cmocka_unit_test(test_c1_as_utf8_dropped),
        cmocka_unit_test(test_raw_c1_bytes_dropped),
        cmocka_unit_test(test_printable_utf8_kept),
        cmocka_unit_test(test_tty_nr_decoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
