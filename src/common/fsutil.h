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

/* Replace `path` with the `len` bytes of `data` (created with `mode`, less
 * the umask): written and synced to <dir>/.<name>.tmp, then renamed over
 * it, so a reader (or the next daemon after a crash) sees either the old
 * file or the whole new one. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, err_t *e);

#endif
