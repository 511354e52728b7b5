/* beneath.h - act on a path inside a tree someone else may write to (a
 * customer's home, a custom distro, a container's root) without being
 * redirected: every component is resolved with openat2(2) relative to a
 * directory descriptor, no symbolic link is followed (RESOLVE_NO_SYMLINKS,
 * magic links included) and ".." cannot climb out (RESOLVE_BENEATH, or
 * RESOLVE_IN_ROOT where an absolute path means "from that root").
 * Directories are created with mkdirat and given their mode and owner
 * through the new directory's own descriptor, never by path.
 *
 * Plain syscall wrappers: they return -1 with errno set (ELOOP for a
 * symbolic link, EXDEV for an escape); callers word the error. */
#ifndef IMP_BENEATH_H
#define IMP_BENEATH_H

#include <stdbool.h>
#include <sys/types.h>

/* How to read `path`: BENEATH_IN_ROOT treats dirfd as "/" (absolute paths
 * and ".." stay inside); otherwise the path must stay beneath dirfd. */
#define BENEATH_IN_ROOT 1

/* openat2(dirfd, path, flags | O_CLOEXEC, mode) without following any
 * symbolic link; how = 0 or BENEATH_IN_ROOT. */
int beneath_open(int dirfd, const char *path, int flags, mode_t mode, int how);

/* The parent directory of path (an O_PATH descriptor, resolved as
 * beneath_open does) and, in *last, where path's last component starts:
 * for the *at() calls that take a name (symlinkat, mkdirat, unlinkat). */
int beneath_parent(int dirfd, const char *path, const char **last, int how);

/* mkdir dirfd/path (its parent resolved as beneath_open does), or take the
 * real directory already there; then fchmod it to `mode` when it was
 * created or `force` is set, and fchown it to uid:gid unless uid is -1.
 * Returns an O_RDONLY|O_DIRECTORY descriptor of it. */
int beneath_mkdir(int dirfd, const char *path, mode_t mode, bool force, uid_t uid, gid_t gid,
                  int how);

#endif
