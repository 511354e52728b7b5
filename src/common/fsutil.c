/* fsutil.c - see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Create the directories along `buf` (modified in place, restored): each
 * parent as 0755, the whole of it too with `mode` when `last` is set. */
static int mkdir_along(char *buf, bool last, mode_t mode, err_t *e)
{
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (end && !last)
            return 0;
        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(buf, end ? mode : 0755) < 0 && errno != EEXIST)
            return err_set(e, ERR_INTERNAL, "create %s: %s", buf, strerror(errno));
        if (end)
            return 0;
        *p = '/';
    }
}

static int copy_path(char *buf, size_t len, const char *path, err_t *e)
{
    if (!path || !*path)
        return err_set(e, ERR_INPUT, "an empty path");
    if (snprintf(buf, len, "%s", path) >= (int)len)
        return err_set(e, ERR_INPUT, "path too long: %s", path);
    return 0;
}

int fs_mkdir_parents(const char *path, err_t *e)
{
    char buf[PATH_MAX];
    if (copy_path(buf, sizeof buf, path, e) < 0)
        return -1;
    return mkdir_along(buf, false, 0, e);
}

int fs_mkdirs(const char *path, mode_t mode, err_t *e)
{
    char buf[PATH_MAX];
    if (copy_path(buf, sizeof buf, path, e) < 0 || mkdir_along(buf, true, mode, e) < 0)
        return -1;
    struct stat sb;
    if (stat(path, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return err_set(e, ERR_INTERNAL, "%s is not a directory", path);
    return 0;
}

int fs_own_dir(const char *path, uid_t uid, gid_t gid, mode_t mode, err_t *e)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create %s: %s", path, strerror(errno));
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", path, strerror(errno));
    if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0) {
        int err = errno;
        close(fd);
        return err_set(e, ERR_INTERNAL, "set owner and mode of %s: %s", path, strerror(err));
    }
    close(fd);
    return 0;
}

/* <dir>/.<name>.tmp beside `path`: hidden, so a directory listing of
 * numbered entries never mistakes it for one. */
static int tmp_path(char *buf, size_t len, const char *path, err_t *e)
{
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) + 1 : 0;
    if (snprintf(buf, len, "%.*s.%s.tmp", dir, path, path + dir) >= (int)len)
        return err_set(e, ERR_INPUT, "path too long: %s", path);
    return 0;
}

int fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO; /* a write that makes no progress */
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int write_replace(const char *path, const void *data, size_t len, mode_t mode, bool sync,
                         err_t *e)
{
    char tmp[PATH_MAX];
    if (tmp_path(tmp, sizeof tmp, path, e) < 0)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "write %s: %s", tmp, strerror(errno));
    bool ok = fs_write_all(fd, data, len) == 0 && (!sync || fsync(fd) == 0);
    int err = errno;
    if (close(fd) < 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, path) < 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        unlink(tmp);
        return err_set(e, ERR_INTERNAL, "write %s: %s", path, strerror(err));
    }
    return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, err_t *e)
{
    return write_replace(path, data, len, mode, true, e);
}

int fs_write_replace(const char *path, const void *data, size_t len, mode_t mode, err_t *e)
{
    return write_replace(path, data, len, mode, false, e);
}

ssize_t fs_read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    int err = errno;
    close(fd);
    if (n < 0) {
        errno = err;
        return -1;
    }
    buf[n] = '\0';
    return n;
}

int fs_beside_self(const char *name, char *out, size_t size, err_t *e)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        return err_set(e, ERR_INTERNAL, "find %s: /proc/self/exe: %s", name, strerror(errno));
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return err_set(e, ERR_INTERNAL, "find %s: odd path %s", name, exe);
    *slash = '\0';
    int len = snprintf(out, size, "%s/%s", exe, name);
    if (len < 0 || (size_t)len >= size)
        return err_set(e, ERR_INTERNAL, "find %s: the path beside %s is too long", name, exe);
    if (access(out, F_OK) == 0 || errno != ENOENT)
        return 0;
    /* Installed: /usr/sbin/imperium-node finds /usr/lib/imperium/NAME. */
    char *parent = strrchr(exe, '/');
    if (!parent)
        return 0;
    char installed[PATH_MAX];
    len = snprintf(installed, sizeof installed, "%.*s/" FS_HELPER_SUBDIR "/%s",
                   (int)(parent - exe), exe, name);
    if (len > 0 && (size_t)len < size && access(installed, F_OK) == 0)
        memcpy(out, installed, (size_t)len + 1);
    return 0;
}
