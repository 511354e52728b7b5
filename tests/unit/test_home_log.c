/* Unit tests for home_append_log (src/runtime/home.c): the node's lines in
 * a file of the customer's home, never following what the customer put
 * there.  Root (chown). */
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
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/runtime/home.h"

#define TMPDIR_FIXTURE_NAME "homelog"
#include "tmpdir_fixture.h"

#define UID 63123

static char home[128];

static int setup(void **state)
{
    if (make_base(state) < 0)
        return -1;
    snprintf(home, sizeof home, "%s/home", base);
    char logs[160];
    snprintf(logs, sizeof logs, "%s/logs", home);
    return mkdir(home, 0700) == 0 && mkdir(logs, 0755) == 0 && chown(home, UID, UID) == 0 &&
                   chown(logs, UID, UID) == 0
               ? 0
               : -1;
}

static char *slurp(const char *rel)
{
    static char buf[4096];
    char p[256];
    snprintf(p, sizeof p, "%s/%s", home, rel);
    FILE *f = fopen(p, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_appends_lines(void **state)
{
    (void)state;
    assert_int_equal(home_append_log(home, UID, "logs/emperor.log", "loopbox 7", "one", 0), 0);
    assert_int_equal(home_append_log(home, UID, "logs/emperor.log", "loopbox 7", "two", 0), 0);
    char *text = slurp("logs/emperor.log");
    assert_non_null(text);
    /* "YYYY-mm-dd HH:MM:SS UTC imperium <who>: <line>" */
    assert_int_equal(strlen(text), 2 * (19 + strlen(" UTC imperium loopbox 7: one\n")));
    assert_non_null(strstr(text, " UTC imperium loopbox 7: one\n"));
    assert_non_null(strstr(text, " UTC imperium loopbox 7: two\n"));
    assert_true(text[4] == '-' && text[10] == ' ');
    struct stat st;
    char p[256];
    snprintf(p, sizeof p, "%s/logs/emperor.log", home);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, UID); /* created for the customer */
    assert_int_equal(st.st_mode & 0777, 0644);
}

static void test_refuses_what_it_must_not_touch(void **state)
{
    (void)state;
    char p[256], q[256];
    /* A symlink to a file of the node's. */
    snprintf(q, sizeof q, "%s/secret", base);
    int fd = open(q, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(p, sizeof p, "%s/logs/a.log", home);
    assert_int_equal(symlink(q, p), 0);
    assert_int_equal(home_append_log(home, UID, "logs/a.log", "x", "y", 0), -1);
    /* A symlinked directory on the way. */
    snprintf(p, sizeof p, "%s/l", home);
    assert_int_equal(symlink(base, p), 0);
    assert_int_equal(home_append_log(home, UID, "l/secret", "x", "y", 0), -1);
    /* A hard link. */
    snprintf(p, sizeof p, "%s/logs/b.log", home);
    assert_int_equal(link(q, p), 0);
    assert_int_equal(home_append_log(home, UID, "logs/b.log", "x", "y", 0), -1);
    struct stat st;
    assert_int_equal(stat(q, &st), 0);
    assert_int_equal(st.st_size, 0);
    /* Someone else's file. */
    snprintf(p, sizeof p, "%s/logs/c.log", home);
    fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(fchown(fd, UID + 1, UID + 1), 0);
    close(fd);
    assert_int_equal(home_append_log(home, UID, "logs/c.log", "x", "y", 0), -1);
    /* A file of root's (one link: a copy, or one the node made): not
     * given to the customer, not written. */
    snprintf(p, sizeof p, "%s/logs/r.log", home);
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(home_append_log(home, UID, "logs/r.log", "x", "y", 0), -1);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_size, 0);
    /* A fifo: no block, no write. */
    snprintf(p, sizeof p, "%s/logs/d.log", home);
    assert_int_equal(mkfifo(p, 0644), 0);
    assert_int_equal(home_append_log(home, UID, "logs/d.log", "x", "y", 0), -1);
    /* Out of the home. */
    assert_int_equal(home_append_log(home, UID, "../secret", "x", "y", 0), -1);
    assert_int_equal(stat(q, &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void test_cap(void **state)
{
    (void)state;
    assert_int_equal(home_append_log(home, UID, "logs/r.log", "router", "first", 30), 0);
    assert_int_equal(home_append_log(home, UID, "logs/r.log", "router", "second", 30), -1);
    assert_int_equal(errno, EFBIG);
    assert_null(strstr(slurp("logs/r.log"), "second"));
    /* A line too long for one write is cut, still one line. */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(home_append_log(home, UID, "logs/big.log", "x", big, 0), 0);
    char *text = slurp("logs/big.log");
    assert_int_equal(strchr(text, '\n') - text, (long)strlen(text) - 1);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_home_log: needs root (chown); skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_appends_lines, setup, remove_base),
        cmocka_unit_test_setup_teardown(test_refuses_what_it_must_not_touch, setup, remove_base),
        cmocka_unit_test_setup_teardown(test_cap, setup, remove_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
