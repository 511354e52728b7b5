/* Unit tests for src/runtime/loopbox.c, as root with real loop devices.
 * The "container" is a forked child in a mount namespace of its own
 * (private), chrooted into <base>/root, whose home is
 * <base>/root/containers/<uid> (the host's view and the child's
 * /containers/<uid> are one directory); it waits on a pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../src/runtime/cgroup.h"
#include "../../src/runtime/loopbox.h"
#include "../../src/runtime/loopdev.h"
#include "../../src/runtime/quota.h"
#include "../../src/runtime/state.h"
#include "loop_fixture.h"

#define TMPDIR_FIXTURE_NAME "loopbox"
#include "tmpdir_fixture.h"

static int uid;
static char home[160];  /* the host's view of the home */
static pid_t child = -1;
static int child_pipe = -1; /* closing it ends the child */
static loopbox_init_t cinit; /* the child as the node records a container's init */

/* ---- the "container" ---------------------------------------------------------- */

static void start_container(void)
{
    char root[128];
    snprintf(root, sizeof root, "%s/root", base);
    int ready[2], hold[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(ready[0]);
        close(hold[1]);
        char c = 'x';
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            chroot(root) < 0 || chdir("/") < 0)
            c = 'E';
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        while (read(hold[0], &c, 1) > 0)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    child_pipe = hold[1];
    assert_int_equal(c, 'x');
    cinit.pid = child;
    assert_int_equal(proc_stat(child, &cinit.starttime, NULL), 0);
}

static void stop_container(void)
{
    if (child_pipe >= 0)
        close(child_pipe);
    child_pipe = -1;
    if (child > 0)
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
    child = -1;
}

/* A path as the container sees it, through /proc/<child>/root. */
static void inside(char *out, size_t len, const char *rel)
{
    snprintf(out, len, "/proc/%d/root/containers/%d/%s", (int)child, uid, rel);
}

static int setup(void **state)
{
    if (make_base(state) < 0)
        return -1;
    uid = 62000 + getpid() % 1000;
    snprintf(home, sizeof home, "%s/root/containers/%d", base, uid);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && chown %d:%d '%s'", home, uid, uid, home);
    if (system(cmd) != 0)
        return -1;
    start_container();
    return 0;
}

static int teardown(void **state)
{
    stop_container(); /* its namespace and mounts go with it */
    return remove_base(state);
}

/* ---- helpers ------------------------------------------------------------------- */

/* An ext4 image of kb KB at <home>/<name> owned by owner. */
static void make_image(const char *name, int kb, int owner)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && truncate -s %dK '%s' && " QUOTA_MKFS " -q -F '%s' >/dev/null 2>&1 && "
             "chown %d:%d '%s'",
             home, kb, name, name, owner, owner, name);
    assert_int_equal(system(cmd), 0);
}

static int open_image(const char *name, bool ro, struct stat *sb, err_t *e)
{
    err_clear(e);
    return loopbox_open_image(home, uid, name, ro, sb, e);
}

static bool in_own_mountinfo(unsigned long long id)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (strtoull(line, NULL, 10) == id)
            found = true;
    fclose(f);
    return found;
}

/* Mount <home>/<name> as loopbox id on mountpoint, at most max devices;
 * the open image's stat in *sb. */
static int mount_box_as(const char *name, long long id, int max, const char *mp, bool ro,
                        struct stat *sb, loopbox_mnt_t *m, err_t *e)
{
    int img = open_image(name, ro, sb, e);
    assert_true(img >= 0);
    err_clear(e);
    int rc = loopbox_mount(&cinit, uid, id, img, sb, mp, ro, max, m, e);
    close(img);
    return rc;
}

static int mount_box(const char *name, const char *mp, bool ro, struct stat *sb,
                     loopbox_mnt_t *m, err_t *e)
{
    return mount_box_as(name, 7, 0, mp, ro, sb, m, e);
}

/* m as if it were on another loop device (a mount id reused). */
static loopbox_mnt_t on_other_device(const loopbox_mnt_t *m)
{
    loopbox_mnt_t o = *m;
    snprintf(o.dev, sizeof o.dev, "%s",
             strcmp(m->dev, "/dev/loop0") == 0 ? "/dev/loop1" : "/dev/loop0");
    return o;
}

/* ---- the image ------------------------------------------------------------------- */

static void test_open_image_refusals(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    char p[256], q[256];
    assert_int_equal(open_image("zeus001", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    assert_string_equal(e.msg, "the image does not exist");

    make_image("small", 512, uid);
    assert_int_equal(open_image("small", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_string_equal(e.msg, "the image is under 1 MB (512 KB)");

    make_image("real", 2048, uid);
    snprintf(p, sizeof p, "%s/zeus001", home);
    assert_int_equal(symlink("real", p), 0);
    assert_int_equal(open_image("zeus001", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_string_equal(e.msg, "a symbolic link, not an image");

    /* A symlinked directory on the way. */
    snprintf(p, sizeof p, "%s/dir", home);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/link", home);
    assert_int_equal(symlink(".", p), 0);
    assert_int_equal(open_image("link/real", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_non_null(strstr(e.msg, "symbolic link"));

    make_image("foreign", 2048, 0);
    assert_int_equal(open_image("foreign", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_non_null(strstr(e.msg, "belongs to uid 0"));

    assert_int_equal(open_image("dir", false, &sb, &e), -1);
    assert_string_equal(e.msg, "a directory, not an image");

    snprintf(q, sizeof q, "%s/fifo", home);
    assert_int_equal(mkfifo(q, 0644), 0);
    assert_int_equal(chown(q, (uid_t)uid, (gid_t)uid), 0);
    assert_int_equal(open_image("fifo", false, &sb, &e), -1); /* and it did not block */
    assert_string_equal(e.msg, "not a regular file, not an image");

    assert_int_equal(open_image("../x", false, &sb, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_int_equal(open_image("logs/x", false, &sb, &e), -1);

    int fd = open_image("real", true, &sb, &e);
    assert_true(fd >= 0);
    assert_int_equal(sb.st_size, 2048 * 1024);
    assert_int_equal(fcntl(fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
    close(fd);
}

/* ---- e2fsck ------------------------------------------------------------------------ */

static void test_fsck(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    char msg[512];
    make_image("good", 4096, uid);
    int fd = open_image("good", true, &sb, &e);
    assert_true(fd >= 0);
    int frc = loopbox_fsck(fd, uid, NULL, 30000, NULL, msg, sizeof msg);
    if (frc != 0)
        fprintf(stderr, "fsck: %s\n", msg);
    assert_int_equal(frc, 0);
    /* Killed past its time (here: at once). */
    assert_int_equal(loopbox_fsck(fd, uid, NULL, 0, NULL, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "timed out"));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    assert_int_equal(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | __WALL), 0);
    assert_int_equal(si.si_pid, 0); /* reaped: the "container" alone is left */
    close(fd);

    /* Shorter than its filesystem: e2fsck -n complains (and exits 0). */
    make_image("cut", 4096, uid);
    char p[256];
    snprintf(p, sizeof p, "%s/cut", home);
    assert_int_equal(truncate(p, 2048 * 1024), 0);
    fd = open_image("cut", true, &sb, &e);
    assert_true(fd >= 0);
    assert_int_equal(loopbox_fsck(fd, uid, NULL, 30000, NULL, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "filesystem size"));
    close(fd);

    /* Its superblock overwritten. */
    make_image("bad", 4096, uid);
    snprintf(p, sizeof p, "%s/bad", home);
    int w = open(p, O_WRONLY | O_CLOEXEC);
    char junk[1024];
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(pwrite(w, junk, sizeof junk, 1024), (ssize_t)sizeof junk);
    close(w);
    fd = open_image("bad", true, &sb, &e);
    assert_true(fd >= 0);
    assert_int_equal(loopbox_fsck(fd, uid, NULL, 30000, NULL, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "uper"));
    assert_null(strstr(msg, "/proc/self/fd"));
    close(fd);

    /* It runs as the uid: an image only root may read is not read. */
    make_image("rootonly", 2048, 0);
    snprintf(p, sizeof p, "%s/rootonly", home);
    assert_int_equal(chmod(p, 0600), 0);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_not_equal(loopbox_fsck(fd, uid, NULL, 30000, NULL, msg, sizeof msg), 0);
    close(fd);
}

/* The node's main thread reaps with waitpid(-1) on every SIGCHLD. */
static volatile int reaping;

static void *reaper(void *arg)
{
    (void)arg;
    while (reaping) {
        waitpid(-1, NULL, WNOHANG);
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_fsck_beside_a_reaper(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    char msg[512];
    make_image("good", 4096, uid);
    make_image("cut", 4096, uid);
    char p[256];
    snprintf(p, sizeof p, "%s/cut", home);
    assert_int_equal(truncate(p, 2048 * 1024), 0);
    int good = open_image("good", true, &sb, &e), cut = open_image("cut", true, &sb, &e);
    assert_true(good >= 0 && cut >= 0);
    pthread_t t;
    reaping = 1;
    assert_int_equal(pthread_create(&t, NULL, reaper, NULL), 0);
    int rc_good[5], rc_cut[5];
    for (int i = 0; i < 5; i++) {
        rc_good[i] = loopbox_fsck(good, uid, NULL, 30000, NULL, msg, sizeof msg);
        rc_cut[i] = loopbox_fsck(cut, uid, NULL, 30000, NULL, msg, sizeof msg);
    }
    reaping = 0;
    pthread_join(t, NULL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rc_good[i], 0);
        assert_int_equal(rc_cut[i], 1);
    }
    close(good);
    close(cut);
}

/* ---- mount and unmount -------------------------------------------------------------- */

static void test_mount_rw(void **state)
{
    (void)state;
    struct stat sb, st;
    err_t e;
    loopbox_mnt_t m;
    char p[256];
    make_image("zeus001", 4096, 0); /* mkfs as root: its root dir is root's */
    snprintf(p, sizeof p, "%s/zeus001", home);
    assert_int_equal(chown(p, (uid_t)uid, (gid_t)uid), 0);
    assert_int_equal(mount_box("zeus001", "zeus/data", false, &sb, &m, &e), 0);
    assert_true(m.mnt_id > 0);
    assert_int_equal(strncmp(m.dev, "/dev/loop", 9), 0);
    assert_int_equal(m.img_ino, sb.st_ino);
    assert_int_equal(m.img_size, 4096 * 1024);

    /* The container sees it; the host does not. */
    assert_false(in_own_mountinfo(m.mnt_id));
    assert_int_equal(loopbox_present(&cinit, &m), 1);
    /* The same id on another device is not ours (ids are reused). */
    loopbox_mnt_t other = on_other_device(&m);
    assert_int_equal(loopbox_present(&cinit, &other), 0);
    inside(p, sizeof p, "zeus/data");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(major(st.st_dev), 7);
    assert_int_equal(st.st_uid, (uid_t)uid); /* the fs root given to the container */
    inside(p, sizeof p, "zeus/data/lost+found");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(p, sizeof p, "%s/zeus/data/lost+found", home);
    assert_int_equal(access(p, F_OK), -1); /* not on the host's view */
    /* The mountpoint was made, the container's, 0755. */
    snprintf(p, sizeof p, "%s/zeus", home);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, (uid_t)uid);
    assert_int_equal(st.st_mode & 07777, 0755);
    /* Writable. */
    inside(p, sizeof p, "zeus/data/hello");
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);

    /* One image, one filesystem: a second mount is refused. */
    int img = open_image("zeus001", false, &sb, &e);
    assert_true(img >= 0);
    loopbox_mnt_t m2;
    err_clear(&e);
    assert_int_equal(loopbox_mount(&cinit, uid, 8, img, &sb, "other", false, 0, &m2, &e), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    close(img);

    /* Unmounted by its id; then it is not there any more. */
    err_clear(&e);
    assert_int_equal(loopbox_unmount(&cinit, uid, "zeus/data", &m, &e), 1);
    assert_int_equal(loopbox_present(&cinit, &m), 0);
    assert_int_equal(loopbox_unmount(&cinit, uid, "zeus/data", &m, &e), 0);
    assert_true(loop_freed(&sb));
    /* The file written is in the image. */
    assert_int_equal(mount_box("zeus001", "zeus/data", true, &sb, &m, &e), 0);
    inside(p, sizeof p, "zeus/data/hello");
    assert_int_equal(access(p, F_OK), 0);
}

static void test_mount_ro(void **state)
{
    (void)state;
    struct stat sb, st;
    err_t e;
    loopbox_mnt_t m;
    char p[256];
    make_image("ro.img", 2048, uid);
    assert_int_equal(mount_box("ro.img", "ro", true, &sb, &m, &e), 0);
    inside(p, sizeof p, "ro/new");
    assert_int_equal(open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), -1);
    assert_int_equal(errno, EROFS);
    char dev[64];
    assert_int_equal(loopdev_find(sb.st_dev, sb.st_ino, dev, sizeof dev), 0);
    assert_string_equal(dev, m.dev);
    char label[64], want[64];
    assert_int_equal(loopdev_label(dev, label, sizeof label), 0);
    snprintf(want, sizeof want, LOOPBOX_NAME_FMT, uid, 7LL);
    assert_string_equal(label, want);
    inside(p, sizeof p, "ro");
    assert_int_equal(stat(p, &st), 0);
    /* The loop devices go with the container's namespace. */
    stop_container();
    assert_true(loop_freed(&sb));
    loopbox_init_t gone = {.pid = getpid() + 1000000, .starttime = 1};
    assert_int_equal(loopbox_present(&gone, &m), -1);
}

static void test_mountpoint_refusals(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    loopbox_mnt_t m;
    char p[256];
    make_image("img", 2048, uid);
    /* A symlinked parent: refused, nothing made where it points. */
    snprintf(p, sizeof p, "%s/real", home);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/link", home);
    assert_int_equal(symlink("real", p), 0);
    assert_int_equal(mount_box("img", "link/mp", false, &sb, &m, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_non_null(strstr(e.msg, "'link' is a symbolic link"));
    snprintf(p, sizeof p, "%s/real/mp", home);
    assert_int_equal(access(p, F_OK), -1);
    assert_true(loop_freed(&sb)); /* the device it made is gone */
    /* A symlink as the mountpoint itself, to a directory outside. */
    snprintf(p, sizeof p, "%s/out", home);
    assert_int_equal(symlink("/", p), 0);
    assert_int_equal(mount_box("img", "out", false, &sb, &m, &e), -1);
    assert_non_null(strstr(e.msg, "symbolic link"));
    /* A file. */
    snprintf(p, sizeof p, "%s/file", home);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mount_box("img", "file", false, &sb, &m, &e), -1);
    assert_non_null(strstr(e.msg, "'file' is not a directory"));
    /* A mount root already. */
    make_image("img2", 2048, uid);
    loopbox_mnt_t m2;
    assert_int_equal(mount_box("img2", "busy", false, &sb, &m2, &e), 0);
    assert_int_equal(mount_box_as("img", 8, 0, "busy", false, &sb, &m, &e), -1);
    assert_non_null(strstr(e.msg, "mounted on the mountpoint already"));
    /* Bad paths. */
    assert_int_equal(mount_box("img", "a/../b", false, &sb, &m, &e), -1);
    assert_int_equal(e.kind, ERR_INPUT);
    assert_int_equal(mount_box("img", "vassals", false, &sb, &m, &e), -1);
    assert_true(loop_freed(&sb));
}

static void test_unmount_after_rename(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    loopbox_mnt_t m;
    char from[256], to[256];
    make_image("img", 2048, uid);
    assert_int_equal(mount_box("img", "a/b", false, &sb, &m, &e), 0);
    /* The customer renames the mountpoint's parent (inside; one directory). */
    snprintf(from, sizeof from, "%s/a", home);
    snprintf(to, sizeof to, "%s/c", home);
    assert_int_equal(rename(from, to), 0);
    /* And puts a directory where it was: not ours, left alone. */
    assert_int_equal(mkdir(from, 0755), 0);
    snprintf(from, sizeof from, "%s/a/b", home);
    assert_int_equal(mkdir(from, 0755), 0);
    err_clear(&e);
    assert_int_equal(loopbox_unmount(&cinit, uid, "a/b", &m, &e), 1);
    assert_int_equal(loopbox_present(&cinit, &m), 0);
    assert_true(loop_freed(&sb));
}

static void test_not_running(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    loopbox_mnt_t m;
    make_image("img", 2048, uid);
    int img = open_image("img", false, &sb, &e);
    assert_true(img >= 0);
    stop_container();
    err_clear(&e);
    loopbox_init_t gone = {.pid = getpid() + 1000000, .starttime = 1};
    assert_int_equal(loopbox_mount(&gone, uid, 1, img, &sb, "mp", false, 0, &m, &e), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    assert_string_equal(e.msg, "the container's init is gone");
    close(img);
    assert_true(loop_freed(&sb));
}

static void test_fsck_cancel_and_recovery(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    char msg[512];
    make_image("good", 4096, uid);
    int fd = open_image("good", true, &sb, &e);
    assert_true(fd >= 0);
    volatile int cancel = 1;
    assert_int_equal(loopbox_fsck(fd, uid, NULL, 30000, &cancel, msg, sizeof msg), -1);
    assert_string_equal(msg, "cancelled");
    close(fd);
    /* A journal to replay: e2fsck -n only warns; the kernel replays it. */
    char cmd[512];
    make_image("journal", 4096, uid);
    snprintf(cmd, sizeof cmd, "debugfs -w -R 'feature needs_recovery' '%s/journal' >/dev/null 2>&1",
             home);
    assert_int_equal(system(cmd), 0);
    fd = open_image("journal", true, &sb, &e);
    assert_true(fd >= 0);
    int rc = loopbox_fsck(fd, uid, NULL, 30000, NULL, msg, sizeof msg);
    if (rc != 0)
        fprintf(stderr, "fsck: %s\n", msg);
    assert_int_equal(rc, 0);
    close(fd);
}

/* e2fsck runs in the container's cgroups: counted and limited with it. */
static void test_fsck_in_cgroup(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    char msg[512];
    cgroup_t cg;
    cgroup_limits_t lim = {.memory_mb = 256, .pids_max = 64, .cpu_weight = 100,
                           .io_weight = 100};
    err_clear(&e);
    assert_int_equal(cgroup_locate("/sys/fs/cgroup", "imperium-unit-fsck", uid, &cg, &e), 0);
    assert_int_equal(cgroup_create(&cg, &lim, &e), 0);
    make_image("good", 4096, uid);
    int fd = open_image("good", true, &sb, &e);
    assert_true(fd >= 0);
    int rc = loopbox_fsck(fd, uid, cg.dir, 30000, NULL, msg, sizeof msg);
    cgroup_usage_t u;
    cgroup_usage(&cg, &u);
    /* A cgroup that is not there: not run at all. */
    int bad = loopbox_fsck(fd, uid, "/sys/fs/cgroup/memory/imperium-unit-none/1", 30000, NULL,
                           msg, sizeof msg);
    close(fd);
    cgroup_destroy(&cg, &e);
    cgroup_remove_parents(&cg);
    assert_int_equal(rc, 0);
    assert_true(u.cpu_ns > 0 || u.mem > 0);
    assert_int_equal(bad, -1);
    assert_non_null(strstr(msg, "could not run e2fsck in the container's cgroups"));
}

/* The recorded init's start time is not the process's: its pid was reused. */
static void test_pid_reused(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    loopbox_mnt_t m;
    make_image("img", 2048, uid);
    assert_int_equal(mount_box("img", "mp", false, &sb, &m, &e), 0);
    loopbox_init_t other = cinit;
    other.starttime++;
    assert_int_equal(loopbox_present(&other, &m), -1);
    err_clear(&e);
    assert_int_equal(loopbox_unmount(&other, uid, "mp", &m, &e), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    assert_string_equal(e.msg, "the container's init is gone");
    assert_int_equal(loopbox_present(&cinit, &m), 1);
    make_image("img2", 2048, uid);
    int img = open_image("img2", false, &sb, &e);
    assert_true(img >= 0);
    loopbox_mnt_t m2;
    err_clear(&e);
    assert_int_equal(loopbox_mount(&other, uid, 9, img, &sb, "mp2", false, 0, &m2, &e), -1);
    assert_int_equal(e.kind, ERR_NOTFOUND);
    close(img);
    assert_true(loop_freed(&sb));
}

/* A mount id on another device is not the loopbox's: left alone. */
static void test_unmount_checks_device(void **state)
{
    (void)state;
    struct stat sb;
    err_t e;
    loopbox_mnt_t m;
    make_image("img", 2048, uid);
    assert_int_equal(mount_box("img", "mp", false, &sb, &m, &e), 0);
    loopbox_mnt_t other = on_other_device(&m);
    err_clear(&e);
    assert_int_equal(loopbox_unmount(&cinit, uid, "mp", &other, &e), 0);
    assert_int_equal(loopbox_present(&cinit, &m), 1);
    assert_int_equal(loopbox_unmount(&cinit, uid, "mp", &m, &e), 1);
}

/* Loop devices never pile up: an old one still held blocks its loopbox,
 * and a container has at most max of them. */
static void test_devices_limited(void **state)
{
    (void)state;
    struct stat sb, old;
    err_t e;
    loopbox_mnt_t m, m2;
    char p[256];
    make_image("img", 2048, uid);
    assert_int_equal(mount_box_as("img", 1, 0, "a", false, &old, &m, &e), 0);
    assert_int_equal(loopbox_devices_of(uid), 1);
    /* A process keeps a file of it open; unmounted, the device stays. */
    inside(p, sizeof p, "a/held");
    int held = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(held >= 0);
    err_clear(&e);
    assert_int_equal(loopbox_unmount(&cinit, uid, "a", &m, &e), 1);
    /* The customer put a new image in its place: still refused. */
    snprintf(p, sizeof p, "%s/img", home);
    assert_int_equal(unlink(p), 0);
    make_image("img", 2048, uid);
    assert_int_equal(mount_box_as("img", 1, 0, "a", false, &sb, &m2, &e), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    char want[128];
    snprintf(want, sizeof want, "still held by %s: a process keeps the old mount busy", m.dev);
    assert_string_equal(e.msg, want);
    close(held);
    assert_true(loop_freed(&old));
    assert_int_equal(loopbox_devices_of(uid), 0);
    /* At most 2. */
    make_image("img2", 2048, uid);
    make_image("img3", 2048, uid);
    assert_int_equal(mount_box_as("img", 1, 2, "a", false, &sb, &m, &e), 0);
    assert_int_equal(mount_box_as("img2", 2, 2, "b", false, &sb, &m2, &e), 0);
    assert_int_equal(loopbox_devices_of(uid), 2);
    assert_int_equal(mount_box_as("img3", 3, 2, "c", false, &sb, &m2, &e), -1);
    assert_int_equal(e.kind, ERR_CONFLICT);
    assert_string_equal(e.msg,
                        "the container has 2 loopbox devices, the node's limit (loopbox_max)");
    assert_true(loop_freed(&sb));
    assert_int_equal(loopbox_devices_of(uid + 1), 0);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_loopbox: needs root (loop devices, namespaces); skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_image_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsck_beside_a_reaper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mount_rw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mount_ro, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mountpoint_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmount_after_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsck_cancel_and_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsck_in_cgroup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pid_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmount_checks_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices_limited, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
