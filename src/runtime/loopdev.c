/* loopdev.c - loop block devices (loopdev.h): attach, find, name, label. */
#include "loopdev.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define LOOP_MAJOR_NR 7

int loopdev_attach(int img, const char *name, bool ro, char *dev, size_t len, err_t *e)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return err_set(e, ERR_INTERNAL, "open /dev/loop-control: %s", strerror(errno));
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (unsigned)img;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO | (ro ? LO_FLAGS_READ_ONLY : 0);
    snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", name);
    int err = 0;
    for (int tries = 0; tries < 16; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            err = errno;
            break;
        }
        snprintf(dev, len, "/dev/loop%d", n);
        int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
            break;
        }
        int rc = ioctl(fd, LOOP_CONFIGURE, &cfg);
        if (rc < 0 && errno == EINVAL && (cfg.info.lo_flags & LO_FLAGS_DIRECT_IO)) {
            /* Direct I/O refused by the image's filesystem: buffered then. */
            cfg.info.lo_flags &= ~(unsigned)LO_FLAGS_DIRECT_IO;
            rc = ioctl(fd, LOOP_CONFIGURE, &cfg);
        }
        if (rc == 0) {
            close(ctl);
            return fd;
        }
        err = errno;
        close(fd);
        if (err != EBUSY) /* EBUSY: another process took it; ask again */
            break;
    }
    close(ctl);
    return err_set(e, ERR_INTERNAL, "attach a loop device to the image of %s: %s", name,
                   strerror(err ? err : EBUSY));
}

int loopdev_name(int minor, char *dev, size_t size)
{
    char link[64], target[256];
    snprintf(link, sizeof link, "/sys/dev/block/%d:%d", LOOP_MAJOR_NR, minor);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0)
        return -1;
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    if (snprintf(dev, size, "%s", base) >= (int)size)
        return -1;
    return 0;
}

static int status_of(const char *dev, struct loop_info64 *info)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    int rc = ioctl(fd, LOOP_GET_STATUS64, info);
    close(fd);
    return rc;
}

/* lo_device is the kernel's "huge" encoding of the backing file's st_dev
 * (new_encode_dev), not glibc's dev_t layout: compare major and minor. */
static bool same_dev(unsigned long long lo, dev_t d)
{
    unsigned maj = (unsigned)((lo & 0xfff00ULL) >> 8);
    unsigned min = (unsigned)((lo & 0xffULL) | ((lo >> 12) & 0xfff00ULL));
    return maj == major(d) && min == minor(d);
}

typedef bool (*loop_match_t)(const struct loop_info64 *info, const void *arg);

/* The one walk of /sys/block: how many configured loop devices match, the
 * first one's path in first (when not NULL); stops at the first when
 * only_first. */
static int each_loop(loop_match_t match, const void *arg, bool only_first, char *first,
                     size_t len)
{
    DIR *d = opendir("/sys/block");
    if (!d)
        return 0;
    int count = 0;
    struct dirent *de;
    while (!(only_first && count) && (de = readdir(d))) {
        if (strncmp(de->d_name, "loop", 4) != 0)
            continue;
        char path[300];
        struct loop_info64 info;
        snprintf(path, sizeof path, "/dev/%s", de->d_name);
        if (status_of(path, &info) < 0 || !match(&info, arg)) /* ENXIO: not configured */
            continue;
        if (count++ == 0 && first)
            snprintf(first, len, "%s", path);
    }
    closedir(d);
    return count;
}

typedef struct {
    dev_t dev;
    ino_t ino;
} backing_t;

/* ino 0 matches any file of the filesystem dev. */
static bool backed_by(const struct loop_info64 *info, const void *arg)
{
    const backing_t *b = arg;
    return (b->ino == 0 || info->lo_inode == (unsigned long long)b->ino) &&
           same_dev(info->lo_device, b->dev);
}

/* The first configured loop device whose backing file matches: 0 and its
 * path in dev, -1 when none does. */
static int find_backed(dev_t file_dev, ino_t file_ino, char *dev, size_t len)
{
    backing_t b = {file_dev, file_ino};
    return each_loop(backed_by, &b, true, dev, len) > 0 ? 0 : -1;
}

typedef struct {
    const char *label;
    bool prefix;
} labelled_t;

static bool labelled(const struct loop_info64 *info, const void *arg)
{
    const labelled_t *l = arg;
    char name[LO_NAME_SIZE + 1];
    snprintf(name, sizeof name, "%.*s", LO_NAME_SIZE, (const char *)info->lo_file_name);
    return l->prefix ? strncmp(name, l->label, strlen(l->label)) == 0
                     : strcmp(name, l->label) == 0;
}

int loopdev_count_labelled(const char *label, bool prefix, char *first, size_t len)
{
    labelled_t l = {label, prefix};
    return each_loop(labelled, &l, false, first, len);
}

int loopdev_find(dev_t file_dev, ino_t file_ino, char *dev, size_t len)
{
    return file_ino == 0 ? -1 : find_backed(file_dev, file_ino, dev, len);
}

bool loopdev_backs_fs(dev_t fs_dev)
{
    char dev[300];
    return find_backed(fs_dev, 0, dev, sizeof dev) == 0;
}

int loopdev_label(const char *dev, char *name, size_t len)
{
    struct loop_info64 info;
    if (status_of(dev, &info) < 0)
        return -1;
    snprintf(name, len, "%.*s", LO_NAME_SIZE, (const char *)info.lo_file_name);
    return 0;
}
