/* container.c - start, stop, find and describe containers (container.h).
 *
 * Start, in order (start_steps[] below; each step names itself in the error
 * it returns):
 *   parent: check the spec and the distro (a custom distro: its holder's
 *           home image mounted on a staging directory, detached again
 *           once the child ran or failed); open imperium-init; mount the
 *           home's image (the disk quota, quota.c); create the home
 *           layout; create the cgroups (memory, pids, cpu, io); format
 *           everything the child needs (runtime.h);
 *           clone with new mount/pid/uts/ipc/net namespaces;
 *   parent: puts the child in the cgroups and (networking on) creates its
 *           veth, the inside end uwsgi0 in the child's namespace (net.c);
 *   child:  waits until the parent has done so ("go"), then
 *           cgroup namespace, mounts + pivot_root, hostname, loopback, uwsgi0,
 *           drops to the uid with no capabilities, and execs imperium-init
 *           (init_main.c: the seccomp filter, then init.c), which starts the
 *           Emperor (emperor.c);
 *   parent: reads the child's sync socket to EOF: empty means the Emperor
 *           was exec'd; a line is the failed step.  On success the state
 *           directory records the init (state.c), which is what adoption
 *           after a node restart relies on. */
#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "cgroup.h"
#include "home.h"
#include "net.h"
#include "runtime.h"

#define SETUP_TIMEOUT_MS 10000
#define SHORTCUTS_MAX (1024 * 1024)

void node_cfg_defaults(node_cfg_t *cfg)
{
    if (!cfg->uwsgi)
        cfg->uwsgi = NODE_DEFAULT_UWSGI;
    if (!cfg->cgroup_root)
        cfg->cgroup_root = NODE_DEFAULT_CGROUP_ROOT;
    if (!cfg->cgroup_parent)
        cfg->cgroup_parent = NODE_DEFAULT_CGROUP_PARENT;
    if (!cfg->pids_max)
        cfg->pids_max = CG_DEFAULT_PIDS_MAX;
    if (!cfg->cpu_weight)
        cfg->cpu_weight = CG_DEFAULT_CPU_WEIGHT;
    if (!cfg->io_weight)
        cfg->io_weight = CG_DEFAULT_IO_WEIGHT;
    if (!cfg->emperor_log_maxsize)
        cfg->emperor_log_maxsize = NODE_DEFAULT_EMPEROR_LOG_MAXSIZE;
}

/* ---- the spec ------------------------------------------------------------ */

void container_spec_free(container_spec_t *s)
{
    free(s->hostname);
    free(s->rootfs);
    free(s->home);
    for (size_t i = 0; i < s->n_ssh_keys; i++)
        free(s->ssh_keys[i]);
    free(s->ssh_keys);
    free(s->rsa_key);
    free(s->rsa_pubkey);
    free(s->etc_hosts);
    free(s->etc_resolv_conf);
    free(s->rootfs_custom);
    memset(s, 0, sizeof *s);
}

/* ---- checks ------------------------------------------------------------- */

static bool hostname_ok(const char *h)
{
    size_t n = h ? strlen(h) : 0;
    if (n == 0 || n > 63 || h[0] == '-' || h[n - 1] == '-')
        return false;
    for (const char *c = h; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-'))
            return false;
    return true;
}

static int check_cfg(const node_cfg_t *cfg, err_t *e)
{
    if (!cfg->state_dir || cfg->state_dir[0] != '/')
        return err_set(e, ERR_INPUT, "the state directory must be an absolute path");
    if (cfg->containers_dir && cfg->containers_dir[0] != '/')
        return err_set(e, ERR_INPUT, "the containers directory must be an absolute path");
    const char *p = cfg->cgroup_parent;
    if (!p || !*p || strchr(p, '/') || strcmp(p, ".") == 0 || strcmp(p, "..") == 0)
        return err_set(e, ERR_INPUT, "the cgroup parent must be a single directory name");
    if (!cfg->uwsgi || cfg->uwsgi[0] != '/')
        return err_set(e, ERR_INPUT, "the uwsgi binary must be an absolute path");
    if (cfg->init && cfg->init[0] != '/')
        return err_set(e, ERR_INPUT, "the init program must be an absolute path");
    return 0;
}

static int check_spec(const container_spec_t *s, err_t *e)
{
    if (s->uid <= UID_BASE)
        return err_set(e, ERR_INPUT, "uid %d is not a container uid", s->uid);
    if (!hostname_ok(s->hostname))
        return err_set(e, ERR_INPUT, "hostname '%s' is not 1-63 of [A-Za-z0-9-]",
                       s->hostname ? s->hostname : "");
    if (s->memory_mb <= 0 || s->memory_mb > (1LL << 30))
        return err_set(e, ERR_INPUT, "memory must be a positive number of megabytes");
    if (!s->home || s->home[0] != '/')
        return err_set(e, ERR_INPUT, "the home must be an absolute path");
    if (!s->rootfs || s->rootfs[0] != '/')
        return err_set(e, ERR_INPUT, "the distro directory must be an absolute path");
    char why[128];
    if (s->rootfs_holder > 0) /* looked at in the holder's home (step_custom_distro) */
        return s->rootfs_holder > UID_BASE && s->rootfs_custom &&
                       custom_distro_path_valid(s->rootfs_custom, why, sizeof why)
                   ? 0
                   : err_set(e, ERR_INPUT, "custom distro of container %d: bad path",
                             s->rootfs_holder);
    struct stat sb;
    if (stat(s->rootfs, &sb) < 0)
        return errno == ENOENT
                   ? err_set(e, ERR_INPUT, "distro directory %s missing", s->rootfs)
                   : err_set(e, ERR_INPUT, "distro directory %s: %s", s->rootfs, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return err_set(e, ERR_INPUT, "distro %s is not a directory", s->rootfs);
    return 0;
}

/* ---- the child's plan ----------------------------------------------------- */

static int copy(char *dst, size_t len, const char *src, const char *what, err_t *e)
{
    if (snprintf(dst, len, "%s", src) >= (int)len)
        return err_set(e, ERR_INPUT, "%s too long: %s", what, src);
    return 0;
}

static int read_small_file(const char *path, char **out, size_t *len, err_t *e)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_set(e, ERR_INPUT, "shortcuts file %s: %s", path, strerror(errno));
    char *buf = malloc(SHORTCUTS_MAX);
    size_t n = buf ? fread(buf, 1, SHORTCUTS_MAX, f) : 0;
    int bad = !buf || ferror(f) || n == SHORTCUTS_MAX;
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(e, ERR_INPUT, "shortcuts file %s: unreadable or over 1 MB", path);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* A node directory to cover inside, by its real path (what a distro that
 * includes it - the host distro - would show). */
static void hide_path(char *dst, size_t len, const char *dir)
{
    char *real = dir ? realpath(dir, NULL) : NULL;
    snprintf(dst, len, "%s", real ? real : "");
    free(real);
}

/* mkdir dir/name (owned by root and `gid`, exactly `mode`), refusing anything
 * but a real directory: the node created it, nobody else can write the parent. */
static int root_dir_at(int dir, const char *name, gid_t gid, mode_t mode, const char *what,
                       err_t *e)
{
    if (mkdirat(dir, name, mode) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create %s: %s", what, strerror(errno));
    int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", what, strerror(errno));
    if (fchown(fd, 0, gid) < 0 || fchmod(fd, mode) < 0) {
        int err = errno;
        close(fd);
        return err_set(e, ERR_INTERNAL, "set owner and mode of %s: %s", what, strerror(err));
    }
    return fd;
}

/* <sockets_dir>/<uid>/run: where the container's vassals create their
 * sockets (mounted on the home's run/) and where the router finds them.
 * Sticky and world-writable, owned by root: the kernel's protected_symlinks
 * then keeps the router from following a symlink the customer leaves in it.
 * Only this container (and root) can see it.  The router runs unprivileged
 * (router.h): its group may only search <uid>/ (0710) and run/ (03717: the
 * group bits, not the world's, apply to it, so it cannot list or add), and
 * set-gid makes every socket made in run/ the router's group's, which the
 * platform's chmod-socket = 660 (etc/uwsgi/shortcuts.ini) lets it connect to. */
static int prepare_sockets_dir(const node_cfg_t *cfg, int uid, char *out, size_t len, err_t *e)
{
    char what[RT_PATH];
    int top = open(cfg->sockets_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", cfg->sockets_dir, strerror(errno));
    char name[16];
    snprintf(name, sizeof name, "%d", uid);
    snprintf(what, sizeof what, "%s/%s", cfg->sockets_dir, name);
    int mid = root_dir_at(top, name, cfg->sockets_gid, 0710, what, e);
    close(top);
    if (mid < 0)
        return -1;
    if (snprintf(out, len, "%s/%s/run", cfg->sockets_dir, name) >= (int)len) {
        close(mid);
        return err_set(e, ERR_INPUT, "path too long: %s/%s/run", cfg->sockets_dir, name);
    }
    int run = root_dir_at(mid, "run", cfg->sockets_gid, 03717, out, e);
    close(mid);
    if (run < 0)
        return -1;
    close(run);
    return 0;
}

/* rootfs: the tree to boot (s->rootfs, or a custom distro's staged one). */
static int plan_build(const node_cfg_t *cfg, const container_spec_t *s, const char *rootfs,
                      const cgroup_t *cg, rt_plan_t *p, char **shortcuts, err_t *e)
{
    p->uid = s->uid;
    p->sync_fd = -1;
    p->init_fd = -1;
    p->nofollow = s->nofollow;
    snprintf(p->cluster, sizeof p->cluster, "%s", s->cluster[0] ? s->cluster : RT_NO_CLUSTER);
    if (copy(p->hostname, sizeof p->hostname, s->hostname, "hostname", e) < 0 ||
        copy(p->rootfs, sizeof p->rootfs, rootfs, "distro path", e) < 0 ||
        copy(p->home, sizeof p->home, s->home, "home path", e) < 0 ||
        state_path(cfg->state_dir, s->uid, "rootfs", p->staging, sizeof p->staging, e) < 0 ||
        cgroup_file(cg, 0, p->cg_limit, sizeof p->cg_limit, e) < 0 ||
        cgroup_file(cg, 1, p->cg_usage, sizeof p->cg_usage, e) < 0)
        return -1;
    hide_path(p->hide[0], sizeof p->hide[0], cfg->containers_dir);
    hide_path(p->hide[1], sizeof p->hide[1], cfg->state_dir);
    if (cfg->subscribe_dir &&
        copy(p->subscribe, sizeof p->subscribe, cfg->subscribe_dir, "router directory", e) < 0)
        return -1;
    if (cfg->sockets_dir &&
        prepare_sockets_dir(cfg, s->uid, p->sockets_run, sizeof p->sockets_run, e) < 0)
        return -1;
    snprintf(p->home_inside, sizeof p->home_inside, "/containers/%d", s->uid);
    snprintf(p->log_inside, sizeof p->log_inside, "%s/logs/emperor.log", p->home_inside);
    /* The limit `quota -s` shows: storage, unless the node keeps none. */
    long long limit = cfg->quota != QUOTA_OFF ? s->storage_mb : 0;
    if ((p->quota_cmd_len = quota_script(p->quota_cmd, sizeof p->quota_cmd, p->home_inside,
                                         limit)) < 0)
        return err_set(e, ERR_INTERNAL, "the quota command does not fit its buffer");
    p->log_maxsize = cfg->emperor_log_maxsize > 0 ? cfg->emperor_log_maxsize
                                                  : NODE_DEFAULT_EMPEROR_LOG_MAXSIZE;
    if (cfg->shortcuts) {
        if (read_small_file(cfg->shortcuts, shortcuts, &p->shortcuts_len, e) < 0)
            return -1;
        p->shortcuts = *shortcuts;
    }
    return rt_emperor_plan(p, cfg->uwsgi, cfg->shortcuts != NULL, e);
}

/* imperium-init: cfg->init, or beside the running program (make builds
 * them into one directory).  Opened O_PATH: the child execs it through the
 * descriptor once the host's files are out of its sight. */
static int open_init(const node_cfg_t *cfg, err_t *e)
{
    char path[PATH_MAX];
    if (cfg->init) {
        if (copy(path, sizeof path, cfg->init, "init path", e) < 0)
            return -1;
    } else if (fs_beside_self(NODE_INIT_NAME, path, sizeof path, e) < 0) {
        return -1;
    }
    int fd = open(path, O_PATH | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL,
                       "the container init %s: %s (install it beside imperium-node or in ../lib/imperium, or set "
                       "init = PATH in the node's config)",
                       path, strerror(err));
    }
    /* It runs as the container's uid: executable by others, and root's. */
    if (!S_ISREG(sb.st_mode) || !(sb.st_mode & S_IXOTH) || sb.st_uid != 0 ||
        (sb.st_mode & 022)) {
        close(fd);
        return err_set(e, ERR_INTERNAL,
                       "the container init %s must be a regular file owned by root, "
                       "executable by all and writable by root only",
                       path);
    }
    return fd;
}

/* ---- the child ------------------------------------------------------------ */

/* The sync socket on RT_INIT_SYNC_FD (kept across exec), imperium-init on
 * RT_INIT_EXE_FD, and nothing else but stdio (replaced next): none of the
 * node's descriptors may reach the container. */
static int arrange_fds(rt_plan_t *p, err_t *e)
{
    /* Out of the way first, so neither dup3 below closes the other. */
    int sync = fcntl(p->sync_fd, F_DUPFD_CLOEXEC, 16);
    int exe = fcntl(p->init_fd, F_DUPFD_CLOEXEC, 16);
    if (sync < 0 || exe < 0 || dup3(sync, RT_INIT_SYNC_FD, 0) < 0 ||
        dup3(exe, RT_INIT_EXE_FD, O_CLOEXEC) < 0)
        return rt_fail(e, "arrange the init's descriptors");
    p->sync_fd = RT_INIT_SYNC_FD;
    p->init_fd = RT_INIT_EXE_FD;
    if (close_range(RT_INIT_EXE_FD + 1, ~0U, 0) < 0) {
        if (errno != ENOSYS && errno != EINVAL)
            return rt_fail(e, "close the node's descriptors");
        long max = sysconf(_SC_OPEN_MAX); /* before Linux 5.9 */
        for (long fd = RT_INIT_EXE_FD + 1; fd < (max > 0 ? max : 65536); fd++)
            close((int)fd);
    }
    return 0;
}

static int null_stdio(err_t *e)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return rt_fail(e, "open /dev/null");
    for (int i = 0; i < 3; i++)
        if (dup2(fd, i) < 0) {
            close(fd);
            return rt_fail(e, "stdio to /dev/null");
        }
    close(fd);
    return 0;
}

static void child_main(rt_plan_t *p) __attribute__((noreturn));

static void child_main(rt_plan_t *p)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    umask(022); /* what the Emperor and the vassals start with */
    err_t e;
    err_clear(&e);
    /* Nothing of the node's stdio (a terminal, a test's pipes) stays open
     * in a container that outlives the command that started it. */
    if (arrange_fds(p, &e) < 0 || null_stdio(&e) < 0) {
        rt_report(p, &e);
        _exit(1);
    }
    char go;
    if (read(p->sync_fd, &go, 1) != 1)
        _exit(1); /* the parent gave up */
    setsid();     /* leave the node's session: no terminal signals reach us */

    if (rt_enter_cgroup_ns(&e) < 0 || rt_mounts(p, &e) < 0 || rt_set_hostname(p, &e) < 0 ||
        rt_loopback_up(&e) < 0 || rt_uwsgi0_up(p, &e) < 0 ||
        rt_drop_privileges(p->uid, &e) < 0)
        rt_report(p, &e);
    else if (rt_exec_init(p, &e) < 0)
        rt_report(p, &e);
    _exit(1);
}

/* ---- start ---------------------------------------------------------------- */

/* Read the child's report until EOF; "" means the Emperor runs. */
static int read_report(int fd, char *msg, size_t len, err_t *e)
{
    size_t used = 0;
    long long deadline = now_ms() + SETUP_TIMEOUT_MS;
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return err_set(e, ERR_INTERNAL, "container setup timed out");
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_set(e, ERR_INTERNAL, "setup report: %s", strerror(errno));
        if (r == 0)
            continue;
        ssize_t n = read(fd, msg + used, len - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_set(e, ERR_INTERNAL, "setup report: %s", strerror(errno));
        if (n == 0 || used + (size_t)n >= len - 1) {
            used += n > 0 ? (size_t)n : 0;
            msg[used] = '\0';
            return 0;
        }
        used += (size_t)n;
    }
}

/* Kill a child that failed its setup and collect it. */
static void kill_child(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* In the window between the cgroup join and "go": the child's veth. */
static int attach(const rt_plan_t *p, pid_t pid, err_t *e)
{
    return p->net.on ? net_attach(&p->net, p->uid, pid, e) : 0;
}

/* Clone the child, put it in the cgroup, give it its veth, let it go, wait
 * for its report. */
static int spawn(rt_plan_t *p, const cgroup_t *cg, pid_t *out, err_t *e)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return err_set(e, ERR_INTERNAL, "socketpair: %s", strerror(errno));
    p->sync_fd = sv[1];
    pid_t pid = rt_clone(RT_CLONE_FLAGS);
    if (pid == 0)
        child_main(p);
    int err = errno;
    close(sv[1]);
    int rc = -1;
    char msg[sizeof e->msg];
    if (pid < 0) {
        err_set(e, ERR_INTERNAL, "clone with new namespaces: %s", strerror(err));
    } else if (cgroup_add(cg, pid, e) < 0 || attach(p, pid, e) < 0) {
        kill_child(pid);
    } else if (send(sv[0], "g", 1, MSG_NOSIGNAL) != 1) {
        /* The child is gone already; it may have said why. */
        err = errno;
        if (read_report(sv[0], msg, sizeof msg, NULL) < 0 || !msg[0])
            snprintf(msg, sizeof msg, "start the container's init: %s", strerror(err));
        err_set(e, ERR_INTERNAL, "%s", msg);
        kill_child(pid);
    } else if (read_report(sv[0], msg, sizeof msg, e) < 0) {
        kill_child(pid);
    } else if (msg[0]) {
        err_set(e, ERR_INTERNAL, "%s", msg);
        kill_child(pid);
    } else {
        *out = pid;
        rc = 0;
    }
    close(sv[0]);
    return rc;
}

/* ---- the start sequence: a list of steps -----------------------------------
 *
 * Each step fills an err_t that names what failed (the messages tests and
 * customers see); a step with an undo has it run, in reverse order, when a
 * later step fails.  Networking, the disk quota and loopboxes are new rows. */

typedef struct {
    const node_cfg_t *cfg;
    const container_spec_t *s;
    int init_fd;         /* imperium-init, O_PATH (-1: not open) */
    cgroup_t cg;
    rt_plan_t *plan;     /* what the child reads (runtime.h) */
    char *shortcuts;     /* the shortcuts file's text, for the plan */
    pid_t pid;           /* the container's init, once cloned */
    unsigned long long starttime;
    char rootfs[RT_PATH]; /* a custom distro's tree to boot ("": s->rootfs) */
    char staging[RT_PATH]; /* the staging mount point, its holder's home on it ("": none) */
} start_ctx_t;

static int step_check(start_ctx_t *c, err_t *e) { return check_spec(c->s, e); }

/* ---- a custom distro: its holder's home, mounted for the start only -------
 *
 * The tree is distros/<path> in the home of another container (the
 * holder), whose home is an ext4 image (quota.h) that is mounted on the
 * host only while the holder runs.  For the start, the image is mounted on
 * <state_dir>/<uid>/distro (root-only, the node's), reusing the holder's
 * loop device when it has one (one superblock); the child clones the
 * tree as its root (mounts.c, no symlink followed) and, once it ran or
 * failed, the staging mount is detached (unstage_custom_distro): nothing
 * stays mounted on the host, the container keeps its clone, and the
 * holder may run or not.  A home without an image (quota = off) is used
 * in place. */

#define DISTRO_STAGING "distro"
#define STALE_UNMOUNTS_MAX 8

/* umount2 <state>/<uid>/distro until nothing is mounted there: a node that
 * died during a start leaves its staging mount (the path is the node's,
 * root-only: no customer can redirect it). */
static int clear_staging(const char *path, err_t *e)
{
    for (int i = 0; i < STALE_UNMOUNTS_MAX; i++)
        if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            return errno == EINVAL || errno == ENOENT
                       ? 0
                       : err_set(e, ERR_INTERNAL, "detach %s: %s", path, strerror(errno));
    return err_set(e, ERR_INTERNAL, "%s: still mounted after %d detaches", path,
                   STALE_UNMOUNTS_MAX);
}

/* The directory dir (at path) bound on itself, that bind private: the
 * holder's home mounted on it then never propagates to the host's peer
 * namespaces (sshd's, where customers' sessions start).  Private once
 * attached: a mount attached under a shared one is made shared by the
 * kernel.  The bind alone reaches the peers (an empty root-only
 * directory), and goes from them when clear_staging detaches it. */
static int private_mountpoint(int dir, const char *path, err_t *e)
{
    int bind = open_tree(dir, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (bind < 0)
        return err_set(e, ERR_INTERNAL, "bind %s: %s", path, strerror(errno));
    struct mount_attr attr = {.propagation = MS_PRIVATE};
    int rc = 0;
    if (move_mount(bind, "", dir, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0 ||
        mount_setattr(bind, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        rc = err_set(e, ERR_INTERNAL, "make %s a private mount point: %s", path,
                     strerror(errno));
        clear_staging(path, NULL);
    }
    close(bind);
    return rc;
}

/* The node's directory <state>/<uid>/distro (root, 0700), a private mount
 * point of its own (nothing else mounted there); an O_PATH descriptor of
 * it. */
static int staging_dir(start_ctx_t *c, char *path, size_t len, err_t *e)
{
    char dir[RT_PATH];
    if (state_path(c->cfg->state_dir, c->s->uid, NULL, dir, sizeof dir, e) < 0 ||
        state_path(c->cfg->state_dir, c->s->uid, DISTRO_STAGING, path, len, e) < 0 ||
        clear_staging(path, e) < 0)
        return -1;
    int top = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", dir, strerror(errno));
    int fd = root_dir_at(top, DISTRO_STAGING, 0, 0700, path, e);
    close(top);
    if (fd < 0)
        return -1;
    int rc = private_mountpoint(fd, path, e);
    close(fd);
    if (rc < 0)
        return -1;
    /* Opened now: the bind on top, where the holder's home goes. */
    if ((fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", path, strerror(errno));
    return fd;
}

/* distros/<path> below base (the staged or in-place home): a directory,
 * reached without a symbolic link (the child resolves it the same way). */
static int find_distro_tree(const container_spec_t *s, const char *base, err_t *e)
{
    const char *p = s->rootfs_custom;
    int home = open(base, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (home < 0)
        return err_set(e, ERR_INPUT, "custom distro %s: container %d has no home on this node",
                       p, s->rootfs_holder);
    char rel[300];
    snprintf(rel, sizeof rel, "distros/%s", p);
    int fd = beneath_open(home, rel, O_PATH | O_DIRECTORY, 0, 0);
    int err = errno;
    close(home);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (err == ENOENT)
        return err_set(e, ERR_INPUT,
                       "custom distro %s: directory distros/%s missing in the home of "
                       "container %d",
                       p, p, s->rootfs_holder);
    if (err == ELOOP)
        return err_set(e, ERR_INPUT,
                       "custom distro %s: distros/%s in the home of container %d is (or goes "
                       "through) a symbolic link, not a directory",
                       p, p, s->rootfs_holder);
    if (err == ENOTDIR)
        return err_set(e, ERR_INPUT,
                       "custom distro %s: distros/%s in the home of container %d is not a "
                       "directory",
                       p, p, s->rootfs_holder);
    return err_set(e, ERR_INPUT, "custom distro %s: distros/%s in the home of container %d: %s",
                   p, p, s->rootfs_holder, strerror(err));
}

/* e's message behind "custom distro <path> ... of container <holder>: ". */
static int custom_context(err_t *e, const container_spec_t *s, const char *doing)
{
    char was[sizeof e->msg];
    snprintf(was, sizeof was, "%s", e->msg);
    return err_set(e, e->kind != ERR_NONE ? e->kind : ERR_INTERNAL,
                   "%s custom distro %s of container %d: %s", doing, s->rootfs_custom,
                   s->rootfs_holder, was);
}

static void unstage_custom_distro(start_ctx_t *c)
{
    if (c->staging[0])
        clear_staging(c->staging, NULL);
    c->staging[0] = '\0';
}

static int step_custom_distro(start_ctx_t *c, err_t *e)
{
    const container_spec_t *s = c->s;
    if (s->rootfs_holder <= 0)
        return 0;
    if (!c->cfg->containers_dir)
        return err_set(e, ERR_INPUT, "custom distro %s: the containers directory is not set",
                       s->rootfs_custom);
    char path[RT_PATH], base[RT_PATH];
    int dir = staging_dir(c, path, sizeof path, e);
    if (dir < 0)
        return -1;
    snprintf(c->staging, sizeof c->staging, "%s", path); /* its bind: detached at the end */
    int mounted = quota_mount_home_at(c->cfg->containers_dir, s->rootfs_holder, dir, e);
    close(dir);
    if (mounted < 0)
        return custom_context(e, s, "mounting");
    int n = mounted ? snprintf(base, sizeof base, "%s", path)
                    : snprintf(base, sizeof base, "%s/%d", c->cfg->containers_dir,
                               s->rootfs_holder);
    if (n < 0 || (size_t)n >= sizeof base ||
        snprintf(c->rootfs, sizeof c->rootfs, "%s/distros/%s", base, s->rootfs_custom) >=
            (int)sizeof c->rootfs)
        return err_set(e, ERR_INPUT, "custom distro %s: path too long", s->rootfs_custom);
    return find_distro_tree(s, base, e);
}

static int step_open_init(start_ctx_t *c, err_t *e)
{
    return (c->init_fd = open_init(c->cfg, e)) < 0 ? -1 : 0;
}

/* The disk quota applies to homes in their place, <containers_dir>/<uid>
 * (the debug CLI may name another: it has none). */
static bool quota_applies(const start_ctx_t *c)
{
    char want[RT_PATH];
    return c->cfg->containers_dir &&
           snprintf(want, sizeof want, "%s/%d", c->cfg->containers_dir, c->s->uid) <
               (int)sizeof want &&
           strcmp(want, c->s->home) == 0;
}

/* After the supervisor claimed the home (home_claim) and before the
 * layout is written: the home's image is created, converted from a plain
 * home, grown, and mounted (quota.h). */
static int step_quota(start_ctx_t *c, err_t *e)
{
    if (!quota_applies(c))
        return 0;
    /* The daemon made it at its start; the debug CLI may come first. */
    if (fs_mkdirs(c->cfg->containers_dir, 0755, e) < 0)
        return -1;
    return quota_prepare(c->cfg->quota, c->cfg->containers_dir, c->s->uid, c->s->storage_mb, e);
}

static void undo_quota(start_ctx_t *c)
{
    if (quota_applies(c))
        quota_release(c->cfg->quota, c->cfg->containers_dir, c->s->uid, NULL);
}

static int step_home(start_ctx_t *c, err_t *e) { return home_prepare(c->s, e); }

/* memory, pids, cpu and io, before the child exists: it enters them
 * before it does anything else. */
static int step_cgroups(start_ctx_t *c, err_t *e)
{
    cgroup_limits_t lim = {c->s->memory_mb, c->cfg->pids_max, c->cfg->cpu_weight,
                           c->cfg->io_weight};
    return cgroup_locate(c->cfg->cgroup_root, c->cfg->cgroup_parent, c->s->uid, &c->cg, e) < 0 ||
                   cgroup_create(&c->cg, &lim, e) < 0
               ? -1
               : 0;
}

static void undo_cgroups(start_ctx_t *c) { cgroup_destroy(&c->cg, NULL); }

/* Everything the child needs, formatted now: it must not allocate. */
static int step_plan(start_ctx_t *c, err_t *e)
{
    if (!(c->plan = calloc(1, sizeof *c->plan)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (plan_build(c->cfg, c->s, c->rootfs[0] ? c->rootfs : c->s->rootfs, &c->cg, c->plan,
                   &c->shortcuts, e) < 0)
        return -1;
    c->plan->init_fd = c->init_fd;
    return 0;
}

/* The network part of the plan: the spec's net_spec_t, checked by
 * spec_runtime (net_spec_fill) against the node's container network. */
static int step_net_plan(start_ctx_t *c, err_t *e)
{
    char host[NET_IFNAME_MAX];
    c->plan->net = c->s->net;
    if (c->s->net.on && net_host_name(c->s->net.prefix, c->s->uid, host, sizeof host, e) < 0)
        return -1;
    return 0;
}

/* The host end of the veth, now, rather than when the kernel gets round to
 * the dead namespace: a failed start leaves no interface behind. */
static void undo_net(start_ctx_t *c)
{
    if (c->plan && c->plan->net.on)
        net_detach(c->plan->net.prefix, c->s->uid, NULL);
}

/* Clone with new namespaces, cgroups, the veth, mounts, hostname, uwsgi0,
 * the drop to the uid, imperium-init, the Emperor: spawn() reports the
 * child's failing step and kills a child that failed. */
static int step_spawn(start_ctx_t *c, err_t *e)
{
    if (spawn(c->plan, &c->cg, &c->pid, e) == 0)
        return 0;
    undo_net(c); /* its own undo runs only when a later step fails */
    /* What the child could not do with a customer's tree, said as such. */
    return c->s->rootfs_holder > 0 ? custom_context(e, c->s, "booting") : -1;
}

/* The init's start time: what adoption compares after a pid reuse. */
static int step_confirm(start_ctx_t *c, err_t *e)
{
    if (proc_stat(c->pid, &c->starttime, NULL) < 0)
        return err_set(e, ERR_INTERNAL, "the container's init %d died during setup", (int)c->pid);
    return 0;
}

static const struct step {
    const char *name;
    int (*run)(start_ctx_t *c, err_t *e);
    void (*undo)(start_ctx_t *c); /* NULL: nothing to undo */
} start_steps[] = {
    {"check the spec", step_check, NULL},
    {"mount the custom distro", step_custom_distro, NULL},
    {"open the container init", step_open_init, NULL},
    {"mount the home", step_quota, undo_quota},
    {"prepare the home", step_home, NULL},
    {"create the cgroups", step_cgroups, undo_cgroups},
    {"plan the container's setup", step_plan, NULL},
    {"plan the network", step_net_plan, NULL},
    {"start the container", step_spawn, undo_net},
    {"confirm the init", step_confirm, NULL},
};
#define N_START_STEPS (sizeof start_steps / sizeof *start_steps)

/* Run the steps in order; after a failure, the undos of those done. */
static int run_steps(start_ctx_t *c, err_t *e)
{
    for (size_t i = 0; i < N_START_STEPS; i++) {
        if (start_steps[i].run(c, e) == 0)
            continue;
        if (e->kind == ERR_NONE) /* a step that forgot to say why */
            err_set(e, ERR_INTERNAL, "%s failed", start_steps[i].name);
        while (i-- > 0)
            if (start_steps[i].undo)
                start_steps[i].undo(c);
        return -1;
    }
    return 0;
}

static int start(const node_cfg_t *cfg, const container_spec_t *s, state_t *st, pid_t *pid,
                 err_t *e)
{
    start_ctx_t c = {.cfg = cfg, .s = s, .init_fd = -1};
    int rc = run_steps(&c, e);
    /* The child holds its clone of the tree (or failed): the staging goes. */
    unstage_custom_distro(&c);
    /* Needed only until the child has exec'd imperium-init. */
    if (c.init_fd >= 0)
        close(c.init_fd);
    free(c.shortcuts);
    free(c.plan);
    if (rc < 0)
        return -1;
    *pid = c.pid;
    /* pid != 0 in the old state: that run ended without container_stop. */
    st->restarts += st->pid != 0;
    st->pid = c.pid;
    st->starttime = c.starttime;
    snprintf(st->cgroup, sizeof st->cgroup, "%s", c.cg.dir);
    return 0;
}

int container_start(const node_cfg_t *cfg, const container_spec_t *s, pid_t *pid, err_t *e)
{
    state_t st;
    err_t local;
    if (!e)
        e = &local;
    err_clear(e);
    if (check_cfg(cfg, e) < 0 || state_load(cfg->state_dir, s->uid, &st, e) < 0)
        return -1;
    if (state_init_alive(&st))
        return err_set(e, ERR_CONFLICT, "container %d is already running (init pid %d)", s->uid,
                       (int)st.pid);
    if (state_prepare(cfg->state_dir, s->uid, e) < 0)
        return -1;
    st.since = (long long)time(NULL);
    st.generation = s->generation;
    st.ssh_generation = s->ssh_generation;
    if (start(cfg, s, &st, pid, e) < 0) {
        /* Remembered for status.last_error; the error itself is returned. */
        st.pid = 0;
        st.starttime = 0;
        snprintf(st.last_error, sizeof st.last_error, "%s", e->msg);
        state_save(cfg->state_dir, &st, NULL);
        return -1;
    }
    st.last_error[0] = '\0';
    if (state_save(cfg->state_dir, &st, e) < 0) {
        /* Unrecorded, it could never be adopted or stopped: undo it. */
        cgroup_t cg;
        kill_child(*pid);
        if (s->net.on)
            net_detach(s->net.prefix, s->uid, NULL);
        if (cgroup_from_dir(st.cgroup, &cg, NULL) == 0)
            cgroup_destroy(&cg, NULL);
        return -1;
    }
    return 0;
}

/* ---- stop, find, status, keys --------------------------------------------- */

/* Wait until the recorded init is gone (reaping it if it is our child). */
static bool wait_gone(const state_t *st, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        waitpid(st->pid, NULL, WNOHANG);
        if (!state_init_alive(st))
            return true;
        if (waited >= timeout_ms)
            return false;
        sleep_ms(20);
    }
}

int container_stop(const node_cfg_t *cfg, int uid, int timeout_ms, err_t *e)
{
    state_t st;
    err_t local;
    if (!e)
        e = &local;
    err_clear(e);
    if (!cfg->state_dir)
        return err_set(e, ERR_INPUT, "the state directory is not configured");
    int have = state_load(cfg->state_dir, uid, &st, e);
    if (have < 0)
        return -1;
    if (have == 0)
        return 0; /* never started here */
    if (state_init_alive(&st)) {
        /* init forwards SIGTERM to the Emperor, which stops its vassals. */
        kill(st.pid, SIGTERM);
        if (!wait_gone(&st, timeout_ms)) {
            kill(st.pid, SIGKILL); /* the kernel then kills the whole pid namespace */
            wait_gone(&st, 2000);
        }
    }
    cgroup_t cg;
    if (st.cgroup[0] && (cgroup_from_dir(st.cgroup, &cg, e) < 0 || cgroup_destroy(&cg, e) < 0))
        return -1;
    if (state_init_alive(&st))
        return err_set(e, ERR_INTERNAL, "container %d: init %d survives SIGKILL", uid, (int)st.pid);
    /* The kernel deletes the veth with the namespace, but asynchronously:
     * gone now, so a stopped container leaves nothing and a restart finds
     * no stale name. */
    if (cfg->net.on && net_detach(cfg->net.prefix, uid, e) < 0)
        return -1;
    st.pid = 0;
    st.starttime = 0;
    st.since = (long long)time(NULL);
    st.last_error[0] = '\0';
    if (state_save(cfg->state_dir, &st, e) < 0)
        return -1;
    /* Recorded as stopped first: a home a host process keeps busy fails
     * here (said, retried at the next stop or start), nothing else. */
    if (cfg->containers_dir && quota_release(cfg->quota, cfg->containers_dir, uid, e) < 0)
        return -1;
    return 0;
}

bool container_find(const node_cfg_t *cfg, int uid, pid_t *pid)
{
    state_t st;
    if (!cfg->state_dir || state_load(cfg->state_dir, uid, &st, NULL) <= 0 ||
        !state_init_alive(&st))
        return false;
    if (pid)
        *pid = st.pid;
    return true;
}

bool container_is_running(const node_cfg_t *cfg, int uid) { return container_find(cfg, uid, NULL); }

int container_status(const node_cfg_t *cfg, int uid, container_status_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!cfg->state_dir)
        return err_set(e, ERR_INPUT, "the state directory is not configured");
    if (state_load(cfg->state_dir, uid, &out->rec, e) < 0)
        return -1;
    if (state_init_alive(&out->rec)) {
        out->state = CONTAINER_RUNNING;
        return 0;
    }
    out->state = out->rec.last_error[0] ? CONTAINER_FAILED : CONTAINER_STOPPED;
    out->rec.pid = 0;
    out->rec.starttime = 0;
    return 0;
}

const char *container_state_name(container_state_t s)
{
    switch (s) {
    case CONTAINER_RUNNING:
        return "running";
    case CONTAINER_FAILED:
        return "failed";
    case CONTAINER_STOPPED:
        break;
    }
    return "stopped";
}

json_t *container_status_json(const container_status_t *st)
{
    const state_t *r = &st->rec;
    json_t *pid = r->pid > 0 ? json_integer(r->pid) : json_null();
    json_t *last = r->last_error[0] ? json_string(r->last_error) : json_null();
    json_t *cg = r->cgroup[0] ? json_string(r->cgroup) : json_null();
    return json_pack("{s:i,s:s,s:o,s:I,s:I,s:o,s:I,s:I,s:o}", "uid", r->uid, "state",
                     container_state_name(st->state), "pid", pid, "since", (json_int_t)r->since,
                     "restarts", (json_int_t)r->restarts, "last_error", last, "generation",
                     (json_int_t)r->generation, "ssh_generation", (json_int_t)r->ssh_generation,
                     "cgroup", cg);
}

int container_write_keys(const node_cfg_t *cfg, const container_spec_t *s, err_t *e)
{
    err_t local;
    if (!e)
        e = &local;
    err_clear(e);
    if (!s->home || s->home[0] != '/')
        return err_set(e, ERR_INPUT, "the home must be an absolute path");
    if (home_write_keys(s, e) < 0)
        return -1;
    state_t st;
    int have = cfg->state_dir ? state_load(cfg->state_dir, s->uid, &st, e) : 0;
    if (have < 0)
        return -1;
    if (have == 0)
        return 0;
    st.ssh_generation = s->ssh_generation;
    return state_save(cfg->state_dir, &st, e);
}
