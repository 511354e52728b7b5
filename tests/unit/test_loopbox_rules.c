/* Unit tests for the pure rules of loopboxes, port mappings, custom distros
 * (src/common/validate.c) and alarms (src/api/alarms.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../../src/api/alarms.h"
#include "../../src/common/validate.h"

static bool lb(const char *path, size_t max, char *why)
{
    return loopbox_path_valid(path, max, why, 256);
}

static void test_loopbox_good_paths(void **state)
{
    (void)state;
    char why[256];
    const char *good[] = {"zeus001", "zeus", "images/zeus.img", "a/b/c", "etcx", "etc.d",
                          "my-etc", "logsfile", "x/etc", "vassals2", "a.b", "é"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(lb(good[i], 255, why));
}

static void test_loopbox_bad_paths(void **state)
{
    (void)state;
    char why[256];
    static const struct {
        const char *path, *reason;
    } bad[] = {
        {"", "1 to"},          {"/zeus", "'/'"},       {"zeus/", "'/'"},
        {"/", "'/'"},          {"a/../b", "'..'"},     {"..", "'..'"},
        {"../x", "'..'"},      {"a..b", "'..'"},       {"./x", "'./'"},
        {"a/./b", "'./'"},     {"a/.b", "'/.'"},       {"a//b", "'//'"},
        {".", "home itself"},  {"etc", "'etc'"},       {"logs", "'logs'"},
        {"run", "'run'"},      {"tmp", "'tmp'"},       {"vassals", "'vassals'"},
        {"etc/x", "'etc'"},    {"vassals/a/b", "'vassals'"}, {"tmp/z.img", "'tmp'"},
        {".ssh", "'.ssh'"},    {".ssh/k", "'.ssh'"},   {"a\nb", "control"},
        {"a\tb", "control"},   {"a\x7f", "control"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        assert_false(lb(bad[i].path, 255, why));
        if (!strstr(why, bad[i].reason))
            fail_msg("'%s': reason '%s' lacks '%s'", bad[i].path, why, bad[i].reason);
    }
}

static void test_loopbox_length(void **state)
{
    (void)state;
    char why[256], name[80];
    memset(name, 'a', 64);
    name[64] = '\0';
    assert_true(lb(name, 64, why));
    name[64] = 'a';
    name[65] = '\0';
    assert_false(lb(name, 64, why));
    assert_non_null(strstr(why, "64"));
    assert_true(lb(name, 255, why)); /* mountpoints may be longer */
}

static void test_portmap_ports(void **state)
{
    (void)state;
    char why[128];
    assert_true(portmap_public_port_valid(1025, why, sizeof why));
    assert_true(portmap_public_port_valid(9000, why, sizeof why));
    assert_true(portmap_public_port_valid(65535, why, sizeof why));
    assert_false(portmap_public_port_valid(1024, why, sizeof why));
    assert_false(portmap_public_port_valid(0, why, sizeof why));
    assert_false(portmap_public_port_valid(-1, why, sizeof why));
    assert_false(portmap_public_port_valid(65536, why, sizeof why));
    assert_false(portmap_public_port_valid(LLONG_MAX, why, sizeof why));
    const long long reserved[] = {2222, 8000, 8080, 8443};
    for (size_t i = 0; i < 4; i++) {
        assert_false(portmap_public_port_valid(reserved[i], why, sizeof why));
        assert_non_null(strstr(why, "platform"));
    }
    assert_false(portmap_public_port_valid(80, why, sizeof why));
    assert_false(portmap_public_port_valid(22, why, sizeof why));
    assert_true(portmap_private_port_valid(1024, why, sizeof why));
    assert_true(portmap_private_port_valid(8080, why, sizeof why)); /* private: any */
    assert_true(portmap_private_port_valid(65535, why, sizeof why));
    assert_false(portmap_private_port_valid(1023, why, sizeof why));
    assert_false(portmap_private_port_valid(65536, why, sizeof why));
}

static void test_custom_distro_paths(void **state)
{
    (void)state;
    char why[128], long_path[300];
    assert_true(custom_distro_path_valid("jessie", why, sizeof why));
    assert_true(custom_distro_path_valid("Ubuntu_22.04-lts", why, sizeof why));
    assert_true(custom_distro_path_valid("...", why, sizeof why));
    const char *bad[] = {"", ".", "..", "a/b", "/a", "a b", "a$", "é", "a\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(custom_distro_path_valid(bad[i], why, sizeof why));
    memset(long_path, 'a', 256);
    long_path[256] = '\0';
    assert_false(custom_distro_path_valid(long_path, why, sizeof why));
    long_path[255] = '\0';
    assert_true(custom_distro_path_valid(long_path, why, sizeof why));
}

static void test_alarm_range(void **state)
{
    (void)state;
    alarm_range_t r;
    assert_true(alarm_range_parse("6", &r));
    assert_int_equal(r.offset, 0);
    assert_int_equal(r.limit, 6);
    assert_false(r.oldest_first);
    assert_true(alarm_range_parse("3-6", &r));
    assert_int_equal(r.offset, 3);
    assert_int_equal(r.limit, 3);
    assert_false(r.oldest_first);
    assert_true(alarm_range_parse("6-3", &r));
    assert_int_equal(r.offset, 3);
    assert_int_equal(r.limit, 3);
    assert_true(r.oldest_first);
    assert_true(alarm_range_parse("10-9", &r)); /* numbers, not strings, compared */
    assert_int_equal(r.offset, 9);
    assert_int_equal(r.limit, 1);
    assert_true(alarm_range_parse("4-4", &r));
    assert_int_equal(r.limit, 0);
    assert_true(alarm_range_parse("0", &r));
    assert_int_equal(r.limit, 0);
    const char *bad[] = {"6-a", "6-", "-a", "a", "", "-3", "3--6", "3-6-9", " 6", "6 ",
                         "+6", "0x10", "1234567890123456789", NULL};
    for (const char *const *b = bad; *b; b++)
        if (alarm_range_parse(*b, &r))
            fail_msg("range '%s' accepted", *b);
    assert_false(alarm_range_parse(NULL, &r));
}

static void test_alarm_color(void **state)
{
    (void)state;
    char c[8];
    assert_true(alarm_color_normalize("#ff00AA", c));
    assert_string_equal(c, "#ff00AA");
    assert_true(alarm_color_normalize("123456", c));
    assert_string_equal(c, "#123456");
    const char *bad[] = {"", "#", "#12345", "#1234567", "12345g", "##123456", "red", NULL};
    for (const char *const *b = bad; *b; b++)
        if (alarm_color_normalize(*b, c))
            fail_msg("color '%s' accepted", *b);
}

static void test_alarm_text(void **state)
{
    (void)state;
    assert_true(alarm_text_valid("", 0));
    assert_true(alarm_text_valid("plain ascii\n", 12));
    assert_true(alarm_text_valid("caf\xc3\xa9", 5));              /* é */
    assert_true(alarm_text_valid("\xe2\x82\xac", 3));             /* € */
    assert_true(alarm_text_valid("\xf0\x9f\x92\xa5", 4));         /* 💥 */
    assert_false(alarm_text_valid("a\0b", 3));                    /* NUL */
    assert_false(alarm_text_valid("\xff", 1));
    assert_false(alarm_text_valid("\xc3", 1));                    /* truncated */
    assert_false(alarm_text_valid("\xc3(", 2));                   /* bad continuation */
    assert_false(alarm_text_valid("\xc0\xaf", 2));                /* overlong '/' */
    assert_false(alarm_text_valid("\xe0\x80\xaf", 3));            /* overlong */
    assert_false(alarm_text_valid("\xed\xa0\x80", 3));            /* surrogate */
    assert_false(alarm_text_valid("\xf4\x90\x80\x80", 4));        /* > U+10FFFF */
    assert_false(alarm_text_valid("\x80", 1));                    /* lone continuation */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopbox_good_paths), cmocka_unit_test(test_loopbox_bad_paths),
        cmocka_unit_test(test_loopbox_length),     cmocka_unit_test(test_portmap_ports),
        cmocka_unit_test(test_custom_distro_paths), cmocka_unit_test(test_alarm_range),
        cmocka_unit_test(test_alarm_color),        cmocka_unit_test(test_alarm_text),
    };
    return cmocka_run_group_tests_name("loopbox_rules", tests, NULL, NULL);
}
