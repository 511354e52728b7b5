/* Unit tests for src/runtime/quota.c: the setting's values, the `quota`
 * command's report (run with sh on a temporary "home"), what a plain home
 * (no image) reads as, and stop-all's error for a busy containers
 * directory.  Loop images themselves are exercised end to end
 * (tests/e2e/test_quota.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/runtime/quota.h"

#define TMPDIR_FIXTURE_NAME "quota"
#include "tmpdir_fixture.h"

static void test_kind(void **state)
{
    (void)state;
    assert_int_equal(quota_kind_parse("loop"), QUOTA_LOOP);
    assert_int_equal(quota_kind_parse("project"), QUOTA_PROJECT);
    assert_int_equal(quota_kind_parse("off"), QUOTA_OFF);
    assert_int_equal(quota_kind_parse("Loop"), -1);
    assert_int_equal(quota_kind_parse(""), -1);
    assert_int_equal(quota_kind_parse(NULL), -1);
    for (int k = QUOTA_LOOP; k <= QUOTA_OFF; k++)
        assert_int_equal(quota_kind_parse(quota_kind_name((quota_kind_t)k)), k);
}

/* Write the command for home = base, run it with args; its output. */
static char *run_script(long long limit_mb, const char *args)
{
    static char out[4096];
    char script[2048], path[128], cmd[256];
    assert_true(quota_script(script, sizeof script, base, limit_mb) > 0);
    snprintf(path, sizeof path, "%s/quota", base);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh %s %s", path, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    return out;
}

static void test_script_human(void **state)
{
    (void)state;
    char *out = run_script(20, "-s");
    char head[128];
    snprintf(head, sizeof head, "Disk quotas for user %d (uid %d): \n", (int)getuid(),
             (int)getuid());
    assert_int_equal(strncmp(out, head, strlen(head)), 0);
    char *cols = out + strlen(head);
    assert_non_null(strstr(cols, "     Filesystem   space   quota   limit   grace   files"));
    char *row = strchr(cols, '\n') + 1;
    char fs[64], used[16], quota[16], limit[16];
    assert_int_equal(sscanf(row, "%63s %15s %15s %15s", fs, used, quota, limit), 4);
    assert_string_equal(fs, base);
    assert_string_equal(quota, "20M");
    assert_string_equal(limit, "20M");
    char unit = used[strlen(used) - 1];
    assert_true(unit == 'K' || unit == 'M' || unit == 'G');
}

static void test_script_blocks_and_none(void **state)
{
    (void)state;
    char *out = run_script(3072, "");
    assert_non_null(strstr(out, "     Filesystem  blocks   quota   limit"));
    assert_non_null(strstr(out, " 3145728 3145728 "));
    out = run_script(3072, "-vs");
    assert_non_null(strstr(out, "     3G      3G "));
    out = run_script(0, "-s");
    char want[128];
    snprintf(want, sizeof want, "Disk quotas for user %d (uid %d): none\n", (int)getuid(),
             (int)getuid());
    assert_string_equal(out, want);
    char tiny[64];
    assert_int_equal(quota_script(tiny, sizeof tiny, "/containers/30001", 20), -1);
}

/* A plain home: its filesystem's usage, no limit; off makes no image. */
static void test_plain_home(void **state)
{
    (void)state;
    char home[128];
    snprintf(home, sizeof home, "%s/30001", base);
    assert_int_equal(mkdir(home, 0700), 0);
    err_t e;
    err_clear(&e);
    assert_int_equal(quota_prepare(QUOTA_OFF, base, 30001, 20, &e), 0);
    char images[128];
    snprintf(images, sizeof images, "%s/%s", base, QUOTA_IMAGES_DIR);
    assert_int_equal(access(images, F_OK), -1);
    uint64_t used = 0, limit = 1;
    assert_int_equal(quota_usage(QUOTA_OFF, base, 30001, &used, &limit, &e), 0);
    assert_true(used > 0);
    assert_int_equal(limit, 0);
    assert_int_equal(quota_release(QUOTA_LOOP, base, 30001, &e), 0);
    char dev[32];
    assert_int_equal(quota_loop_device(base, 30001, dev, sizeof dev), -1);
    assert_int_equal(quota_usage(QUOTA_OFF, base, 30002, &used, &limit, &e), -1);
    assert_non_null(strstr(e.msg, "usage of home"));
}

/* A containers directory still busy after stop-all's retries: the error
 * names what holds it, as far as the node sees (a mount below it, a process
 * with a file there).  Everything is undone before the assertions, so that a
 * failure leaves no mount in the host's table.  Slow: QUOTA_TEARDOWN_BUSY_MS. */
static void test_teardown_busy_says_what_holds_it(void **state)
{
    (void)state;
    char dir[128], st[128], below[160], file[160], msg[sizeof((err_t *)0)->msg];
    snprintf(dir, sizeof dir, "%s/containers", base);
    snprintf(st, sizeof st, "%s/state", base);
    snprintf(below, sizeof below, "%s/home", dir);
    snprintf(file, sizeof file, "%s/open", dir);
    assert_int_equal(mkdir(dir, 0711), 0);
    assert_int_equal(mkdir(st, 0700), 0);
    err_t e;
    err_clear(&e);
    assert_int_equal(quota_setup(QUOTA_LOOP, dir, st, &e), 0); /* dir bound on itself */
    int mounted = mkdir(below, 0700) == 0 && mount("none", below, "tmpfs", 0, "size=1m") == 0;
    int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int busy = quota_teardown(dir, st, &e);
    snprintf(msg, sizeof msg, "%s", e.msg);
    if (fd >= 0)
        close(fd);
    if (mounted)
        umount2(below, MNT_DETACH);
    err_clear(&e);
    int freed = quota_teardown(dir, st, &e); /* nothing holds it any more */
    if (freed < 0)
        umount2(dir, MNT_DETACH);
    assert_true(mounted);
    assert_true(fd >= 0);
    assert_int_equal(busy, -1);
    char want[640];
    snprintf(want, sizeof want, "unmount the containers directory %s: %s (mounted below it: %s; "
             "working there: %d (", dir, strerror(EBUSY), below, (int)getpid());
    if (!strstr(msg, want))
        fail_msg("got: %s\nwanted: %s", msg, want);
    if (freed < 0)
        fail_msg("teardown once free: %s", e.msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind),
        cmocka_unit_test_setup_teardown(test_script_human, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_script_blocks_and_none, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_plain_home, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_teardown_busy_says_what_holds_it, make_base,
                                        remove_base),
    };
    return cmocka_run_group_tests_name("quota", tests, NULL, NULL);
}
