/* Unit tests for src/runtime/loopdev.c (real loop devices: root) and
 * quota_mount_home_at, which mounts a home image through them. */
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
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "../../src/runtime/loopdev.h"
#include "../../src/runtime/quota.h"
#include "loop_fixture.h"

#define TMPDIR_FIXTURE_NAME "loopdev"
#include "tmpdir_fixture.h"

/* An ext4 image of mb MB at path. */
static void make_image(const char *path, int mb)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "truncate -s %dM '%s' && " QUOTA_MKFS " -q -F '%s' >/dev/null 2>&1",
             mb, path, path);
    assert_int_equal(system(cmd), 0);
}

static void test_attach_find_label(void **state)
{
    (void)state;
    char img[128], dev[64], found[64], label[64];
    snprintf(img, sizeof img, "%s/a.img", base);
    make_image(img, 2);
    int fd = open(img, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(loopdev_find(sb.st_dev, sb.st_ino, found, sizeof found), -1);
    err_t e;
    err_clear(&e);
    int loop = loopdev_attach(fd, "imperium-test:1", false, dev, sizeof dev, &e);
    close(fd);
    assert_true(loop >= 0);
    assert_int_equal(strncmp(dev, "/dev/loop", 9), 0);
    assert_int_equal(loopdev_find(sb.st_dev, sb.st_ino, found, sizeof found), 0);
    assert_string_equal(found, dev);
    assert_int_equal(loopdev_label(dev, label, sizeof label), 0);
    assert_string_equal(label, "imperium-test:1");
    /* Found by its label, exactly or by prefix. */
    assert_int_equal(loopdev_count_labelled("imperium-test:1", false, found, sizeof found), 1);
    assert_string_equal(found, dev);
    assert_true(loopdev_count_labelled("imperium-test:", true, NULL, 0) >= 1);
    assert_int_equal(loopdev_count_labelled("imperium-test:", false, NULL, 0), 0);
    assert_int_equal(loopdev_count_labelled("imperium-test:12", true, NULL, 0), 0);
    /* The sysfs name of its minor is the device itself. */
    struct stat ds;
    char name[32];
    assert_int_equal(stat(dev, &ds), 0);
    assert_int_equal(loopdev_name((int)minor(ds.st_rdev), name, sizeof name), 0);
    assert_string_equal(name, dev + 5);
    /* Another file is not found. */
    assert_int_equal(loopdev_find(sb.st_dev, sb.st_ino + 1000000, found, sizeof found), -1);
    close(loop); /* autoclear, nothing mounted: the device goes */
    assert_true(loop_freed(&sb));
    assert_int_equal(loopdev_label(dev, label, sizeof label), -1);
}

static void test_attach_ro_refuses_writes(void **state)
{
    (void)state;
    char img[128], dev[64];
    snprintf(img, sizeof img, "%s/r.img", base);
    make_image(img, 2);
    int fd = open(img, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    err_t e;
    err_clear(&e);
    int loop = loopdev_attach(fd, "imperium-test:ro", true, dev, sizeof dev, &e);
    close(fd);
    assert_true(loop >= 0);
    char block[512] = {0};
    assert_int_equal(pread(loop, block, sizeof block, 0), (ssize_t)sizeof block);
    assert_true(pwrite(loop, block, sizeof block, 0) < 0);
    int w = open(dev, O_WRONLY | O_CLOEXEC);
    assert_true(w < 0 || pwrite(w, block, sizeof block, 0) < 0);
    if (w >= 0)
        close(w);
    close(loop);
    assert_true(loop_freed(&sb));
}

static void test_attach_bad_fd(void **state)
{
    (void)state;
    char dev[64];
    err_t e;
    err_clear(&e);
    assert_int_equal(loopdev_attach(-1, "x", false, dev, sizeof dev, &e), -1);
    assert_non_null(strstr(e.msg, "attach a loop device"));
    assert_int_equal(loopdev_label("/dev/null", dev, sizeof dev), -1);
}

/* ---- quota_mount_home_at ---------------------------------------------------- */

static void test_mount_home_at(void **state)
{
    (void)state;
    int uid = 61000 + getpid() % 1000;
    char dir[128], img[192], t1[128], t2[128];
    snprintf(dir, sizeof dir, "%s/containers", base);
    snprintf(img, sizeof img, "%s/.images/%d.ext4", dir, uid);
    snprintf(t1, sizeof t1, "%s/t1", base);
    snprintf(t2, sizeof t2, "%s/t2", base);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(t1, 0700), 0);
    assert_int_equal(mkdir(t2, 0700), 0);
    int f1 = open(t1, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int f2 = open(t2, O_PATH | O_DIRECTORY | O_CLOEXEC);
    assert_true(f1 >= 0 && f2 >= 0);
    err_t e;
    err_clear(&e);
    /* No image (no .images even): a plain home, nothing mounted. */
    assert_int_equal(quota_mount_home_at(dir, uid, f1, &e), 0);
    char images[160];
    snprintf(images, sizeof images, "%s/.images", dir);
    assert_int_equal(mkdir(images, 0700), 0);
    assert_int_equal(quota_mount_home_at(dir, uid, f1, &e), 0);
    make_image(img, 4);
    assert_int_equal(quota_mount_home_at(dir, uid, f1, &e), 1);
    /* A second mount reuses the device backing the image: one superblock. */
    assert_int_equal(quota_mount_home_at(dir, uid, f2, &e), 1);
    struct stat s1, s2, sb;
    assert_int_equal(stat(t1, &s1), 0);
    assert_int_equal(stat(t2, &s2), 0);
    assert_int_equal(s1.st_dev, s2.st_dev);
    assert_int_equal(major(s1.st_dev), 7);
    assert_int_equal(stat(img, &sb), 0);
    char dev[64], label[64];
    assert_int_equal(loopdev_find(sb.st_dev, sb.st_ino, dev, sizeof dev), 0);
    assert_int_equal(loopdev_label(dev, label, sizeof label), 0);
    char want[64];
    snprintf(want, sizeof want, "imperium-home:%d", uid);
    assert_string_equal(label, want);
    /* A file written through one is seen through the other. */
    char p[192];
    snprintf(p, sizeof p, "%s/hello", t1);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
    snprintf(p, sizeof p, "%s/hello", t2);
    assert_int_equal(access(p, F_OK), 0);
    close(f1);
    close(f2);
    assert_int_equal(umount2(t1, 0), 0);
    assert_int_equal(umount2(t2, 0), 0);
    assert_true(loop_freed(&sb));
}

static void test_mount_home_at_bad_dir(void **state)
{
    (void)state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/none", base);
    err_t e;
    err_clear(&e);
    assert_int_equal(quota_mount_home_at(dir, 1234, AT_FDCWD, &e), -1);
    assert_non_null(strstr(e.msg, "containers directory"));
}

/* A failed test may leave its mounts: lazily gone before the tree is. */
static int unmount_remove(void **state)
{
    const char *names[] = {"t1", "t2"};
    for (size_t i = 0; i < 2; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", base, names[i]);
        while (umount2(p, MNT_DETACH) == 0)
            ;
    }
    return remove_base(state);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_loopdev: needs root (loop devices); skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attach_find_label, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_attach_ro_refuses_writes, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_attach_bad_fd, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_mount_home_at, make_base, unmount_remove),
        cmocka_unit_test_setup_teardown(test_mount_home_at_bad_dir, make_base, remove_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
