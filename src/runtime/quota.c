/* quota.c - a container's disk quota (quota.h; docs/NODE.md, "Disk quota").
 *
 * The loop backend: the home is an ext4 image of `storage` MB, attached to
 * a loop device that frees itself when its mount goes (LO_FLAGS_AUTOCLEAR)
 * and mounted nosuid,nodev,noatime on <containers_dir>/<uid> in the host's
 * mount namespace (sshd and the node use the host path; the container gets
 * a clone of the mount, mounts.c).  Every path below containers_dir is the
 * node's own (root-owned) down to the home itself, which is a mountpoint:
 * the customer can write into it but cannot replace it. */
#include "quota.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/quota.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/clock.h"
#include "home.h"
#include "loopdev.h"

#define LOOP_MAJOR_NR 7
#define LOOP_NAME_FMT "imperium-home:%d"
#define MB (1024LL * 1024LL)
#define TOOL_ERR_MAX 400
/* How long a busy containers directory is tried again at teardown: seen
 * busy for more than 3 s after the last container stopped on a loaded
 * 2-core machine, free a few seconds later with nothing else done. */
#define QUOTA_TEARDOWN_BUSY_MS 10000

int quota_kind_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "loop") == 0)
        return QUOTA_LOOP;
    if (strcmp(s, "project") == 0)
        return QUOTA_PROJECT;
    if (strcmp(s, "off") == 0)
        return QUOTA_OFF;
    return -1;
}

const char *quota_kind_name(quota_kind_t k)
{
    switch (k) {
    case QUOTA_LOOP:
        return "loop";
    case QUOTA_PROJECT:
        return "project";
    case QUOTA_OFF:
        return "off";
    }
    return "?";
}

/* ---- the tools: mkfs.ext4, e2fsck, resize2fs ------------------------------ */

/* Run argv (an absolute path) with stdin and stdout on /dev/null, its
 * stderr kept in err; the exit status, or -1 when it could not run. */
static int run_tool(char *const argv[], char *err, size_t len)
{
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
    int pfd[2];
    err[0] = '\0';
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        snprintf(err, len, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc == 0 && !(rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
        !(rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, pfd[1], 2)))
        rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        snprintf(err, len, "cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    size_t used = 0;
    char sink[256];
    for (;;) { /* to EOF, keeping the first len - 1 bytes */
        char *to = used < len - 1 ? err + used : sink;
        size_t room = used < len - 1 ? len - 1 - used : sizeof sink;
        ssize_t n = read(pfd[0], to, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (to == err + used)
            used += (size_t)n;
    }
    err[used] = '\0';
    err[strcspn(err, "\n")] = '\0'; /* the first line says what went wrong */
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int tool_failed(err_t *e, const char *what, const char *path, int rc, const char *msg)
{
    return err_set(e, ERR_INTERNAL, "%s %s: %s (exit %d)", what, path,
                   msg[0] ? msg : "no message", rc);
}

/* ---- where things are ------------------------------------------------------ */

typedef struct {
    const char *dir; /* containers_dir */
    int uid;
    int cd;                   /* containers_dir, O_DIRECTORY */
    int images;               /* .images, O_DIRECTORY (-1: not opened) */
    char name[16];            /* "<uid>": the home, in cd */
    char image_name[32];      /* "<uid>.ext4", in images */
    char image[4096];         /* its full path, for the tools */
} where_t;

static void where_close(where_t *w)
{
    if (w->cd >= 0)
        close(w->cd);
    if (w->images >= 0)
        close(w->images);
    w->cd = w->images = -1;
}

enum { NO_IMAGES, IMAGES_IF_ANY, IMAGES_CREATE };

/* Open containers_dir (and .images: if it exists, or created root-only). */
static int where_open(where_t *w, const char *dir, int uid, int images, err_t *e)
{
    memset(w, 0, sizeof *w);
    w->dir = dir;
    w->uid = uid;
    w->images = -1;
    snprintf(w->name, sizeof w->name, "%d", uid);
    snprintf(w->image_name, sizeof w->image_name, "%d.ext4", uid);
    if (snprintf(w->image, sizeof w->image, "%s/%s/%s", dir, QUOTA_IMAGES_DIR, w->image_name) >=
        (int)sizeof w->image)
        return err_set(e, ERR_INPUT, "containers directory path too long: %s", dir);
    w->cd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->cd < 0)
        return err_set(e, ERR_INTERNAL, "containers directory %s: %s", dir, strerror(errno));
    if (images == NO_IMAGES)
        return 0;
    if (images == IMAGES_IF_ANY)
        w->images = openat(w->cd, QUOTA_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                        O_CLOEXEC);
    else
        w->images = beneath_mkdir(w->cd, QUOTA_IMAGES_DIR, 0700, true, 0, 0, 0);
    if (w->images < 0 && images == IMAGES_IF_ANY && errno == ENOENT)
        return 0;
    if (w->images < 0) {
        int err = errno;
        where_close(w);
        return err_set(e, ERR_INTERNAL, "%s/%s: %s", dir, QUOTA_IMAGES_DIR, strerror(err));
    }
    return 0;
}

/* ---- the home's mount ------------------------------------------------------ */

/* The loop device number of the mount on dir/name, or -1 when that is no
 * loop mount's root (not mounted, or something else is). */
static int loop_minor_at(int dir, const char *name)
{
    struct statx sx;
    if (statx(dir, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) < 0 ||
        !(sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) ||
        !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) || sx.stx_dev_major != LOOP_MAJOR_NR)
        return -1;
    return (int)sx.stx_dev_minor;
}

/* Is the mount on the home ours: a loop device named after this uid? */
static bool home_is_ours(const where_t *w)
{
    int minor = loop_minor_at(w->cd, w->name);
    char name[64], path[80];
    if (minor < 0 || loopdev_name(minor, name, sizeof name) < 0)
        return false;
    snprintf(path, sizeof path, "/dev/%s", name);
    char label[64], want[64];
    snprintf(want, sizeof want, LOOP_NAME_FMT, w->uid);
    return loopdev_label(path, label, sizeof label) == 0 && strcmp(label, want) == 0;
}

int quota_loop_device(const char *containers_dir, int uid, char *dev, size_t size)
{
    char home[4096];
    if (snprintf(home, sizeof home, "%s/%d", containers_dir, uid) >= (int)sizeof home)
        return -1;
    int minor = loop_minor_at(AT_FDCWD, home);
    return minor < 0 ? -1 : loopdev_name(minor, dev, size);
}

/* Mount dev on target (by descriptor: the mountpoint itself, never a path
 * a customer could redirect), nosuid,nodev,noatime; `where` names the
 * target in errors. */
static int mount_dev(const where_t *w, const char *dev, int target, const char *where,
                     err_t *e)
{
    int fs = fsopen("ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        return err_set(e, ERR_INTERNAL, "mount the home of %d: fsopen: %s", w->uid,
                       strerror(errno));
    int mnt = -1, rc = -1;
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "errors", "remount-ro", 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
        (mnt = fsmount(fs, FSMOUNT_CLOEXEC,
                       MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME)) < 0) {
        err_set(e, ERR_INTERNAL, "mount the home image of %d (%s): %s", w->uid, dev,
                strerror(errno));
        goto out;
    }
    if (move_mount(mnt, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
        err_set(e, ERR_INTERNAL, "mount the home image on %s: %s", where, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (mnt >= 0)
        close(mnt);
    close(fs);
    return rc;
}

/* Mount the home image on the home itself. */
static int mount_dev_home(const where_t *w, const char *dev, err_t *e)
{
    char where[4200];
    snprintf(where, sizeof where, "%s/%s", w->dir, w->name);
    int home = openat(w->cd, w->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (home < 0)
        return err_set(e, ERR_INTERNAL, "mount the home image on %s: %s", where,
                       strerror(errno));
    int rc = mount_dev(w, dev, home, where, e);
    close(home);
    return rc;
}

/* The fs root belongs to the container, 0700 (mkfs -d leaves it root's). */
static int fix_root(const where_t *w, err_t *e)
{
    int fd = openat(w->cd, w->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fchown(fd, (uid_t)w->uid, (gid_t)w->uid) < 0 || fchmod(fd, 0700) < 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL, "home %s/%s: set owner: %s", w->dir, w->name,
                       strerror(err));
    }
    close(fd);
    return 0;
}

/* The loop device of the image, in dev: the one already backing it if any
 * (a mount of it can outlive the home's: a container booted from a custom
 * distro in this home keeps a clone of it, and a second device on the same
 * file would be two filesystems writing one image; mounting the same
 * device again shares its superblock), else a new one whose descriptor is
 * *loop (close it once mounted: autoclear).  1 when there is no image. */
static int image_device(const where_t *w, char *dev, size_t len, int *loop, err_t *e)
{
    *loop = -1;
    int img = w->images < 0 ? -1
                            : openat(w->images, w->image_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (img < 0 && (w->images < 0 || errno == ENOENT))
        return 1;
    struct stat sb;
    if (img < 0 || fstat(img, &sb) < 0) {
        int err = errno;
        if (img >= 0)
            close(img);
        return err_set(e, ERR_INTERNAL, "open %s: %s", w->image, strerror(err));
    }
    int rc = 0;
    if (loopdev_find(sb.st_dev, sb.st_ino, dev, len) < 0) {
        char label[64];
        snprintf(label, sizeof label, LOOP_NAME_FMT, w->uid);
        *loop = loopdev_attach(img, label, false, dev, len, e);
        rc = *loop < 0 ? -1 : 0;
    }
    close(img);
    return rc;
}

/* Is a loop device backing the image now? */
static bool image_attached(const where_t *w)
{
    struct stat sb;
    char dev[64];
    return fstatat(w->images, w->image_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
           loopdev_find(sb.st_dev, sb.st_ino, dev, sizeof dev) == 0;
}

static int mount_image(const where_t *w, err_t *e)
{
    char dev[64];
    int loop;
    int rc = image_device(w, dev, sizeof dev, &loop, e);
    if (rc == 1)
        return err_set(e, ERR_INTERNAL, "open %s: %s", w->image, strerror(ENOENT));
    if (rc < 0)
        return -1;
    rc = mount_dev_home(w, dev, e);
    if (loop >= 0)
        close(loop); /* autoclear: the mount holds the device now, or nothing does */
    return rc < 0 ? -1 : fix_root(w, e);
}

int quota_mount_home_at(const char *containers_dir, int uid, int target, err_t *e)
{
    where_t w;
    if (where_open(&w, containers_dir, uid, IMAGES_IF_ANY, e) < 0)
        return -1;
    char dev[64], where[64];
    int loop;
    int rc = image_device(&w, dev, sizeof dev, &loop, e);
    if (rc == 0) {
        snprintf(where, sizeof where, "a staging directory for %d", uid);
        rc = mount_dev(&w, dev, target, where, e) < 0 ? -1 : 1;
    } else if (rc == 1) {
        rc = 0; /* a plain home */
    }
    if (loop >= 0)
        close(loop);
    where_close(&w);
    return rc;
}

/* After a container stopped, the loop devices of its loopboxes (images in
 * the home) free themselves once the kernel has torn its mount namespace
 * down, which it does a moment later: until then the home is busy. */
#define LOOPBOX_RELEASE_WAIT_MS 3000

static bool loopboxes_releasing(const where_t *w)
{
    struct stat sb;
    return fstatat(w->cd, w->name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && loopdev_backs_fs(sb.st_dev);
}

static int unmount_home(const where_t *w, err_t *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", w->dir, w->name);
    /* No MNT_DETACH: a lazily detached image would stay busy unseen. */
    long long until = now_ms() + LOOPBOX_RELEASE_WAIT_MS;
    int err;
    for (;;) {
        if (umount2(path, UMOUNT_NOFOLLOW) == 0)
            return 0;
        err = errno;
        if (err != EBUSY || now_ms() >= until || !loopboxes_releasing(w))
            break;
        sleep_ms(50);
    }
    return err_set(e, err == EBUSY ? ERR_CONFLICT : ERR_INTERNAL, "unmount the home %s: %s%s",
                   path, strerror(err),
                   err == EBUSY ? " (a process on the host uses it; retried at the next stop "
                                  "or start)"
                                : "");
}

/* ---- the image: create, convert, grow -------------------------------------- */

/* Make <images>/<uid>.ext4 of mb MB (a copy of the tree `from` when not
 * NULL) through a temporary name: a half-made image is never used. */
static int create_image(const where_t *w, long long mb, const char *from, err_t *e)
{
    char tmp[48], tmp_path[4200], owner[40], msg[TOOL_ERR_MAX];
    snprintf(tmp, sizeof tmp, ".%s.tmp", w->image_name);
    snprintf(tmp_path, sizeof tmp_path, "%s/%s/%s", w->dir, QUOTA_IMAGES_DIR, tmp);
    if (unlinkat(w->images, tmp, 0) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove %s: %s", tmp_path, strerror(errno));
    int fd = openat(w->images, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "create %s: %s", tmp_path, strerror(errno));
    int rc = ftruncate(fd, mb * MB); /* sparse: costs what is written */
    int err = errno;
    close(fd);
    if (rc < 0) {
        unlinkat(w->images, tmp, 0);
        return err_set(e, ERR_INTERNAL, "size %s to %lld MB: %s", tmp_path, mb, strerror(err));
    }
    snprintf(owner, sizeof owner, "root_owner=%d:%d", w->uid, w->uid);
    /* -m 0: no blocks reserved for root; -b 4096 even below 512 MB. */
    char *argv[] = {QUOTA_MKFS, "-q", "-F", "-m", "0", "-b", "4096", "-E", owner,
                    NULL, NULL, NULL, NULL};
    int a = 9;
    if (from) {
        argv[a++] = "-d";
        argv[a++] = (char *)from;
    }
    argv[a] = tmp_path;
    rc = run_tool(argv, msg, sizeof msg);
    if (rc != 0) {
        unlinkat(w->images, tmp, 0);
        return tool_failed(e, from ? "copy the home into" : "make the filesystem of",
                           w->image, rc, msg);
    }
    if (renameat(w->images, tmp, w->images, w->image_name) < 0) {
        err = errno;
        unlinkat(w->images, tmp, 0);
        return err_set(e, ERR_INTERNAL, "rename %s: %s", tmp_path, strerror(err));
    }
    return 0;
}

/* Offline grow (the container is stopped; online resize2fs would need
 * CAP_SYS_RESOURCE): longer file, fsck (resize2fs insists), resize2fs. */
static int grow_image(const where_t *w, long long mb, err_t *e)
{
    int fd = openat(w->images, w->image_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", w->image, strerror(errno));
    int rc = ftruncate(fd, mb * MB);
    int err = errno;
    close(fd);
    if (rc < 0)
        return err_set(e, ERR_INTERNAL, "grow %s to %lld MB: %s", w->image, mb, strerror(err));
    char msg[TOOL_ERR_MAX];
    char *fsck[] = {QUOTA_E2FSCK, "-f", "-p", (char *)w->image, NULL};
    rc = run_tool(fsck, msg, sizeof msg);
    if (rc > 1) /* 1: errors corrected */
        return tool_failed(e, "check", w->image, rc, msg);
    char *resize[] = {QUOTA_RESIZE2FS, (char *)w->image, NULL};
    rc = run_tool(resize, msg, sizeof msg);
    return rc == 0 ? 0 : tool_failed(e, "grow the filesystem of", w->image, rc, msg);
}

static long long tree_bytes;

static int add_size(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path, (void)flag, (void)ftw;
    tree_bytes += (long long)sb->st_blocks * 512 + 4096; /* + an inode's worth */
    return 0;
}

/* MB a copy of the home needs: what it uses (holes stay holes) plus room
 * for the journal and metadata.  Called from the node's one thread. */
static long long tree_mb(const char *path)
{
    tree_bytes = 0;
    if (nftw(path, add_size, 16, FTW_PHYS | FTW_MOUNT) < 0)
        return -1;
    return tree_bytes * 12 / 10 / MB + 16;
}

/* 1: a directory with entries; 0: empty or missing; -1 error. */
static int home_has_files(const where_t *w, err_t *e)
{
    int fd = openat(w->cd, w->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_set(e, ERR_INTERNAL, "home %s/%s: %s", w->dir,
                                             w->name, strerror(errno));
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return err_set(e, ERR_INTERNAL, "read home %s/%s: %s", w->dir, w->name,
                       strerror(errno));
    }
    struct dirent *de;
    int any = 0;
    while (!any && (de = readdir(d)))
        any = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return any;
}

/* The old tree of a converted home goes where retired homes go,
 * .deleted/<uid>-<time>.converted (root-only), until purge-deleted. */
static int put_aside(const where_t *w, err_t *e)
{
    int del = beneath_mkdir(w->cd, HOME_DELETED_DIR, 0700, true, 0, 0, 0);
    if (del < 0)
        return err_set(e, ERR_INTERNAL, "%s/%s: %s", w->dir, HOME_DELETED_DIR, strerror(errno));
    char to[64];
    snprintf(to, sizeof to, "%d-%lld.converted", w->uid, (long long)time(NULL));
    int rc = renameat2(w->cd, w->name, del, to, RENAME_NOREPLACE);
    int err = errno;
    close(del);
    if (rc < 0)
        return err_set(e, ERR_INTERNAL, "move the converted home %s/%s to %s/: %s", w->dir,
                       w->name, HOME_DELETED_DIR, strerror(err));
    return 0;
}

/* A home that is a plain tree with files becomes an image holding them. */
static int convert_home(const where_t *w, long long storage_mb, err_t *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", w->dir, w->name);
    long long need = tree_mb(path);
    if (need < 0)
        return err_set(e, ERR_INTERNAL, "measure the home %s: %s", path, strerror(errno));
    /* Never lose data: over quota, the customer sees it (and the alarm). */
    if (create_image(w, need > storage_mb ? need : storage_mb, path, e) < 0)
        return -1;
    if (put_aside(w, e) < 0) {
        unlinkat(w->images, w->image_name, 0);
        return -1;
    }
    return 0;
}

/* The mountpoint: a root-made directory the mount will cover. */
static int make_mountpoint(const where_t *w, err_t *e)
{
    if (mkdirat(w->cd, w->name, 0700) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create home %s/%s: %s", w->dir, w->name,
                       strerror(errno));
    struct stat sb;
    if (fstatat(w->cd, w->name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(sb.st_mode))
        return err_set(e, ERR_INPUT, "home %s/%s is not a directory", w->dir, w->name);
    return 0;
}

static int loop_prepare(const where_t *w, long long storage_mb, bool create, err_t *e)
{
    struct stat sb;
    bool have = fstatat(w->images, w->image_name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
    if (!have && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "%s: %s", w->image, strerror(errno));
    if (have && !S_ISREG(sb.st_mode))
        return err_set(e, ERR_INTERNAL, "%s is not a regular file", w->image);
    if (!have && !create)
        return 0; /* no limit, no image: the plain home of old */
    if (!have) {
        int files = home_has_files(w, e);
        if (files < 0 || (files ? convert_home(w, storage_mb, e)
                                : create_image(w, storage_mb, NULL, e)) < 0)
            return -1;
    } else if (create && sb.st_size < storage_mb * MB) {
        /* Never under a mount that lives on elsewhere: grown next time. */
        if (!image_attached(w) && grow_image(w, storage_mb, e) < 0)
            return -1;
    }
    /* An image larger than storage (a shrink the API let through) stays. */
    return make_mountpoint(w, e) < 0 ? -1 : mount_image(w, e);
}

/* ---- the project backend (kernels with a quota format; untested here) ------ */

#ifndef SYS_quotactl_fd
#define SYS_quotactl_fd 443
#endif

static int quotactl_fd(int fd, int cmd, int id, void *addr)
{
    /* QCMD() shifts an int past its sign bit for Q_GETINFO (0x800005). */
    unsigned qcmd = ((unsigned)cmd << SUBCMDSHIFT) | (PRJQUOTA & SUBCMDMASK);
    return (int)syscall(SYS_quotactl_fd, fd, qcmd, id, addr);
}

static int project_check(const char *dir, err_t *e)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "containers directory %s: %s", dir, strerror(errno));
    struct if_dqinfo info;
    int rc = quotactl_fd(fd, Q_GETINFO, 0, &info);
    int err = errno;
    close(fd);
    if (rc < 0)
        return err_set(e, ERR_INPUT,
                       "quota = project: the kernel keeps no project quotas on the filesystem "
                       "of %s (%s); mount it with prjquota (ext4 -O project,quota or XFS) on a "
                       "kernel with a quota format, or use quota = loop",
                       dir, strerror(err));
    return 0;
}

/* Project id = uid on the home (inherited by what is created in it), and
 * a hard limit of storage MB on that project. */
static int project_prepare(const where_t *w, long long storage_mb, err_t *e)
{
    if (make_mountpoint(w, e) < 0)
        return -1;
    int fd = openat(w->cd, w->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "home %s/%s: %s", w->dir, w->name, strerror(errno));
    struct fsxattr fx;
    int rc = ioctl(fd, FS_IOC_FSGETXATTR, &fx);
    if (rc == 0) {
        fx.fsx_projid = (unsigned)w->uid;
        fx.fsx_xflags |= FS_XFLAG_PROJINHERIT;
        rc = ioctl(fd, FS_IOC_FSSETXATTR, &fx);
    }
    struct if_dqblk q;
    memset(&q, 0, sizeof q);
    q.dqb_bhardlimit = q.dqb_bsoftlimit = (unsigned long long)storage_mb * 1024; /* 1 KB units */
    q.dqb_valid = QIF_BLIMITS;
    if (rc == 0)
        rc = quotactl_fd(w->cd, Q_SETQUOTA, w->uid, &q);
    int err = errno;
    close(fd);
    if (rc < 0)
        return err_set(e, ERR_INTERNAL, "project quota of home %s/%s: %s", w->dir, w->name,
                       strerror(err));
    return 0;
}

static int project_usage(const where_t *w, uint64_t *used, uint64_t *limit, err_t *e)
{
    struct if_dqblk q;
    if (quotactl_fd(w->cd, Q_GETQUOTA, w->uid, &q) < 0)
        return err_set(e, ERR_INTERNAL, "project quota of home %s/%s: %s", w->dir, w->name,
                       strerror(errno));
    *used = q.dqb_curspace;
    *limit = q.dqb_bhardlimit * 1024;
    return 0;
}

/* ---- the interface ---------------------------------------------------------- */

int quota_prepare(quota_kind_t k, const char *containers_dir, int uid, long long storage_mb,
                  err_t *e)
{
    where_t w;
    bool limit = k == QUOTA_LOOP && storage_mb > 0;
    if (where_open(&w, containers_dir, uid,
                   k == QUOTA_PROJECT ? NO_IMAGES : limit ? IMAGES_CREATE : IMAGES_IF_ANY,
                   e) < 0)
        return -1;
    int rc = 0;
    if (k == QUOTA_PROJECT) {
        rc = storage_mb > 0 ? project_prepare(&w, storage_mb, e) : 0;
    } else if (home_is_ours(&w)) {
        /* Left by a run that ended without a stop (a crash): the container
         * is not running, so it can be unmounted for a grow; busy, the
         * home keeps its mount and size until the next start. */
        struct stat sb;
        bool small = limit && w.images >= 0 &&
                     fstatat(w.images, w.image_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                     sb.st_size < storage_mb * MB;
        if (small && unmount_home(&w, NULL) == 0)
            rc = loop_prepare(&w, storage_mb, true, e);
        else
            rc = fix_root(&w, e);
    } else if (w.images >= 0) {
        /* off, or no storage: an image from before is still the home. */
        rc = loop_prepare(&w, storage_mb, limit, e);
    }
    where_close(&w);
    return rc;
}

/* sshd reads a container's keys from the host's home, also while it is
 * stopped (imperium-enter then says "container N is not running" rather
 * than sshd a puzzling "Permission denied"): the keys file of the image is
 * copied under the mountpoint, which becomes the uid's, as the home was
 * before images.  Best effort: nothing else depends on it. */
#define KEYS_DIR ".ssh"
#define KEYS_FILE "uwsgi_authorized_keys"
#define KEYS_MAX (256 * 1024)

static char *read_keys(const where_t *w, size_t *len)
{
    int home = openat(w->cd, w->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int fd = home < 0 ? -1 : beneath_open(home, KEYS_DIR "/" KEYS_FILE, O_RDONLY | O_NOFOLLOW,
                                          0, 0);
    char *buf = fd < 0 ? NULL : malloc(KEYS_MAX);
    ssize_t n = buf ? read(fd, buf, KEYS_MAX) : -1;
    if (home >= 0)
        close(home);
    if (fd >= 0)
        close(fd);
    if (n < 0 || n == KEYS_MAX) {
        free(buf);
        return NULL;
    }
    *len = (size_t)n;
    return buf;
}

static void keep_keys(const where_t *w, const char *keys, size_t len)
{
    int home = openat(w->cd, w->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (home < 0 || fchown(home, (uid_t)w->uid, (gid_t)w->uid) < 0 || fchmod(home, 0700) < 0) {
        if (home >= 0)
            close(home);
        return;
    }
    int ssh = beneath_mkdir(home, KEYS_DIR, 0700, true, (uid_t)w->uid, (gid_t)w->uid, 0);
    close(home);
    if (ssh < 0)
        return;
    const char *tmp = "." KEYS_FILE ".imperium-tmp";
    unlinkat(ssh, tmp, 0);
    int fd = openat(ssh, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, keys, len) == (ssize_t)len &&
              fchown(fd, (uid_t)w->uid, (gid_t)w->uid) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok || renameat(ssh, tmp, ssh, KEYS_FILE) < 0)
        unlinkat(ssh, tmp, 0);
    close(ssh);
}

int quota_release(quota_kind_t k, const char *containers_dir, int uid, err_t *e)
{
    (void)k; /* whatever the setting now, a home we mounted is unmounted */
    where_t w;
    if (where_open(&w, containers_dir, uid, NO_IMAGES, e) < 0)
        return -1;
    int rc = 0;
    if (home_is_ours(&w)) {
        size_t len = 0;
        char *keys = read_keys(&w, &len);
        rc = unmount_home(&w, e) < 0 ? -1 : 1;
        if (rc == 1 && keys)
            keep_keys(&w, keys, len);
        free(keys);
    }
    where_close(&w);
    return rc;
}

int quota_usage(quota_kind_t k, const char *containers_dir, int uid, uint64_t *used,
                uint64_t *limit, err_t *e)
{
    where_t w;
    if (where_open(&w, containers_dir, uid, NO_IMAGES, e) < 0)
        return -1;
    int rc;
    if (k == QUOTA_PROJECT) {
        rc = project_usage(&w, used, limit, e);
    } else {
        struct statfs st;
        int fd = openat(w.cd, w.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        rc = fd < 0 || fstatfs(fd, &st) < 0
                 ? err_set(e, ERR_INTERNAL, "usage of home %s/%s: %s", w.dir, w.name,
                           strerror(errno))
                 : 0;
        if (fd >= 0)
            close(fd);
        if (rc == 0) {
            *used = (uint64_t)(st.f_blocks - st.f_bfree) * (uint64_t)st.f_bsize;
            /* Only an image is a limit; a plain home shares the node's disk. */
            *limit = loop_minor_at(w.cd, w.name) >= 0
                         ? (uint64_t)st.f_blocks * (uint64_t)st.f_bsize
                         : 0;
        }
    }
    where_close(&w);
    return rc;
}

/* ---- the quota command ------------------------------------------------------ */

/* POSIX sh and coreutils' (or busybox's) stat -f: any distro has them. */
static const char quota_sh[] =
    "# The home is a filesystem of its own (an image of `storage` MB), so its\n"
    "# usage is the container's (docs/NODE.md, \"Disk quota\").\n"
    "human= hdr=blocks\n"
    "for a in \"$@\"; do\n"
    "    case $a in\n"
    "    --human-readable*) human=1 hdr=space ;;\n"
    "    --*) ;;\n"
    "    -*s*) human=1 hdr=space ;;\n"
    "    esac\n"
    "done\n"
    "u=$(id -u)\n"
    "if [ \"$limit_mb\" -eq 0 ]; then\n"
    "    echo \"Disk quotas for user $u (uid $u): none\"\n"
    "    exit 0\n"
    "fi\n"
    "set -- $(stat -f -c '%b %f %S %c %d' \"$home\") && [ $# -eq 5 ] || exit 1\n"
    "used_kb=$(( ($1 - $2) * $3 / 1024 ))\n"
    "files=$(( $4 - $5 ))\n"
    "lim_kb=$(( limit_mb * 1024 ))\n"
    "size() {\n"
    "    if [ -z \"$human\" ]; then echo \"$1\"\n"
    "    elif [ \"$1\" -ge 1048576 ]; then echo \"$(( ($1 + 1048575) / 1048576 ))G\"\n"
    "    elif [ \"$1\" -ge 1024 ]; then echo \"$(( ($1 + 1023) / 1024 ))M\"\n"
    "    else echo \"${1}K\"; fi\n"
    "}\n"
    "echo \"Disk quotas for user $u (uid $u): \"\n"
    "f='%15s %7s %7s %7s %7s %7s %7s %7s %7s\\n'\n"
    "printf \"$f\" Filesystem \"$hdr\" quota limit grace files quota limit grace\n"
    "printf \"$f\" \"$home\" \"$(size $used_kb)\" \"$(size $lim_kb)\" \"$(size $lim_kb)\" \"\" \\\n"
    "    \"$files\" 0 0 \"\"\n";

int quota_script(char *buf, size_t len, const char *home, long long limit_mb)
{
    /* The home is a path the node made (/containers/<uid>): no quoting. */
    int n = snprintf(buf, len,
                     "#!/bin/sh\n# quota(1) of this container, written by imperium-node at its "
                     "start\nlimit_mb=%lld\nhome='%s'\n%s",
                     limit_mb > 0 ? limit_mb : 0, home, quota_sh);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

/* ---- containers_dir: a shared mount ----------------------------------------- */

static int mark_path(const char *state_dir, char *out, size_t len, err_t *e)
{
    if (snprintf(out, len, "%s/%s", state_dir, QUOTA_BIND_MARK) >= (int)len)
        return err_set(e, ERR_INPUT, "state directory path too long: %s", state_dir);
    return 0;
}

static int share_dir(const char *dir, const char *state_dir, err_t *e)
{
    char mark[4200];
    struct statx sx;
    if (mark_path(state_dir, mark, sizeof mark, e) < 0)
        return -1;
    if (statx(AT_FDCWD, dir, 0, STATX_BASIC_STATS, &sx) < 0)
        return err_set(e, ERR_INTERNAL, "containers directory %s: %s", dir, strerror(errno));
    if (!(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        /* Recorded first: a crash between the two leaves a mark stop-all
         * handles (a failed umount of a non-mount is harmless). */
        int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return err_set(e, ERR_INTERNAL, "create %s: %s", mark, strerror(errno));
        close(fd);
        if (mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0)
            return err_set(e, ERR_INTERNAL, "bind the containers directory %s on itself: %s",
                           dir, strerror(errno));
    }
    if (mount(NULL, dir, NULL, MS_SHARED, NULL) < 0)
        return err_set(e, ERR_INTERNAL, "make the containers directory %s a shared mount: %s",
                       dir, strerror(errno));
    return 0;
}

int quota_setup(quota_kind_t k, const char *containers_dir, const char *state_dir, err_t *e)
{
    if (k == QUOTA_PROJECT)
        return project_check(containers_dir, e);
    if (k == QUOTA_LOOP)
        return share_dir(containers_dir, state_dir, e);
    return 0;
}

/* Is the link /proc/<pid>/<what> under dir? */
static bool proc_link_under(const char *pid, const char *what, const char *dir, size_t n)
{
    char link[320], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/%s/%s", pid, what);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len < 0)
        return false;
    target[len] = '\0';
    return strncmp(target, dir, n) == 0 && (target[n] == '\0' || target[n] == '/');
}

/* Has process pid a file open under dir? */
static bool proc_fd_under(const char *pid, const char *dir, size_t n)
{
    char path[320];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    DIR *fds = opendir(path);
    if (!fds)
        return false;
    bool found = false;
    struct dirent *d;
    while (!found && (d = readdir(fds))) {
        if (d->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "fd/%s", d->d_name);
        found = proc_link_under(pid, path, dir, n);
    }
    closedir(fds);
    return found;
}

/* For the error of a busy containers directory: "pid (comm), ..." of up to
 * four processes whose working directory or root is in it, or that have a
 * file open there, or "". */
static void busy_holders(const char *dir, char *out, size_t size)
{
    out[0] = '\0';
    DIR *proc = opendir("/proc");
    if (!proc)
        return;
    size_t used = 0, n = strlen(dir);
    int found = 0;
    struct dirent *d;
    while ((d = readdir(proc)) && found < 4) {
        if (d->d_name[0] < '1' || d->d_name[0] > '9' ||
            (!proc_link_under(d->d_name, "cwd", dir, n) &&
             !proc_link_under(d->d_name, "root", dir, n) && !proc_fd_under(d->d_name, dir, n)))
            continue;
        char path[320], comm[32] = "?";
        snprintf(path, sizeof path, "/proc/%s/comm", d->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f))
                comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
        int k = snprintf(out + used, size - used, "%s%s (%s)", found ? ", " : "", d->d_name,
                         comm);
        if (k < 0 || (size_t)k >= size - used)
            break;
        used += (size_t)k;
        found++;
    }
    closedir(proc);
}

/* For the same error: the first mount point below dir in this process's
 * mount table, or "". */
static void mounted_below(const char *dir, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    char line[4608], point[4200];
    size_t n = strlen(dir);
    while (fgets(line, sizeof line, f)) {
        /* id parent major:minor root MOUNT-POINT ... */
        if (sscanf(line, "%*s %*s %*s %*s %4199s", point) == 1 && strncmp(point, dir, n) == 0 &&
            point[n] == '/') {
            size_t len = strlen(point) < size ? strlen(point) : size - 1; /* its start */
            memcpy(out, point, len);
            out[len] = '\0';
            break;
        }
    }
    fclose(f);
}

/* The error of a containers directory still busy after the retries: what
 * holds it, as far as this process can see (a mount below it, a process
 * working there), or that neither is visible (another mount namespace's
 * reference, which the kernel drops later). */
static int busy_error(const char *dir, err_t *e)
{
    char below[512], holders[256];
    mounted_below(dir, below, sizeof below);
    busy_holders(dir, holders, sizeof holders);
    return err_set(e, ERR_INTERNAL,
                   "unmount the containers directory %s: %s (%s%s; %s%s)", dir, strerror(EBUSY),
                   below[0] ? "mounted below it: " : "nothing mounted below it", below,
                   holders[0] ? "working there: " : "no process has a file or directory there",
                   holders);
}

int quota_teardown(const char *containers_dir, const char *state_dir, err_t *e)
{
    char mark[4200];
    if (mark_path(state_dir, mark, sizeof mark, e) < 0)
        return -1;
    if (access(mark, F_OK) < 0)
        return 0; /* not ours (or never made) */
    struct statx sx;
    if (statx(AT_FDCWD, containers_dir, 0, STATX_BASIC_STATS, &sx) == 0 &&
        (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        /* A container that has just stopped can keep the mount busy for a
         * moment: the kernel releases its mount namespace (and what it had
         * propagated here) after its last process is gone.  Tried again,
         * for QUOTA_TEARDOWN_BUSY_MS at most. */
        long long deadline = now_ms() + QUOTA_TEARDOWN_BUSY_MS;
        while (umount2(containers_dir, UMOUNT_NOFOLLOW) < 0) {
            int err = errno;
            if (err == EBUSY && now_ms() >= deadline)
                return busy_error(containers_dir, e);
            if (err != EBUSY)
                return err_set(e, ERR_INTERNAL, "unmount the containers directory %s: %s",
                               containers_dir, strerror(err));
            sleep_ms(50);
        }
    }
    if (unlink(mark) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove %s: %s", mark, strerror(errno));
    return 0;
}
