/* cgroup.h - the container's cgroups, on cgroup v2 or v1: memory, pids,
 * CPU weight and I/O weight.
 *
 * v2 (unified, /sys/fs/cgroup is cgroup2): one directory <root>/<parent>/<uid>
 * with memory.max, pids.max, cpu.weight, io.weight (or io.bfq.weight).
 * v1 (or hybrid with the memory controller on v1): one directory per
 * controller, <root>/<ctrl>/<parent>/<uid>, with memory.limit_in_bytes,
 * pids.max, cpu.shares, blkio.bfq.weight (or blkio.weight).  Which one is
 * detected at runtime with statfs(2).
 *
 * Memory, pids and cpu are required: a node without them is an error.
 * The I/O weight needs an I/O scheduler that honours weights (BFQ, or iocost
 * on v2); without one the container runs unweighted and that is logged once. */
#ifndef IMP_RUNTIME_CGROUP_H
#define IMP_RUNTIME_CGROUP_H

#include <stdbool.h>
#include <sys/types.h>

#include "../common/err.h"
#include "state.h"

/* The v1 controllers besides memory, in the order of cgroup_t.ctl.
 * cpuacct (the CPU time the node samples) is optional and "" when it is
 * mounted together with cpu (cpu,cpuacct): its files are then in cpu's. */
enum { CG_PIDS, CG_CPU, CG_BLKIO, CG_CPUACCT, CG_N_CTL };

typedef struct {
    int version;              /* 1 or 2 */
    char dir[STATE_PATH_MAX]; /* memory (v1) or the one directory (v2): what the
                                 state records and imperium-enter joins */
    /* v1 only: the pids, cpu and blkio directories ("" for v2, or a
     * controller that is not mounted). */
    char ctl[CG_N_CTL][STATE_PATH_MAX];
} cgroup_t;

/* What every container gets besides its memory (node settings). */
#define CG_DEFAULT_PIDS_MAX 1024
#define CG_DEFAULT_CPU_WEIGHT 100 /* cgroup v2 units, 1-10000 (v1: 1024 shares) */
#define CG_DEFAULT_IO_WEIGHT 100  /* 1-10000 (BFQ takes 1-1000) */

typedef struct {
    long long memory_mb; /* memory + swap */
    int pids_max;        /* processes and threads */
    int cpu_weight;      /* relative to other containers: 100 is the default */
    int io_weight;
} cgroup_limits_t;

/* Detect the hierarchy under cgroup_root and compute the directories of uid
 * (nothing is created yet). */
int cgroup_locate(const char *cgroup_root, const char *parent, int uid, cgroup_t *cg, err_t *e);
/* A cgroup recorded in the state directory (version from its filesystem;
 * on v1 the other controllers' directories are derived from the memory one). */
int cgroup_from_dir(const char *dir, cgroup_t *cg, err_t *e);

/* Create the directories (removing stale ones left by a dead container) and
 * apply the limits. */
int cgroup_create(const cgroup_t *cg, const cgroup_limits_t *lim, err_t *e);
/* Move pid into every controller's cgroup of the container. */
int cgroup_add(const cgroup_t *cg, pid_t pid, err_t *e);
/* Number of processes in it; 0 when it does not exist. */
int cgroup_count(const cgroup_t *cg);
/* SIGKILL everything in it until it is empty (at most timeout_ms). */
int cgroup_kill(const cgroup_t *cg, int timeout_ms, err_t *e);
/* Kill what is left, then remove the directories; missing ones are fine. */
int cgroup_destroy(const cgroup_t *cg, err_t *e);
/* Remove the node's parent directories (every controller) if empty. */
void cgroup_remove_parents(const cgroup_t *cg);

/* Host paths of the files shown inside as /run/cgroup/memory.limit_in_bytes
 * and /run/cgroup/memory.usage_in_bytes. */
int cgroup_file(const cgroup_t *cg, int usage, char *out, size_t len, err_t *e);

/* ---- what the node samples and watches (issue 16, docs/METRICS.md) ---- */

/* A container's usage now; -1 in a field that cannot be read (a v1
 * container started before cpuacct was joined has no CPU time). */
typedef struct {
    long long cpu_ns;    /* CPU time since the cgroup was made: v1 cpuacct.usage,
                            v2 cpu.stat usage_usec x 1000 */
    long long mem;       /* v1 memory.usage_in_bytes, v2 memory.current */
    long long mem_rss;   /* memory.stat: v1 total_rss, v2 anon */
    long long mem_cache; /* memory.stat: v1 total_cache, v2 file */
} cgroup_usage_t;

/* A few small reads; never fails (what is missing is -1). */
void cgroup_usage(const cgroup_t *cg, cgroup_usage_t *u);
/* The number after `key` in "key value" lines (memory.stat, cpu.stat,
 * memory.events, memory.oom_control); -1 when absent. */
long long cgroup_stat_value(const char *text, const char *key);

/* An fd that polls readable when the memory cgroup had an OOM event (v1:
 * an eventfd registered on memory.oom_control; v2: inotify on
 * memory.events); the cgroup's removal wakes it too, so the caller compares
 * cgroup_oom_kills with what it saw.  -1 with e set. */
int cgroup_oom_watch(const cgroup_t *cg, err_t *e);
/* Consume what woke the fd (it stays registered). */
void cgroup_oom_drain(int fd);
/* The cgroup's oom_kill counter (processes the kernel killed); -1 when the
 * cgroup is gone or the kernel has no such counter. */
long long cgroup_oom_kills(const cgroup_t *cg);

#endif
