/* Unit tests for src/common/fsutil.c and clock.c: mkdir -p, atomic writes,
 * the restart backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/common/clock.h"
#include "../../src/common/fsutil.h"

#define TMPDIR_FIXTURE_NAME "fsutil"
#include "tmpdir_fixture.h"

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static void test_mkdirs(void **state)
{
    (void)state;
    char path[128], parent[128];
    err_t e = {0};
    umask(022);
    snprintf(path, sizeof path, "%s/a/b/c", base);
    snprintf(parent, sizeof parent, "%s/a/b", base);
    assert_int_equal(fs_mkdirs(path, 0700, &e), 0);
    assert_int_equal(mode_of(parent), 0755);
    assert_int_equal(mode_of(path), 0700);
    assert_int_equal(fs_mkdirs(path, 0700, &e), 0); /* already there: fine */

    snprintf(path, sizeof path, "%s/p/q/home", base);
    assert_int_equal(fs_mkdir_parents(path, &e), 0);
    snprintf(parent, sizeof parent, "%s/p/q", base);
    assert_int_equal(mode_of(parent), 0755);
    assert_int_equal(access(path, F_OK), -1); /* not the last one */

    /* A file in the way is an error that names it. */
    snprintf(path, sizeof path, "%s/file", base);
    assert_int_equal(fs_write_atomic(path, "x", 1, 0600, &e), 0);
    assert_int_equal(fs_mkdirs(path, 0700, &e), -1);
    assert_non_null(strstr(e.msg, "not a directory"));
}

static void test_write_atomic(void **state)
{
    (void)state;
    char path[128], buf[64] = {0};
    err_t e = {0};
    umask(022);
    snprintf(path, sizeof path, "%s/state.json", base);
    assert_int_equal(fs_write_atomic(path, "old", 3, 0600, &e), 0);
    assert_int_equal(fs_write_atomic(path, "{\"new\":1}", 9, 0600, &e), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 9);
    fclose(f);
    assert_string_equal(buf, "{\"new\":1}");
    assert_int_equal(mode_of(path), 0600);

    /* No temporary file is left behind: the directory holds the one file. */
    DIR *d = opendir(base);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    assert_int_equal(n, 1);

    /* A directory that does not exist: an error naming the file. */
    snprintf(path, sizeof path, "%s/missing/state.json", base);
    assert_int_equal(fs_write_atomic(path, "x", 1, 0600, &e), -1);
    assert_non_null(strstr(e.msg, "missing"));
}

static void test_read_small(void **state)
{
    (void)state;
    char path[128], buf[8];
    snprintf(path, sizeof path, "%s/f", base);
    err_t e = {0};
    assert_int_equal(fs_write_atomic(path, "12345\n", 6, 0600, &e), 0);
    assert_int_equal(fs_read_small(path, buf, sizeof buf), 6);
    assert_string_equal(buf, "12345\n");
    /* Longer than the buffer: cut, still terminated. */
    assert_int_equal(fs_write_atomic(path, "0123456789", 10, 0600, &e), 0);
    assert_int_equal(fs_read_small(path, buf, sizeof buf), 7);
    assert_string_equal(buf, "0123456");
    snprintf(path, sizeof path, "%s/missing", base);
    assert_int_equal(fs_read_small(path, buf, sizeof buf), -1);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(1), 1000);
    assert_int_equal(backoff_ms(2), 2000);
    assert_int_equal(backoff_ms(5), 16000);
    assert_int_equal(backoff_ms(6), 30000);
    assert_int_equal(backoff_ms(1000), 30000);
    long long t = now_ms();
    sleep_ms(20);
    assert_true(now_ms() - t >= 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mkdirs, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_write_atomic, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_read_small, make_base, remove_base),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests_name("fsutil", tests, NULL, NULL);
}
