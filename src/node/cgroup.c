/* cgroup.c - the container's memory cgroup (see cgroup.h). */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define CG_POLL_MS 20

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

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

/* Does a v2 cgroup offer the memory controller to its children? */
static bool v2_has_memory(const char *dir)
{
    char path[STATE_PATH_MAX], buf[512];
    if (cg_path(dir, "cgroup.controllers", path, sizeof path) < 0)
        return false;
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool found = false;
    if (fgets(buf, sizeof buf, f))
        for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n"))
            if (strcmp(tok, "memory") == 0)
                found = true;
    fclose(f);
    return found;
}

int cgroup_locate(const char *root, const char *parent, int uid, cgroup_t *cg, err_t *e)
{
    long type = 0;
    int n;
    memset(cg, 0, sizeof *cg);
    if (fs_type(root, &type) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: %s: %s", root, strerror(errno));
    if (type == CGROUP2_SUPER_MAGIC) {
        if (!v2_has_memory(root))
            return err_set(e, ERR_INTERNAL, "cgroup: %s is cgroup v2 without the memory controller",
                           root);
        cg->version = 2;
        n = snprintf(cg->dir, sizeof cg->dir, "%s/%s/%d", root, parent, uid);
    } else {
        /* v1 or hybrid: the memory controller has its own mount. */
        char mem[STATE_PATH_MAX];
        snprintf(mem, sizeof mem, "%s/memory", root);
        if (fs_type(mem, &type) < 0 || type != CGROUP_SUPER_MAGIC)
            return err_set(e, ERR_INTERNAL,
                           "cgroup: no memory controller (neither %s is cgroup2 nor "
                           "%s a cgroup v1 mount)",
                           root, mem);
        cg->version = 1;
        n = snprintf(cg->dir, sizeof cg->dir, "%s/%s/%d", mem, parent, uid);
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

static int cg_rmdir(const cgroup_t *cg, err_t *e)
{
    /* Exiting tasks leave the cgroup a little after they are reaped. */
    for (int waited = 0;; waited += CG_POLL_MS) {
        if (rmdir(cg->dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || waited >= 2000)
            return err_set(e, ERR_INTERNAL, "cgroup: remove %s: %s", cg->dir, strerror(errno));
        sleep_ms(CG_POLL_MS);
    }
}

int cgroup_destroy(const cgroup_t *cg, err_t *e)
{
    if (cgroup_kill(cg, 5000, e) < 0)
        return -1;
    return cg_rmdir(cg, e);
}

/* The parent directory of the container's cgroup, created on first use;
 * on v2 it must hand the memory controller down to its children. */
static int make_parent(const cgroup_t *cg, err_t *e)
{
    char parent[STATE_PATH_MAX];
    snprintf(parent, sizeof parent, "%s", cg->dir);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        return err_set(e, ERR_INTERNAL, "bad cgroup path %s", cg->dir);
    *slash = '\0';
    if (mkdir(parent, 0755) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", parent, strerror(errno));
    if (cg->version == 1)
        return 0;
    char root[STATE_PATH_MAX];
    snprintf(root, sizeof root, "%s", parent);
    slash = strrchr(root, '/');
    if (slash && slash != root)
        *slash = '\0';
    if (cg_write(root, "cgroup.subtree_control", "+memory", e) < 0 ||
        cg_write(parent, "cgroup.subtree_control", "+memory", e) < 0)
        return -1;
    return 0;
}

static int set_limit(const cgroup_t *cg, long long memory_mb, err_t *e)
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

int cgroup_create(const cgroup_t *cg, long long memory_mb, err_t *e)
{
    if (make_parent(cg, e) < 0)
        return -1;
    /* A stale cgroup of a container that died: start from a clean one so
     * counters and limits are fresh. */
    if (access(cg->dir, F_OK) == 0 && cgroup_destroy(cg, e) < 0)
        return -1;
    if (mkdir(cg->dir, 0755) < 0)
        return err_set(e, ERR_INTERNAL, "cgroup: create %s: %s", cg->dir, strerror(errno));
    if (set_limit(cg, memory_mb, e) < 0) {
        rmdir(cg->dir);
        return -1;
    }
    return 0;
}

int cgroup_add(const cgroup_t *cg, pid_t pid, err_t *e)
{
    char val[32];
    snprintf(val, sizeof val, "%d", (int)pid);
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
