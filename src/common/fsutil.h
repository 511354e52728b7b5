/* fsutil.h - files and directories of a daemon's own (root-owned paths no
 * one else writes to; a customer's tree goes through beneath.h instead). */
#ifndef IMP_COMMON_FSUTIL_H
#define IMP_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* mkdir -p of the directories above `path` (mode 0755), not path itself. */
int fs_mkdir_parents(const char *path, err_t *e);

/* mkdir -p: the parents as 0755, `path` itself with `mode` when it is
 * created; then `path` must be a directory. */
int fs_mkdirs(const char *path, mode_t mode, err_t *e);

/* mkdir `path` (if missing; not its parents), then give it exactly
 * uid:gid and `mode` by descriptor (never following a symlink put in its
 * place): a daemon's directory that another user (a router) may search. */
int fs_own_dir(const char *path, uid_t uid, gid_t gid, mode_t mode, err_t *e);

/* Replace `path` with the `len` bytes of `data` (created with `mode`, less
 * the umask): written and synced to <dir>/.<name>.tmp, then renamed over
 * it, so a reader (or the next daemon after a crash) sees either the old
 * file or the whole new one. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, err_t *e);
/* The same without the fsync: for a file written often whose loss in a
 * crash costs little (after one, it may hold the old or no content). */
int fs_write_replace(const char *path, const void *data, size_t len, mode_t mode, err_t *e);

/* write(2) all `len` bytes to fd (EINTR retried); 0, or -1 with errno. */
int fs_write_all(int fd, const void *data, size_t len);

/* One read(2) of a small file (a /proc, /sys or cgroup file, which answers
 * whole in one read) into buf, NUL-terminated: its length, -1 (errno) when
 * it cannot be opened or read.  Reads at most size - 1 bytes. */
ssize_t fs_read_small(const char *path, char *buf, size_t size);

/* Where the daemons find their helpers (imperium-init, imperium-wall, the
 * hooks, the router's plugins) when no setting names them: `name` in the
 * directory of the running executable (/proc/self/exe: the build tree, where
 * make puts everything in one directory), else, when nothing is there,
 * FS_HELPER_SUBDIR beside that directory (`make install`'s layout:
 * PREFIX/sbin/imperium-node finds PREFIX/lib/imperium/imperium-init, for any
 * PREFIX).  The one owner of that default.  When neither exists the path
 * beside is returned (the caller's error names it); -1 with a message naming
 * `name` when it does not fit in size or /proc cannot tell. */
#define FS_HELPER_SUBDIR "lib/imperium"
int fs_beside_self(const char *name, char *out, size_t size, err_t *e);

#endif
