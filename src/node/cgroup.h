/* cgroup.h - the container's memory cgroup, on cgroup v2 or v1.
 *
 * v2 (unified, /sys/fs/cgroup is cgroup2): <root>/<parent>/<uid>, memory.max,
 * memory.current.  v1 (or hybrid with the memory controller on v1):
 * <root>/memory/<parent>/<uid>, memory.limit_in_bytes, memory.usage_in_bytes.
 * Which one is detected at runtime with statfs(2). */
#ifndef IMP_NODE_CGROUP_H
#define IMP_NODE_CGROUP_H

#include <sys/types.h>

#include "../common/err.h"
#include "state.h"

typedef struct {
    int version;              /* 1 or 2 */
    char dir[STATE_PATH_MAX]; /* the container's cgroup directory */
} cgroup_t;

/* Detect the hierarchy under cgroup_root and compute the directory of uid
 * (nothing is created yet). */
int cgroup_locate(const char *cgroup_root, const char *parent, int uid, cgroup_t *cg, err_t *e);
/* A cgroup recorded in the state directory (version from its filesystem). */
int cgroup_from_dir(const char *dir, cgroup_t *cg, err_t *e);

/* Create the directory (removing a stale one left by a dead container) and
 * limit it to memory_mb megabytes, swap included. */
int cgroup_create(const cgroup_t *cg, long long memory_mb, err_t *e);
int cgroup_add(const cgroup_t *cg, pid_t pid, err_t *e);
/* Number of processes in it; 0 when it does not exist. */
int cgroup_count(const cgroup_t *cg);
/* SIGKILL everything in it until it is empty (at most timeout_ms). */
int cgroup_kill(const cgroup_t *cg, int timeout_ms, err_t *e);
/* Kill what is left, then remove the directory; a missing one is fine. */
int cgroup_destroy(const cgroup_t *cg, err_t *e);

/* Host paths of the files shown inside as /run/cgroup/memory.limit_in_bytes
 * and /run/cgroup/memory.usage_in_bytes. */
int cgroup_file(const cgroup_t *cg, int usage, char *out, size_t len, err_t *e);

#endif
