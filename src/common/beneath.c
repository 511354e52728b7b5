/* beneath.c - symlink-proof paths below a directory descriptor (beneath.h). */
#include "beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int beneath_open(int dirfd, const char *path, int flags, mode_t mode, int how)
{
    struct open_how oh;
    memset(&oh, 0, sizeof oh);
    oh.flags = (uint64_t)(flags | O_CLOEXEC);
    if (flags & (O_CREAT | O_TMPFILE))
        oh.mode = mode;
    oh.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
                 (how == BENEATH_IN_ROOT ? RESOLVE_IN_ROOT : RESOLVE_BENEATH);
    return (int)syscall(SYS_openat2, dirfd, path, &oh, sizeof oh);
}

int beneath_parent(int dirfd, const char *path, const char **last, int how)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *last = path;
        return beneath_open(dirfd, ".", O_PATH | O_DIRECTORY, 0, how);
    }
    char parent[4096];
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof parent || !slash[1]) {
        errno = n >= sizeof parent ? ENAMETOOLONG : EINVAL;
        return -1;
    }
    memcpy(parent, path, n);
    parent[n] = '\0';
    *last = slash + 1;
    return beneath_open(dirfd, parent, O_PATH | O_DIRECTORY, 0, how);
}

int beneath_mkdir(int dirfd, const char *path, mode_t mode, bool force, uid_t uid, gid_t gid,
                  int how)
{
    const char *name;
    int parent = beneath_parent(dirfd, path, &name, how);
    if (parent < 0)
        return -1;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        close(parent);
        errno = EINVAL;
        return -1;
    }
    bool created = mkdirat(parent, name, mode) == 0;
    if (!created && errno != EEXIST) {
        int err = errno;
        close(parent);
        errno = err;
        return -1;
    }
    /* Whatever is there now: a symlink or a file swapped in fails here. */
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(parent);
    if (fd < 0) {
        errno = err;
        return -1;
    }
    if (((created || force) && fchmod(fd, mode) < 0) ||
        (uid != (uid_t)-1 && fchown(fd, uid, gid) < 0)) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}
