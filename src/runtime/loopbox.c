/* loopbox.c - a customer's ext4 image mounted in its container only
 * (loopbox.h; docs/design/issue17/CONTRACT.md).
 *
 * The filesystem is made on the host (a loop device, fsopen/fsmount: a
 * detached mount no namespace sees) and attached inside the container's
 * mount namespace by a short-lived thread: a multi-threaded process cannot
 * setns(CLONE_NEWNS), a thread whose fs_struct is its own (unshare
 * CLONE_FS) can, and only move_mount needs to run there.  Every path is
 * the customer's, so every one is resolved with openat2 without following
 * a symbolic link, and a mount is unmounted through a descriptor of it
 * whose mount id was checked, never by a path. */
#include "loopbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/clock.h"
#include "../common/rawfork.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "cgroup.h"
#include "loopdev.h"
#include "state.h"
#include "quota.h"

#define PATH_CHECK_MAX 1024 /* the API's limits are lower; this re-check is for the rules */
#define HOME_INSIDE "/containers/%d"
#define FSCK_OUT_MAX 4096

static int check_path(const char *what, const char *path, err_t *e)
{
    char why[256];
    if (!loopbox_path_valid(path, PATH_CHECK_MAX, why, sizeof why))
        return err_set(e, ERR_INPUT, "the %s '%s' %s", what, path, why);
    return 0;
}

/* ---- the image ------------------------------------------------------------- */

/* "512 KB", "300 bytes": how small an image is, in words. */
static void small_size(long long bytes, char *out, size_t len)
{
    if (bytes >= 1024)
        snprintf(out, len, "%lld KB", bytes / 1024);
    else
        snprintf(out, len, "%lld bytes", bytes);
}

static int image_checks(int fd, int uid, struct stat *sb, err_t *e)
{
    if (fstat(fd, sb) < 0)
        return err_set(e, ERR_INTERNAL, "cannot look at the image: %s", strerror(errno));
    if (S_ISDIR(sb->st_mode))
        return err_set(e, ERR_INPUT, "a directory, not an image");
    if (!S_ISREG(sb->st_mode))
        return err_set(e, ERR_INPUT, "not a regular file, not an image");
    if (sb->st_uid != (uid_t)uid)
        return err_set(e, ERR_INPUT, "the image belongs to uid %u, not to the container (%d)",
                       (unsigned)sb->st_uid, uid);
    if (sb->st_size < LOOPBOX_MIN_BYTES) {
        char size[32];
        small_size((long long)sb->st_size, size, sizeof size);
        return err_set(e, ERR_INPUT, "the image is under 1 MB (%s)", size);
    }
    return 0;
}

/* Open name in parent: O_NONBLOCK so that a fifo in its place never blocks
 * (dropped again once it is known to be a regular file). */
static int open_last(int parent, const char *name, bool ro, err_t *e)
{
    int fd = openat(parent, name,
                    (ro ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    switch (errno) {
    case ENOENT:
        return err_set(e, ERR_NOTFOUND, "the image does not exist");
    case ELOOP:
        return err_set(e, ERR_INPUT, "a symbolic link, not an image");
    case EISDIR:
        return err_set(e, ERR_INPUT, "a directory, not an image");
    default:
        return err_set(e, ERR_INPUT, "cannot open the image: %s", strerror(errno));
    }
}

int loopbox_open_image(const char *home, int uid, const char *filename, bool ro, struct stat *sb,
                       err_t *e)
{
    if (check_path("filename", filename, e) < 0)
        return -1;
    int hfd = open(home, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (hfd < 0)
        return err_set(e, ERR_INTERNAL, "the container's home %s: %s", home, strerror(errno));
    const char *last;
    int parent = beneath_parent(hfd, filename, &last, 0);
    int err = errno;
    close(hfd);
    if (parent < 0) {
        if (err == ENOENT)
            return err_set(e, ERR_NOTFOUND, "the image does not exist");
        return err_set(e, ERR_INPUT, "%s",
                       err == ELOOP ? "a directory on its path is a symbolic link"
                       : err == ENOTDIR ? "a part of its path is not a directory"
                                        : strerror(err));
    }
    int fd = open_last(parent, last, ro, e);
    close(parent);
    if (fd < 0)
        return -1;
    if (image_checks(fd, uid, sb, e) < 0) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        err_set(e, ERR_INTERNAL, "cannot use the image: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- e2fsck ------------------------------------------------------------------ */

#define FSCK_SETUP_FAILED 126 /* e2fsck's exit codes never have bit 64 set: */
#define FSCK_EXEC_FAILED 127  /* these and FSCK_SIGNALED + signal are ours */
#define FSCK_SIGNALED 192

/* e2fsck: fd 3 the image, 1 and 2 the pipe, run as uid:uid with no
 * privilege, killed with its parent (the middle process). */
static void fsck_exec(int img, int out, int devnull, int uid, pid_t middle)
{
    static char *const argv[] = {QUOTA_E2FSCK, "-n", "-f", "/proc/self/fd/3", NULL};
    /* EXT2FS_NO_MTAB_OK: its procfs has no /proc/mounts (subset=pid), and
     * the image is no mounted filesystem (no loop device backs it). */
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C",
                                 "E2FSCK_CONFIG=/dev/null", "EXT2FS_NO_MTAB_OK=1", NULL};
    /* fds 0-2 and 3 may be any of the three: move them high first. */
    int i = fcntl(img, F_DUPFD, 10), o = fcntl(out, F_DUPFD, 10), n = fcntl(devnull, F_DUPFD, 10);
    if (i < 0 || o < 0 || n < 0 || dup2(n, 0) < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0 ||
        dup2(i, 3) < 0 || syscall(SYS_close_range, 4U, ~0U, 0U) < 0)
        _exit(FSCK_SETUP_FAILED);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || syscall(SYS_getppid) != middle ||
        chdir("/") < 0 || syscall(SYS_setgroups, 0, NULL) < 0 ||
        syscall(SYS_setresgid, uid, uid, uid) < 0 || syscall(SYS_setresuid, uid, uid, uid) < 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        _exit(FSCK_SETUP_FAILED);
    execve(argv[0], argv, envp);
    _exit(FSCK_EXEC_FAILED);
}

/* The sandbox, made by the middle (still root) for e2fsck to inherit: no
 * network, IPC or host name of the host's; a procfs of its own that shows
 * only the processes e2fsck may trace and none of /proc's other files
 * (/proc/self/fd/3 still works); its CPU time capped by the kernel. */
static int fsck_sandbox(int timeout_ms)
{
    struct rlimit cpu;
    cpu.rlim_cur = cpu.rlim_max = (rlim_t)(timeout_ms / 1000 + 1);
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "hidepid=invisible,subset=pid") < 0 ||
        setrlimit(RLIMIT_CPU, &cpu) < 0)
        return -1;
    return 0;
}

/* The middle process, started with no exit signal: the node's SIGCHLD
 * reaper (waitpid(-1) without __WCLONE, supervisor.c) never takes it, so
 * its status is ours.  e2fsck itself cannot be that child: an execve
 * makes the exit signal SIGCHLD again.  It waits for its parent to have
 * put it in the container's cgroups (a byte on go), makes the sandbox and
 * passes on e2fsck's end as its exit status.  Only async-signal-safe
 * calls: the node has threads. */
static void fsck_middle(int img, int out, int devnull, int go, int uid, int timeout_ms)
{
    char c;
    ssize_t n;
    while ((n = read(go, &c, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1 || fsck_sandbox(timeout_ms) < 0)
        _exit(FSCK_SETUP_FAILED);
    pid_t me = (pid_t)syscall(SYS_getpid);
    pid_t pid = raw_fork(SIGCHLD, NULL);
    if (pid == 0)
        fsck_exec(img, out, devnull, uid, me);
    if (pid < 0)
        _exit(FSCK_SETUP_FAILED);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            _exit(FSCK_SETUP_FAILED);
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : FSCK_SIGNALED + WTERMSIG(st));
}

#define FSCK_RO_RECOVERY "Warning: skipping journal recovery because doing a read-only"

/* e2fsck's lines that say nothing is wrong. */
static bool fsck_quiet_line(const char *l)
{
    /* -n cannot replay a journal; the kernel does, at a read-write mount. */
    return !l[0] || strncmp(l, "Pass ", 5) == 0 || strncmp(l, "e2fsck ", 7) == 0 ||
           strncmp(l, FSCK_RO_RECOVERY, sizeof FSCK_RO_RECOVERY - 1) == 0 ||
           (strncmp(l, "/proc/self/fd/3: ", 17) == 0 && strstr(l, " files ("));
}

/* The first two lines of complaint in out, "/proc/self/fd/3" said "the
 * image"; false when there is none. */
static bool fsck_complaint(char *out, char *msg, size_t len)
{
    size_t used = 0;
    int found = 0;
    msg[0] = '\0';
    for (char *l = strtok(out, "\n"); l && found < 2; l = strtok(NULL, "\n")) {
        if (fsck_quiet_line(l))
            continue;
        if (strncmp(l, QUOTA_E2FSCK ": ", sizeof QUOTA_E2FSCK + 1) == 0)
            l += sizeof QUOTA_E2FSCK + 1;
        char line[512];
        const char *at = strstr(l, "/proc/self/fd/3");
        if (at)
            snprintf(line, sizeof line, "%.*sthe image%s", (int)(at - l), l, at + 15);
        else
            snprintf(line, sizeof line, "%s", l);
        int n = snprintf(msg + used, len - used, "%s%s", found ? "; " : "", line);
        if (n < 0 || (size_t)n >= len - used)
            return true;
        used += (size_t)n;
        found++;
    }
    return found > 0;
}

#define FSCK_POLL_MS 200 /* how often *cancel is looked at */

typedef enum { FSCK_ENDED, FSCK_TIMED_OUT, FSCK_CANCELLED, FSCK_UNWATCHABLE } fsck_end_t;

/* Read the middle's output (out, size) until EOF and its end (pidfd), the
 * deadline or *cancel, whichever comes first. */
static fsck_end_t fsck_watch(int fd, int pidfd, char *out, size_t size, long long deadline,
                             const volatile int *cancel)
{
    size_t used = 0;
    bool eof = false, ended = false;
    while (!eof || !ended) {
        if (cancel && *cancel)
            return FSCK_CANCELLED;
        long long left = deadline - now_ms();
        if (left <= 0)
            return FSCK_TIMED_OUT;
        struct pollfd p[2] = {{.fd = eof ? -1 : fd, .events = POLLIN},
                              {.fd = ended ? -1 : pidfd, .events = POLLIN}};
        int rc = poll(p, 2, left > FSCK_POLL_MS ? FSCK_POLL_MS : (int)left);
        if (rc < 0 && errno != EINTR)
            return FSCK_UNWATCHABLE;
        if (rc <= 0)
            continue;
        ended = ended || p[1].revents;
        if (!p[0].revents)
            continue;
        char sink[512];
        char *to = used < size - 1 ? out + used : sink;
        size_t room = used < size - 1 ? size - 1 - used : sizeof sink;
        ssize_t n = read(fd, to, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            eof = true;
        else if (to != sink)
            used += (size_t)n;
        out[used] = '\0';
    }
    return FSCK_ENDED;
}

/* The verdict on e2fsck's end (the middle process's, si) and output. */
static int fsck_verdict(const siginfo_t *si, int uid, char *out, char *msg, size_t len)
{
    int code = si->si_code == CLD_EXITED ? si->si_status : FSCK_SIGNALED + si->si_status;
    if (code == FSCK_SETUP_FAILED || code == FSCK_EXEC_FAILED) {
        snprintf(msg, len, "could not run e2fsck as uid %d (%s)", uid,
                 code == FSCK_EXEC_FAILED ? "no " QUOTA_E2FSCK : "setup failed");
        return -1;
    }
    bool said = fsck_complaint(out, msg, len);
    /* -n answers "no" and may exit 0 on a filesystem larger than its
     * image: a complaint is enough to refuse it. */
    if (code == 0 && !said)
        return 0;
    if (!said)
        snprintf(msg, len, "e2fsck ended with %s %d", code >= FSCK_SIGNALED ? "signal" : "exit",
                 code >= FSCK_SIGNALED ? code - FSCK_SIGNALED : code);
    return 1;
}

/* Put the middle (pid) in the container's cgroups: e2fsck, its child,
 * is counted and limited with the container (its memory above all). */
static int fsck_join(const char *cgroup_dir, pid_t pid, char *msg, size_t len)
{
    if (!cgroup_dir || !cgroup_dir[0])
        return 0;
    cgroup_t cg;
    err_t e;
    err_clear(&e);
    if (cgroup_from_dir(cgroup_dir, &cg, &e) < 0 || cgroup_add(&cg, pid, &e) < 0) {
        snprintf(msg, len, "could not run e2fsck in the container's cgroups: %s", e.msg);
        return -1;
    }
    return 0;
}

/* Start the middle, in the cgroups; its pidfd, -1 with msg set. */
static int fsck_start(int img, int out, int uid, const char *cgroup_dir, int timeout_ms,
                      char *msg, size_t len)
{
    int go[2], pidfd = -1;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || pipe2(go, O_CLOEXEC) < 0) {
        snprintf(msg, len, "could not run e2fsck: %s", strerror(errno));
        if (devnull >= 0)
            close(devnull);
        return -1;
    }
    pid_t pid = raw_fork(0, &pidfd);
    if (pid == 0)
        fsck_middle(img, out, devnull, go[0], uid, timeout_ms);
    int err = errno;
    close(go[0]);
    close(devnull);
    if (pid < 0) {
        close(go[1]);
        snprintf(msg, len, "could not run e2fsck: clone3: %s", strerror(err));
        return -1;
    }
    int ok = fsck_join(cgroup_dir, pid, msg, len) == 0 && write(go[1], "g", 1) == 1;
    if (!ok && !msg[0])
        snprintf(msg, len, "could not run e2fsck: %s", strerror(errno));
    close(go[1]); /* without the byte, the middle ends at once */
    if (!ok) {
        pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        while (waitid(P_PIDFD, (id_t)pidfd, NULL, WEXITED | __WCLONE) < 0 && errno == EINTR)
            ;
        close(pidfd);
        return -1;
    }
    return pidfd;
}

int loopbox_fsck(int img, int uid, const char *cgroup_dir, int timeout_ms,
                 const volatile int *cancel, char *msg, size_t len)
{
    int pfd[2];
    msg[0] = '\0';
    char *out = malloc(FSCK_OUT_MAX);
    if (!out || pipe2(pfd, O_CLOEXEC) < 0) {
        snprintf(msg, len, "could not run e2fsck: %s", out ? strerror(errno) : "out of memory");
        free(out);
        return -1;
    }
    out[0] = '\0';
    int pidfd = fsck_start(img, pfd[1], uid, cgroup_dir, timeout_ms, msg, len);
    close(pfd[1]);
    if (pidfd < 0) {
        close(pfd[0]);
        free(out);
        return -1;
    }
    fsck_end_t end = fsck_watch(pfd[0], pidfd, out, FSCK_OUT_MAX, now_ms() + timeout_ms, cancel);
    close(pfd[0]);
    if (end != FSCK_ENDED) /* the middle; e2fsck dies with it (PDEATHSIG) */
        pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int w;
    while ((w = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | __WCLONE)) < 0 && errno == EINTR)
        ;
    int err = errno;
    close(pidfd);
    int rc = -1;
    if (end == FSCK_TIMED_OUT) {
        snprintf(msg, len, "timed out after %d s (killed)", timeout_ms / 1000);
        rc = 1;
    } else if (end == FSCK_CANCELLED) {
        snprintf(msg, len, "cancelled");
    } else if (end == FSCK_UNWATCHABLE || w < 0) {
        snprintf(msg, len, "could not wait for e2fsck: %s",
                 end == FSCK_UNWATCHABLE ? "poll failed" : strerror(err));
    } else {
        rc = fsck_verdict(&si, uid, out, msg, len);
    }
    free(out);
    return rc;
}

/* ---- the mount, made on the host ---------------------------------------------- */

/* The kernel's own word on a failed mount (the fs context's log), if any. */
static void fs_log(int fs, char *out, size_t len)
{
    char buf[256];
    out[0] = '\0';
    ssize_t n = read(fs, buf, sizeof buf - 1);
    if (n <= 2)
        return;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(out, len, " (%s)", buf + 2); /* "e <message>" */
}

/* ext4 on dev as a detached mount: its descriptor, -1 with e set. */
static int make_mount(const char *dev, bool ro, err_t *e)
{
    int fs = fsopen("ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        return err_set(e, ERR_INTERNAL, "fsopen ext4: %s", strerror(errno));
    int mnt = -1;
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "acl", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "user_xattr", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "errors", "remount-ro", 0) < 0 ||
        (ro && fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0) ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        int err = errno;
        char why[300];
        fs_log(fs, why, sizeof why);
        close(fs);
        return err_set(e, ERR_INPUT, "the kernel refused its ext4 filesystem: %s%s",
                       strerror(err), why);
    }
    mnt = fsmount(fs, FSMOUNT_CLOEXEC,
                  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (ro ? MOUNT_ATTR_RDONLY : 0));
    int err = errno;
    close(fs);
    if (mnt < 0)
        return err_set(e, ERR_INTERNAL, "fsmount: %s", strerror(err));
    return mnt;
}

/* The filesystem's root the container's, lost+found root's (0700): an
 * image made by mkfs as root would otherwise be unwritable to it. */
static int fix_owners(int mnt, int uid, err_t *e)
{
    int root = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0 || fchown(root, (uid_t)uid, (gid_t)uid) < 0) {
        int err = errno;
        if (root >= 0)
            close(root);
        return err_set(e, ERR_INTERNAL, "give the filesystem's root to %d: %s", uid,
                       strerror(err));
    }
    int lf = openat(root, "lost+found", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(root);
    if (lf < 0)
        return 0; /* none, or not a directory: the customer's business */
    int rc = 0;
    if (fchown(lf, 0, 0) < 0 || fchmod(lf, 0700) < 0)
        rc = err_set(e, ERR_INTERNAL, "lost+found: %s", strerror(errno));
    close(lf);
    return rc;
}

/* ---- the namespace part: a thread of its own ---------------------------------- */

typedef struct {
    const loopbox_init_t *init;
    int uid;
    const char *mountpoint;
    int mnt;                   /* mount: the detached mount to attach */
    unsigned long long mnt_id; /* mount: the new mount's id; unmount: the one to detach */
    dev_t rdev;                /* the loop device the mount must be of */
    int pidfd, root, host_fds; /* opened before setns (the host's /proc) */
    int mountinfo;
    int rc;
    err_t e;
} ns_job_t;

/* mkdir -p rel under dir, new directories 0755 uid:uid; the last one's
 * descriptor (O_RDONLY | O_DIRECTORY); no symlink followed anywhere. */
static int mkdir_p(int dir, const char *rel, int uid, err_t *e)
{
    char buf[PATH_CHECK_MAX + 1];
    snprintf(buf, sizeof buf, "%s", rel);
    int cur = fcntl(dir, F_DUPFD_CLOEXEC, 0);
    char *save = NULL;
    for (char *c = strtok_r(buf, "/", &save); c && cur >= 0; c = strtok_r(NULL, "/", &save)) {
        bool made = mkdirat(cur, c, 0755) == 0;
        int next = made || errno == EEXIST ? beneath_open(cur, c, O_RDONLY | O_DIRECTORY, 0, 0)
                                           : -1;
        int err = errno;
        if (next >= 0 && made && (fchown(next, (uid_t)uid, (gid_t)uid) < 0 ||
                                  fchmod(next, 0755) < 0)) {
            err = errno;
            close(next);
            next = -1;
        }
        close(cur);
        cur = next;
        if (cur < 0)
            return err_set(e, err == ELOOP || err == ENOTDIR ? ERR_INPUT : ERR_INTERNAL,
                           "the mountpoint: '%s' %s", c,
                           err == ELOOP     ? "is a symbolic link"
                           : err == ENOTDIR ? "is not a directory"
                                            : strerror(err));
    }
    return cur;
}

/* The container's home as the container sees it (from its root). */
static int home_inside(const ns_job_t *j, err_t *e)
{
    char path[64];
    snprintf(path, sizeof path, HOME_INSIDE, j->uid);
    int fd = beneath_open(j->root, path, O_PATH | O_DIRECTORY, 0, BENEATH_IN_ROOT);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "the container's home %s: %s", path, strerror(errno));
    return fd;
}

/* The mount point of mount id in the open mountinfo mi (relative to the
 * init's root, octal escapes undone) into out; 0, -1 when it is not
 * there (or, rdev not 0, is another device's: ids are reused once freed),
 * -2 when mountinfo cannot be read. */
static int mountinfo_path(int mi, unsigned long long id, dev_t rdev, char *out, size_t len)
{
    int fd = fcntl(mi, F_DUPFD_CLOEXEC, 0);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
    if (!f) {
        if (fd >= 0)
            close(fd);
        return -2;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = -1;
    while (rc < 0 && getline(&line, &cap, f) > 0) {
        unsigned long long mid;
        unsigned maj, min;
        char mp[4096];
        if (sscanf(line, "%llu %*u %u:%u %*s %4095s", &mid, &maj, &min, mp) != 4 || mid != id ||
            (rdev && (maj != (unsigned)major(rdev) || min != (unsigned)minor(rdev))))
            continue;
        str_unescape_octal(mp);
        snprintf(out, len, "%s", mp);
        rc = 0;
    }
    free(line);
    fclose(f);
    return rc;
}

/* A descriptor of the root of mount id at path (from the container's
 * root), or -1 when what is there is not that mount on that device (mount
 * ids are reused once freed). */
static int open_mount(const ns_job_t *j, const char *path)
{
    int fd = beneath_open(j->root, path, O_PATH | O_DIRECTORY, 0, BENEATH_IN_ROOT);
    struct statx sx;
    if (fd >= 0 && (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) < 0 ||
                    !(sx.stx_mask & STATX_MNT_ID) || sx.stx_mnt_id != j->mnt_id ||
                    !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ||
                    sx.stx_dev_major != major(j->rdev) || sx.stx_dev_minor != minor(j->rdev))) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* umount2(MNT_DETACH) the mount whose root fd is, through the host's
 * /proc/self/fd/<fd> (our cwd): never a path the customer could swap. */
static int detach_fd(const ns_job_t *j, int fd)
{
    char name[16];
    snprintf(name, sizeof name, "%d", fd);
    return fchdir(j->host_fds) < 0 || umount2(name, MNT_DETACH) < 0 ? -1 : 0;
}

static void ns_attach(ns_job_t *j)
{
    int home = home_inside(j, &j->e);
    if (home < 0)
        return;
    int target = mkdir_p(home, j->mountpoint, j->uid, &j->e);
    close(home);
    if (target < 0)
        return;
    struct statx sx;
    if (statx(target, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) < 0) {
        err_set(&j->e, ERR_INTERNAL, "the mountpoint: %s", strerror(errno));
    } else if (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) {
        err_set(&j->e, ERR_INPUT, "something is mounted on the mountpoint already");
    } else if (move_mount(j->mnt, "", target, "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
        err_set(&j->e, ERR_INTERNAL, "attach it on the mountpoint: %s", strerror(errno));
    } else {
        /* A directory of the path renamed between mkdir_p and the attach
         * would put the mount elsewhere (a reserved directory): the
         * expected path must lead to it. */
        char path[4200];
        snprintf(path, sizeof path, HOME_INSIDE "/%s", j->uid, j->mountpoint);
        int again = open_mount(j, path);
        if (again >= 0) {
            close(again);
            j->rc = 0;
        } else {
            if (detach_fd(j, j->mnt) < 0)
                err_set(&j->e, ERR_INTERNAL,
                        "the mountpoint moved while it was being mounted, and the mount "
                        "could not be detached: %s",
                        strerror(errno));
            else
                err_set(&j->e, ERR_CONFLICT, "the mountpoint moved while it was being mounted");
        }
    }
    close(target);
}

static void ns_detach(ns_job_t *j)
{
    char path[4200], where[4096];
    snprintf(path, sizeof path, HOME_INSIDE "/%s", j->uid, j->mountpoint);
    int fd = open_mount(j, path);
    if (fd < 0) { /* moved (a parent renamed): where mountinfo says it is */
        int found = mountinfo_path(j->mountinfo, j->mnt_id, j->rdev, where, sizeof where);
        if (found == -2) {
            err_set(&j->e, ERR_INTERNAL, "read the container's mountinfo: %s",
                    strerror(errno));
            return;
        }
        if (found < 0) {
            j->rc = 0; /* gone already */
            return;
        }
        fd = open_mount(j, where);
    }
    if (fd < 0) {
        err_set(&j->e, ERR_INTERNAL, "mount %llu is in the container but cannot be reached",
                j->mnt_id);
        return;
    }
    if (detach_fd(j, fd) < 0)
        err_set(&j->e, ERR_INTERNAL, "unmount mount %llu: %s", j->mnt_id, strerror(errno));
    else
        j->rc = 1;
    close(fd);
}

static void *ns_thread(void *arg)
{
    ns_job_t *j = arg;
    if (unshare(CLONE_FS) < 0 || setns(j->pidfd, CLONE_NEWNS) < 0) {
        err_set(&j->e, ERR_INTERNAL, "enter the container's mount namespace: %s",
                strerror(errno));
        return NULL;
    }
    if (j->mnt >= 0)
        ns_attach(j);
    else
        ns_detach(j);
    return NULL;
}

/* A pidfd of the container's init, once its start time is checked: a pid
 * reused by another process (the container stopped meanwhile) is never
 * entered; -1 with e set. */
static int init_pin(const loopbox_init_t *init, err_t *e)
{
    int pidfd = pidfd_open(init->pid, 0);
    unsigned long long start = 0;
    if (pidfd < 0 || proc_stat(init->pid, &start, NULL) < 0 || start != init->starttime) {
        if (pidfd >= 0)
            close(pidfd);
        return err_set(e, ERR_NOTFOUND, "the container's init is gone");
    }
    return pidfd;
}

/* After /proc/<pid>/ files were opened: the pinned process is still
 * there, so they were its (its pid was not freed and reused meanwhile). */
static int init_still(int pidfd, err_t *e)
{
    if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
        return err_set(e, ERR_NOTFOUND, "the container's init is gone");
    return 0;
}

/* /proc/<pid>/name of the pinned init (the host's /proc). */
static int open_init_file(const loopbox_init_t *init, const char *name, int flags)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)init->pid, name);
    return open(p, flags | O_CLOEXEC);
}

/* Open what the thread needs from the host's /proc, run it, close them. */
static int ns_run(ns_job_t *j, err_t *e)
{
    j->rc = -1;
    err_clear(&j->e);
    j->root = j->mountinfo = j->host_fds = -1;
    if ((j->pidfd = init_pin(j->init, e)) < 0)
        return -1;
    j->root = open_init_file(j->init, "root", O_PATH | O_DIRECTORY);
    j->mountinfo = open_init_file(j->init, "mountinfo", O_RDONLY);
    int err = errno;
    j->host_fds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    pthread_t t;
    int rc = 0;
    if (init_still(j->pidfd, e) < 0)
        rc = -1;
    else if (j->root < 0 || j->mountinfo < 0 || j->host_fds < 0)
        rc = err_set(e, ERR_INTERNAL, "the container's init (%d): %s", (int)j->init->pid,
                     strerror(j->host_fds < 0 ? errno : err));
    else if ((errno = pthread_create(&t, NULL, ns_thread, j)) != 0 || pthread_join(t, NULL) != 0)
        rc = err_set(e, ERR_INTERNAL, "start a thread: %s", strerror(errno));
    else if (j->rc < 0)
        rc = err_set(e, j->e.kind, "%s", j->e.msg);
    int fds[] = {j->pidfd, j->root, j->mountinfo, j->host_fds};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc < 0 ? -1 : j->rc;
}

/* Refused while a device labelled for this loopbox still exists (an old
 * mount a process keeps, lazily detached), or uid has max_devices. */
static int devices_check(int uid, const char *label, int max_devices, err_t *e)
{
    char held[64];
    if (loopdev_count_labelled(label, false, held, sizeof held) > 0)
        return err_set(e, ERR_CONFLICT, "still held by %s: a process keeps the old mount busy",
                       held);
    int n = max_devices > 0 ? loopbox_devices_of(uid) : 0;
    if (max_devices > 0 && n >= max_devices)
        return err_set(e, ERR_CONFLICT,
                       "the container has %d loopbox devices, the node's limit (loopbox_max)", n);
    return 0;
}

int loopbox_mount(const loopbox_init_t *init, int uid, long long id, int img,
                  const struct stat *sb, const char *mountpoint, bool ro, int max_devices,
                  loopbox_mnt_t *out, err_t *e)
{
    if (check_path("mountpoint", mountpoint, e) < 0)
        return -1;
    char dev[32], label[64];
    if (loopdev_find(sb->st_dev, sb->st_ino, dev, sizeof dev) == 0)
        return err_set(e, ERR_CONFLICT,
                       "the image is still in use (%s backs it: an earlier mount a process "
                       "keeps busy)",
                       dev);
    snprintf(label, sizeof label, LOOPBOX_NAME_FMT, uid, id);
    if (devices_check(uid, label, max_devices, e) < 0)
        return -1;
    int loop = loopdev_attach(img, label, ro, dev, sizeof dev, e);
    if (loop < 0)
        return -1;
    int mnt = make_mount(dev, ro, e);
    close(loop); /* autoclear: the superblock holds the device now, or nothing does */
    if (mnt < 0)
        return -1;
    struct statx sx;
    if (!ro && fix_owners(mnt, uid, e) < 0) {
        close(mnt);
        return -1;
    }
    if (statx(mnt, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) < 0 || !(sx.stx_mask & STATX_MNT_ID)) {
        err_set(e, ERR_INTERNAL, "the new mount's id: %s", strerror(errno));
        close(mnt);
        return -1;
    }
    ns_job_t j = {.init = init, .uid = uid, .mountpoint = mountpoint, .mnt = mnt,
                  .mnt_id = sx.stx_mnt_id, .rdev = makedev(sx.stx_dev_major, sx.stx_dev_minor)};
    int rc = ns_run(&j, e);
    close(mnt); /* attached: the namespace holds it; not: it goes, and the device */
    if (rc < 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->mnt_id = sx.stx_mnt_id;
    snprintf(out->dev, sizeof out->dev, "%s", dev);
    out->img_dev = sb->st_dev;
    out->img_ino = sb->st_ino;
    out->img_size = (long long)sb->st_size;
    return 0;
}

/* The loop device's number of m, 0 when it is no block device any more. */
static dev_t device_of(const loopbox_mnt_t *m)
{
    struct stat sb;
    return stat(m->dev, &sb) == 0 && S_ISBLK(sb.st_mode) ? sb.st_rdev : 0;
}

int loopbox_unmount(const loopbox_init_t *init, int uid, const char *mountpoint,
                    const loopbox_mnt_t *m, err_t *e)
{
    if (check_path("mountpoint", mountpoint, e) < 0)
        return -1;
    dev_t rdev = device_of(m);
    if (rdev == 0)
        return 0; /* the device is gone: so is the mount (a busy one is never removed) */
    ns_job_t j = {.init = init, .uid = uid, .mountpoint = mountpoint, .mnt = -1,
                  .mnt_id = m->mnt_id, .rdev = rdev};
    return ns_run(&j, e);
}

int loopbox_present(const loopbox_init_t *init, const loopbox_mnt_t *m)
{
    char where[4096];
    dev_t rdev = device_of(m);
    if (rdev == 0)
        return 0; /* the device is gone: so is the mount */
    err_t e;
    int pidfd = init_pin(init, &e);
    if (pidfd < 0)
        return -1;
    int mi = open_init_file(init, "mountinfo", O_RDONLY);
    int rc = mi < 0 || init_still(pidfd, &e) < 0 ? -2
                                                 : mountinfo_path(mi, m->mnt_id, rdev, where,
                                                                  sizeof where);
    if (mi >= 0)
        close(mi);
    close(pidfd);
    return rc == -2 ? -1 : rc == 0 ? 1 : 0;
}

int loopbox_devices_of(int uid)
{
    /* LOOPBOX_NAME_FMT up to its id: "imperium-loopbox:<uid>:" */
    char prefix[64];
    snprintf(prefix, sizeof prefix, LOOPBOX_NAME_FMT, uid, 0LL);
    char *colon = strrchr(prefix, ':');
    if (colon)
        colon[1] = '\0';
    return loopdev_count_labelled(prefix, true, NULL, 0);
}
