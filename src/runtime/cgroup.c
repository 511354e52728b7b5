/* cgroup.c - the container's memory cgroup (see cgroup.h). */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"

#define CG_POLL_MS 20

static int fs_type(const char *path, long *type)
{
    struct statfs sf;
    if (statfs(path, &sf) < 0)
        return -1;
    *type = (long)sf.f_type;
    return 0;
}

/* dir/file into out; -1 when it does not fit. */
static int cg_path(const char *dir, const char *file, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", dir, file);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Write a short value to a control file (they take one write each). */
static int cg_write(const char *dir, const char *file, const char *val, err_t *e)
{
    char path[STATE_PATH_MAX];
    if (cg_path(dir, file, path, sizeof path) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup path too long: %s", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: open %s: %s", path, strerror(errno));
    size_t len = strlen(val);
    ssize_t n = write(fd, val, len);
    int err = errno;
    close(fd);
    if (n != (ssize_t)len)
        return err_set(e, ERR_INTERNAL, "cgroup: write '%s' to %s: %s", val, path,
                       n < 0 ? strerror(err) : "short write");
    return 0;
}

static bool cg_has(const char *dir, const char *file)
{
    char path[STATE_PATH_MAX];
    if (cg_path(dir, file, path, sizeof path) < 0)
        return false;
    return access(path, F_OK) == 0;
}

/* Does a v2 cgroup offer the controller `name` to its children? */
static bool v2_has(const char *dir, const char *name)
{
    char path[STATE_PATH_MAX], buf[512];
    if (cg_path(dir, "cgroup.controllers", path, sizeof path) < 0)
        return false;
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool found = false;
    char *save = NULL;
    if (fgets(buf, sizeof buf, f))
        for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
            if (strcmp(tok, name) == 0)
                found = true;
    fclose(f);
    return found;
}

static const char *const v1_names[CG_N_CTL] = {"pids", "cpu", "blkio", "cpuacct"};

/* Is <root>/cpuacct the mount of <root>/cpu (mounted together)? */
static bool v1_cpuacct_with_cpu(const char *root)
{
    char a[STATE_PATH_MAX], b[STATE_PATH_MAX];
    struct stat sa, sb;
    snprintf(a, sizeof a, "%s/cpu", root);
    snprintf(b, sizeof b, "%s/cpuacct", root);
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev;
}

/* v1: <root>/<ctrl>/<parent>/<uid> for every controller mounted on its own
 * (a missing one stays "": cgroup_create decides whether that is fatal). */
static void v1_dirs(const char *root, const char *tail, cgroup_t *cg)
{
    for (int i = 0; i < CG_N_CTL; i++) {
        char mnt[STATE_PATH_MAX];
        long type = 0;
        cg->ctl[i][0] = '\0';
        int n = snprintf(mnt, sizeof mnt, "%s/%s", root, v1_names[i]);
        if (n < 0 || (size_t)n >= sizeof mnt || fs_type(mnt, &type) < 0 ||
            type != CGROUP_SUPER_MAGIC)
            continue;
        if (i == CG_CPUACCT && v1_cpuacct_with_cpu(root))
            continue; /* the same directory as cpu's: made once */
        n = snprintf(cg->ctl[i], sizeof cg->ctl[i], "%s/%s", mnt, tail);
        if (n < 0 || (size_t)n >= sizeof cg->ctl[i])
            cg->ctl[i][0] = '\0';
    }
}

int cgroup_locate(const char *root, const char *parent, int uid, cgroup_t *cg, err_t *e)
{
    long type = 0;
    int n;
    memset(cg, 0, sizeof *cg);
    if (fs_type(root, &type) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: %s: %s", root, strerror(errno));
    if (type == CGROUP2_SUPER_MAGIC) {
        if (!v2_has(root, "memory"))
            return err_set(e, ERR_INTERNAL, "cgroup: %s is cgroup v2 without the memory controller",
                           root);
        cg->version = 2;
        n = snprintf(cg->dir, sizeof cg->dir, "%s/%s/%d", root, parent, uid);
    } else {
        /* v1 or hybrid: the memory controller has its own mount. */
        char mem[STATE_PATH_MAX], tail[STATE_PATH_MAX];
        snprintf(mem, sizeof mem, "%s/memory", root);
        if (fs_type(mem, &type) < 0 || type != CGROUP_SUPER_MAGIC)
            return err_set(e, ERR_INTERNAL,
                           "cgroup: no memory controller (neither %s is cgroup2 nor "
                           "%s a cgroup v1 mount)",
                           root, mem);
        cg->version = 1;
        n = snprintf(cg->dir, sizeof cg->dir, "%s/%s/%d", mem, parent, uid);
        snprintf(tail, sizeof tail, "%s/%d", parent, uid);
        v1_dirs(root, tail, cg);
    }
    if (n < 0 || (size_t)n >= sizeof cg->dir)
        return err_set(e, ERR_INTERNAL, "cgroup path too long under %s", root);
    return 0;
}

int cgroup_from_dir(const char *dir, cgroup_t *cg, err_t *e)
{
    memset(cg, 0, sizeof *cg);
    if (snprintf(cg->dir, sizeof cg->dir, "%s", dir) >= (int)sizeof cg->dir)
        return err_set(e, ERR_INTERNAL, "cgroup path too long: %s", dir);
    /* The directory may be gone already; its parent tells the version. */
    char parent[STATE_PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent)
        *slash = '\0';
    long type = 0;
    if (fs_type(dir, &type) < 0 && fs_type(parent, &type) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: %s: %s", dir, strerror(errno));
    cg->version = type == CGROUP2_SUPER_MAGIC ? 2 : 1;
    if (cg->version == 1) {
        /* <root>/memory/<parent>/<uid>: the other controllers sit beside it. */
        char root[STATE_PATH_MAX];
        snprintf(root, sizeof root, "%s", dir);
        char *tail = NULL;
        for (int i = 0; i < 3; i++) {
            char *s = strrchr(root, '/');
            if (!s || s == root)
                return err_set(e, ERR_INTERNAL, "cgroup: %s is not <root>/memory/<parent>/<uid>",
                               dir);
            if (tail)
                tail[-1] = '/';
            *s = '\0';
            tail = s + 1;
        }
        if (strncmp(tail, "memory/", 7) != 0)
            return err_set(e, ERR_INTERNAL, "cgroup: %s is not <root>/memory/<parent>/<uid>", dir);
        v1_dirs(root, tail + 7, cg);
    }
    return 0;
}

int cgroup_count(const cgroup_t *cg)
{
    char path[STATE_PATH_MAX], line[64];
    if (cg_path(cg->dir, "cgroup.procs", path, sizeof path) < 0)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    return n;
}

/* One pass of SIGKILL over cgroup.procs; the count of processes seen. */
static int kill_pass(const cgroup_t *cg)
{
    char path[STATE_PATH_MAX], line[64];
    if (cg_path(cg->dir, "cgroup.procs", path, sizeof path) < 0)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        long pid = strtol(line, NULL, 10);
        if (pid > 1) {
            kill((pid_t)pid, SIGKILL);
            n++;
        }
    }
    fclose(f);
    return n;
}

int cgroup_kill(const cgroup_t *cg, int timeout_ms, err_t *e)
{
    if (access(cg->dir, F_OK) < 0)
        return 0;
    /* cgroup.kill (v2, Linux 5.14) kills atomically, forks included. */
    if (cg->version == 2 && cg_has(cg->dir, "cgroup.kill"))
        cg_write(cg->dir, "cgroup.kill", "1", NULL);
    for (int waited = 0;; waited += CG_POLL_MS) {
        if (kill_pass(cg) == 0 && cgroup_count(cg) == 0)
            return 0;
        if (waited >= timeout_ms)
            return err_set(e, ERR_INTERNAL, "cgroup %s: %d processes survive SIGKILL", cg->dir,
                           cgroup_count(cg));
        sleep_ms(CG_POLL_MS);
    }
}

static int rmdir_wait(const char *dir, err_t *e)
{
    /* Exiting tasks leave the cgroup a little after they are reaped. */
    for (int waited = 0;; waited += CG_POLL_MS) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || waited >= 2000)
            return err_set(e, ERR_INTERNAL, "cgroup: remove %s: %s", dir, strerror(errno));
        sleep_ms(CG_POLL_MS);
    }
}

int cgroup_destroy(const cgroup_t *cg, err_t *e)
{
    if (cgroup_kill(cg, 5000, e) < 0)
        return -1;
    int rc = rmdir_wait(cg->dir, e);
    for (int i = 0; i < CG_N_CTL; i++)
        if (cg->ctl[i][0] && rmdir_wait(cg->ctl[i], rc < 0 ? NULL : e) < 0)
            rc = -1;
    return rc;
}

/* dir without its last component into out. */
static int parent_of(const char *dir, char *out, size_t len)
{
    snprintf(out, len, "%s", dir);
    char *slash = strrchr(out, '/');
    if (!slash || slash == out)
        return -1;
    *slash = '\0';
    return 0;
}

void cgroup_remove_parents(const cgroup_t *cg)
{
    char parent[STATE_PATH_MAX];
    if (parent_of(cg->dir, parent, sizeof parent) == 0)
        rmdir(parent); /* one still in use stays: that is the point */
    for (int i = 0; i < CG_N_CTL; i++)
        if (cg->ctl[i][0] && parent_of(cg->ctl[i], parent, sizeof parent) == 0)
            rmdir(parent);
}

/* Said once per process: a node without weighted I/O runs that way for good. */
static void io_unweighted(const char *why)
{
    static bool said;
    if (!said)
        log_warn("cgroup: containers get no I/O weight: %s", why);
    said = true;
}

/* v2: the parent directory must hand the controllers down to its children,
 * and the root to it.  memory, pids and cpu are required; io is optional. */
static int v2_enable(const char *root, const char *parent, bool *io, err_t *e)
{
    static const char *const required[] = {"memory", "pids", "cpu"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char what[16];
        if (!v2_has(root, required[i]))
            return err_set(e, ERR_INTERNAL, "cgroup: %s offers no %s controller (cgroup v2)",
                           root, required[i]);
        snprintf(what, sizeof what, "+%s", required[i]);
        if (cg_write(root, "cgroup.subtree_control", what, e) < 0 ||
            cg_write(parent, "cgroup.subtree_control", what, e) < 0)
            return -1;
    }
    *io = v2_has(root, "io") && cg_write(root, "cgroup.subtree_control", "+io", NULL) == 0 &&
          cg_write(parent, "cgroup.subtree_control", "+io", NULL) == 0;
    if (!*io)
        io_unweighted("the io controller is not available (cgroup v2)");
    return 0;
}

/* The parent directories of the container's cgroups, created on first use. */
static int make_parents(const cgroup_t *cg, bool *io, err_t *e)
{
    char parent[STATE_PATH_MAX];
    if (parent_of(cg->dir, parent, sizeof parent) < 0)
        return err_set(e, ERR_INTERNAL, "bad cgroup path %s", cg->dir);
    if (mkdir(parent, 0755) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", parent, strerror(errno));
    if (cg->version == 2) {
        char root[STATE_PATH_MAX];
        if (parent_of(parent, root, sizeof root) < 0)
            return err_set(e, ERR_INTERNAL, "bad cgroup path %s", cg->dir);
        return v2_enable(root, parent, io, e);
    }
    if (!cg->ctl[CG_PIDS][0])
        return err_set(e, ERR_INTERNAL, "cgroup: no pids controller (no cgroup v1 mount "
                                        "<cgroup_root>/pids): the pids limit cannot be enforced");
    if (!cg->ctl[CG_CPU][0])
        return err_set(e, ERR_INTERNAL, "cgroup: no cpu controller (no cgroup v1 mount "
                                        "<cgroup_root>/cpu): the CPU weight cannot be set");
    *io = cg->ctl[CG_BLKIO][0] != '\0';
    if (!*io)
        io_unweighted("no cgroup v1 blkio mount");
    for (int i = 0; i < CG_N_CTL; i++) {
        if (!cg->ctl[i][0])
            continue;
        if (parent_of(cg->ctl[i], parent, sizeof parent) < 0)
            return err_set(e, ERR_INTERNAL, "bad cgroup path %s", cg->ctl[i]);
        if (mkdir(parent, 0755) < 0 && errno != EEXIST)
            return err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", parent, strerror(errno));
    }
    return 0;
}

static int set_memory(const cgroup_t *cg, long long memory_mb, err_t *e)
{
    char val[32];
    snprintf(val, sizeof val, "%lld", memory_mb * 1024 * 1024);
    if (cg->version == 2) {
        if (cg_write(cg->dir, "memory.max", val, e) < 0)
            return -1;
        /* No swap: the limit is what the customer bought, as on v1. */
        if (cg_has(cg->dir, "memory.swap.max") && cg_write(cg->dir, "memory.swap.max", "0", e) < 0)
            return -1;
        return 0;
    }
    if (cg_write(cg->dir, "memory.limit_in_bytes", val, e) < 0)
        return -1;
    /* memory + swap capped at the same value (present with swap accounting). */
    if (cg_has(cg->dir, "memory.memsw.limit_in_bytes") &&
        cg_write(cg->dir, "memory.memsw.limit_in_bytes", val, e) < 0)
        return -1;
    return 0;
}

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The I/O weight, if the scheduler honours one: BFQ's file first (the
 * blk-iocost/CFQ one does nothing under BFQ). */
static int set_io(const char *dir, int version, int weight, err_t *e)
{
    char val[32];
    const char *bfq = version == 2 ? "io.bfq.weight" : "blkio.bfq.weight";
    const char *plain = version == 2 ? "io.weight" : "blkio.weight";
    if (cg_has(dir, bfq)) {
        snprintf(val, sizeof val, "%d", clamp(weight, 1, 1000));
        return cg_write(dir, bfq, val, e);
    }
    if (cg_has(dir, plain)) {
        if (version == 2)
            snprintf(val, sizeof val, "default %d", weight);
        else
            snprintf(val, sizeof val, "%d", clamp(weight, 10, 1000));
        return cg_write(dir, plain, val, e);
    }
    io_unweighted("the kernel's I/O schedulers offer no weight (neither BFQ nor iocost)");
    return 0;
}

static int set_limits(const cgroup_t *cg, const cgroup_limits_t *lim, bool io, err_t *e)
{
    char val[32];
    bool v2 = cg->version == 2;
    if (set_memory(cg, lim->memory_mb, e) < 0)
        return -1;
    snprintf(val, sizeof val, "%d", lim->pids_max);
    if (cg_write(v2 ? cg->dir : cg->ctl[CG_PIDS], "pids.max", val, e) < 0)
        return -1;
    /* v1 shares: 1024 is the default, as 100 is for v2's weight. */
    snprintf(val, sizeof val, "%d", v2 ? lim->cpu_weight : clamp(lim->cpu_weight * 1024 / 100, 2, 262144));
    if (cg_write(v2 ? cg->dir : cg->ctl[CG_CPU], v2 ? "cpu.weight" : "cpu.shares", val, e) < 0)
        return -1;
    if (io && set_io(v2 ? cg->dir : cg->ctl[CG_BLKIO], cg->version, lim->io_weight, e) < 0)
        return -1;
    return 0;
}

int cgroup_create(const cgroup_t *cg, const cgroup_limits_t *lim, err_t *e)
{
    bool io = false;
    if (lim->pids_max < 1 || lim->cpu_weight < 1 || lim->cpu_weight > 10000 ||
        lim->io_weight < 1 || lim->io_weight > 10000)
        return err_set(e, ERR_INPUT, "cgroup: pids_max must be positive and the CPU and I/O "
                                     "weights 1-10000");
    if (make_parents(cg, &io, e) < 0)
        return -1;
    /* A stale cgroup of a container that died: start from a clean one so
     * counters and limits are fresh. */
    if (cgroup_destroy(cg, e) < 0)
        return -1;
    if (mkdir(cg->dir, 0755) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", cg->dir, strerror(errno));
    for (int i = 0; i < CG_N_CTL; i++)
        if (cg->ctl[i][0] && (i != CG_BLKIO || io) && mkdir(cg->ctl[i], 0755) < 0) {
            err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", cg->ctl[i], strerror(errno));
            cgroup_destroy(cg, NULL);
            return -1;
        }
    if (set_limits(cg, lim, io, e) < 0) {
        cgroup_destroy(cg, NULL);
        return -1;
    }
    return 0;
}

int cgroup_add(const cgroup_t *cg, pid_t pid, err_t *e)
{
    char val[32];
    snprintf(val, sizeof val, "%d", (int)pid);
    /* pids first: from then on every fork of pid counts. */
    for (int i = 0; i < CG_N_CTL; i++)
        if (cg->ctl[i][0] && access(cg->ctl[i], F_OK) == 0 &&
            cg_write(cg->ctl[i], "cgroup.procs", val, e) < 0)
            return -1;
    return cg_write(cg->dir, "cgroup.procs", val, e);
}

int cgroup_file(const cgroup_t *cg, int usage, char *out, size_t len, err_t *e)
{
    const char *name = cg->version == 2
                           ? (usage ? "memory.current" : "memory.max")
                           : (usage ? "memory.usage_in_bytes" : "memory.limit_in_bytes");
    int n = snprintf(out, len, "%s/%s", cg->dir, name);
    if (n < 0 || (size_t)n >= len)
        return err_set(e, ERR_INTERNAL, "cgroup path too long: %s", cg->dir);
    return 0;
}

/* ---- what the node samples and watches ------------------------------------ */

/* dir/file into buf (NUL-terminated); its length, -1 when unreadable. */
static ssize_t cg_read(const char *dir, const char *file, char *buf, size_t size)
{
    char path[STATE_PATH_MAX];
    if (!dir[0] || cg_path(dir, file, path, sizeof path) < 0)
        return -1;
    return fs_read_small(path, buf, size);
}

static long long cg_read_ll(const char *dir, const char *file)
{
    char buf[64];
    if (cg_read(dir, file, buf, sizeof buf) <= 0)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    return errno || end == buf || v < 0 ? -1 : v;
}

long long cgroup_stat_value(const char *text, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen) != 0 || p[klen] != ' ')
            continue;
        char *end;
        errno = 0;
        long long v = strtoll(p + klen + 1, &end, 10);
        return errno || end == p + klen + 1 || v < 0 ? -1 : v;
    }
    return -1;
}

void cgroup_usage(const cgroup_t *cg, cgroup_usage_t *u)
{
    /* memory.stat is ~1.5 kB on v1 (every total_*), a little more on v2. */
    char stat[8192];
    bool v2 = cg->version == 2;
    u->cpu_ns = -1;
    if (v2) {
        long long usec = cg_read(cg->dir, "cpu.stat", stat, sizeof stat) > 0
                             ? cgroup_stat_value(stat, "usage_usec")
                             : -1;
        u->cpu_ns = usec >= 0 ? usec * 1000 : -1;
    } else {
        const char *acct = cg->ctl[CG_CPUACCT][0] ? cg->ctl[CG_CPUACCT] : cg->ctl[CG_CPU];
        u->cpu_ns = cg_read_ll(acct, "cpuacct.usage");
    }
    u->mem = cg_read_ll(cg->dir, v2 ? "memory.current" : "memory.usage_in_bytes");
    bool have = cg_read(cg->dir, "memory.stat", stat, sizeof stat) > 0;
    u->mem_rss = have ? cgroup_stat_value(stat, v2 ? "anon" : "total_rss") : -1;
    u->mem_cache = have ? cgroup_stat_value(stat, v2 ? "file" : "total_cache") : -1;
}

int cgroup_oom_watch(const cgroup_t *cg, err_t *e)
{
    char path[STATE_PATH_MAX];
    if (cg->version == 2) {
        if (cg_path(cg->dir, "memory.events", path, sizeof path) < 0)
            return err_set(e, ERR_INTERNAL, "cgroup path too long: %s", cg->dir);
        int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0)
            return err_set(e, ERR_INTERNAL, "inotify_init1: %s", strerror(errno));
        if (inotify_add_watch(fd, path, IN_MODIFY) < 0) {
            err_set(e, ERR_INTERNAL, "watch %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    /* v1: "<eventfd> <fd of memory.oom_control>" into cgroup.event_control;
     * the kernel keeps the eventfd, not the control file's fd. */
    if (cg_path(cg->dir, "memory.oom_control", path, sizeof path) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup path too long: %s", cg->dir);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return err_set(e, ERR_INTERNAL, "eventfd: %s", strerror(errno));
    int ofd = open(path, O_RDONLY | O_CLOEXEC);
    if (ofd < 0) {
        err_set(e, ERR_INTERNAL, "open %s: %s", path, strerror(errno));
        close(efd);
        return -1;
    }
    char reg[32];
    snprintf(reg, sizeof reg, "%d %d", efd, ofd);
    int rc = cg_write(cg->dir, "cgroup.event_control", reg, e);
    close(ofd);
    if (rc < 0) {
        close(efd);
        return -1;
    }
    return efd;
}

void cgroup_oom_drain(int fd)
{
    /* An eventfd reads 8 bytes, inotify whole events: one buffer fits both. */
    char buf[4096] __attribute__((aligned(8)));
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

long long cgroup_oom_kills(const cgroup_t *cg)
{
    char text[1024];
    if (cg_read(cg->dir, cg->version == 2 ? "memory.events" : "memory.oom_control", text,
                sizeof text) <= 0)
        return -1;
    return cgroup_stat_value(text, "oom_kill");
}
