/* mounts.c - the container's filesystem, built in its own mount namespace.
 *
 * 1. Propagation private, so nothing we mount reaches the host.
 * 2. While host paths are still reachable, clone (open_tree) what will be
 *    bound inside: the distro, the home and its logs/ and tmp/, the cgroup
 *    files, a few device nodes.
 * 3. pivot_root into the distro and detach the host's root.
 * 4. Mount on top, resolving every target with RESOLVE_NO_SYMLINKS: a
 *    distro may be the customer's own (custom distros), and a symlink in it
 *    must not redirect a mount.
 * 5. Make the home's mount shared (a peer group of its own: nothing here
 *    is shared with the host), so that an ssh session's namespace, a
 *    slave of it (imperium-enter), sees the mounts made under the home
 *    later (loopboxes); make / read-only, nosuid, nodev.
 * The table of what ends where is in docs/NODE.md. */
#include "runtime.h"

#include "../common/beneath.h"
#include "quota.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HOME_ATTRS (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
#define RO_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
#define N_DEV (sizeof dev_nodes / sizeof dev_nodes[0])

/* Directories every distro must offer as mountpoints (created when
 * missing, in practice only /containers). */
static const char *const mountpoints[] = {"proc",    "dev",       "run",        "tmp", "var/tmp",
                                          "var/log", "usr/local", "containers", NULL};

/* Detached mount trees cloned before pivot_root, by use. */
enum {
    S_ROOT,
    S_HOME,
    S_USR_LOCAL,
    S_LOGS,
    S_TMP,
    S_VAR_TMP,
    S_HOSTS,
    S_RESOLV,
    S_CG_LIMIT,
    S_CG_USAGE,
    S_SUBSCRIBE,
    S_SOCKETS,
    S_DEV,
    S_COUNT = S_DEV + N_DEV
};
struct sources {
    int fd[S_COUNT];
};

static int fail_at(err_t *e, const char *step, const char *path)
{
    const char *desc = strerrordesc_np(errno);
    return err_set(e, ERR_INTERNAL, "%s %s: %s", step, path, desc ? desc : "unknown error");
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int openat2_path(int dfd, const char *path, int flags)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_PATH | O_CLOEXEC);
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dfd, path, &how, sizeof how);
}

/* A detached copy of the mount at dfd/path (just that mount, not the ones
 * below it), with attrs set before it is attached anywhere. */
static int clone_tree(int dfd, const char *path, unsigned long long attrs, const char *what,
                      err_t *e)
{
    int fd = open_tree(dfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (fd < 0)
        return fail_at(e, "clone", what);
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = attrs;
    if (attrs && mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof a) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return fail_at(e, "set attributes of", what);
    }
    return fd;
}

static int clone_rootfs(const rt_plan_t *p, err_t *e)
{
    int fd = openat2_path(AT_FDCWD, p->rootfs, O_DIRECTORY);
    if (fd < 0) {
        if (errno == ENOENT)
            return err_set(e, ERR_INPUT, "distro directory %s missing", p->rootfs);
        if (errno == ELOOP)
            return err_set(e, ERR_INPUT, "distro directory %s: a symbolic link in the path",
                           p->rootfs);
        return fail_at(e, "distro directory", p->rootfs);
    }
    /* Read-write for now: missing mountpoints may need creating (step 4). */
    int t = clone_tree(fd, "", 0, "the distro", e);
    close(fd);
    return t;
}

static int clone_home_sources(int home, struct sources *s, err_t *e)
{
    static const struct {
        int slot;
        const char *name, *what;
        int dir;
        unsigned long long attrs;
    } list[] = {
        {S_HOME, ".", "the home", 1, HOME_ATTRS},
        {S_USR_LOCAL, ".", "the home", 1, HOME_ATTRS},
        {S_LOGS, "logs", "home logs/", 1, HOME_ATTRS},
        {S_TMP, "tmp", "home tmp/", 1, HOME_ATTRS},
        {S_VAR_TMP, "tmp", "home tmp/", 1, HOME_ATTRS},
        /* They shadow the distro's /etc/hosts and /etc/resolv.conf. */
        {S_HOSTS, "etc/hosts", "home etc/hosts", 0, RO_ATTRS},
        {S_RESOLV, "etc/resolv.conf", "home etc/resolv.conf", 0, RO_ATTRS},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        int fd = openat2_path(home, list[i].name, list[i].dir ? O_DIRECTORY : 0);
        if (fd < 0)
            return fail_at(e, "open", list[i].what);
        s->fd[list[i].slot] = clone_tree(fd, "", list[i].attrs, list[i].what, e);
        close(fd);
        if (s->fd[list[i].slot] < 0)
            return -1;
    }
    return 0;
}

static int clone_sources(const rt_plan_t *p, struct sources *s, err_t *e)
{
    if ((s->fd[S_ROOT] = clone_rootfs(p, e)) < 0)
        return -1;
    int home = open(p->home, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (home < 0)
        return fail_at(e, "open home", p->home);
    int rc = clone_home_sources(home, s, e);
    close(home);
    if (rc < 0)
        return -1;
    if ((s->fd[S_CG_LIMIT] = clone_tree(AT_FDCWD, p->cg_limit, RO_ATTRS, p->cg_limit, e)) < 0 ||
        (s->fd[S_CG_USAGE] = clone_tree(AT_FDCWD, p->cg_usage, RO_ATTRS, p->cg_usage, e)) < 0)
        return -1;
    /* The HTTP router's subscription socket directory, read-only (a unix
     * socket on a read-only mount can still be sent to). */
    if (p->subscribe[0] &&
        (s->fd[S_SUBSCRIBE] = clone_tree(AT_FDCWD, p->subscribe, RO_ATTRS, p->subscribe, e)) < 0)
        return -1;
    /* The node's sticky socket directory, on the home's run/ (router.c). */
    if (p->sockets_run[0] &&
        (s->fd[S_SOCKETS] = clone_tree(AT_FDCWD, p->sockets_run, HOME_ATTRS | MOUNT_ATTR_NOEXEC,
                                       p->sockets_run, e)) < 0)
        return -1;
    for (size_t i = 0; i < N_DEV; i++) {
        char what[64];
        snprintf(what, sizeof what, "/dev/%s", dev_nodes[i]);
        /* Device nodes need dev (no MOUNT_ATTR_NODEV) on their own mount. */
        s->fd[S_DEV + i] =
            clone_tree(AT_FDCWD, what, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, what, e);
        if (s->fd[S_DEV + i] < 0)
            return -1;
    }
    return 0;
}

static int enter_rootfs(const rt_plan_t *p, struct sources *s, err_t *e)
{
    if (move_mount(s->fd[S_ROOT], "", AT_FDCWD, p->staging, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail_at(e, "mount the distro on", p->staging);
    close_fd(&s->fd[S_ROOT]);
    if (chdir(p->staging) < 0)
        return fail_at(e, "chdir", p->staging);
    /* pivot_root(".", "."): the old root ends up stacked on the new one and
     * is detached right away (pivot_root(2), NOTES). */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return rt_fail(e, "pivot_root into the distro");
    if (umount2(".", MNT_DETACH) < 0)
        return rt_fail(e, "detach the host's root");
    if (chdir("/") < 0)
        return rt_fail(e, "chdir /");
    return 0;
}

/* mkdir -p below / without following any symlink. */
static int ensure_dir(const char *path, err_t *e)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    int dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return rt_fail(e, "open /");
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        int fd = openat2_path(dfd, c, O_DIRECTORY);
        if (fd < 0 && errno == ENOENT && mkdirat(dfd, c, 0755) == 0)
            fd = openat2_path(dfd, c, O_DIRECTORY);
        int err = errno;
        close(dfd);
        if (fd < 0) {
            errno = err;
            if (err == ELOOP)
                return err_set(e, ERR_INPUT, "distro: /%s is a symbolic link, not a directory",
                               path);
            return fail_at(e, "distro mountpoint", path);
        }
        dfd = fd;
    }
    close(dfd);
    return 0;
}

/* A path inside the container (after pivot_root, "/" is the distro, which
 * may be the customer's and change under us): resolved in the root, no
 * symlink followed, an O_PATH descriptor. */
static int inside(const char *path, int flags)
{
    return beneath_open(AT_FDCWD, path, flags | O_PATH, 0, BENEATH_IN_ROOT);
}

static int attach_fd(int src, int t, const char *target, err_t *e)
{
    if (move_mount(src, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        return fail_at(e, "mount on", target);
    return 0;
}

static int attach(int src, const char *target, int dir, err_t *e)
{
    int t = inside(target, dir ? O_DIRECTORY : 0);
    if (t < 0)
        return fail_at(e, "mountpoint", target);
    int rc = attach_fd(src, t, target, e);
    close(t);
    return rc;
}

/* A new filesystem instance (proc, tmpfs, devpts) on target; opts is
 * "key=value,flag,...". */
static int mount_fresh(const char *type, const char *opts, unsigned int attrs, const char *target,
                       err_t *e)
{
    char buf[256], what[300], *save = NULL;
    snprintf(what, sizeof what, "%s on %s", type, target);
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    if (fs < 0)
        return fail_at(e, "mount", what);
    snprintf(buf, sizeof buf, "%s", opts ? opts : "");
    for (char *o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(o, '=');
        if (eq)
            *eq = '\0';
        if (fsconfig(fs, eq ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, o, eq ? eq + 1 : NULL, 0) <
            0) {
            int err = errno;
            close(fs);
            errno = err;
            return fail_at(e, "mount option of", what);
        }
    }
    int mfd = -1;
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
        (mfd = fsmount(fs, FSMOUNT_CLOEXEC, attrs)) < 0) {
        int err = errno;
        close(fs);
        errno = err;
        return fail_at(e, "mount", what);
    }
    close(fs);
    int rc = attach(mfd, target, 1, e);
    close(mfd);
    return rc;
}

static int set_attrs(const char *path, unsigned long long attrs, err_t *e)
{
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = attrs;
    int fd = inside(path, O_DIRECTORY);
    if (fd < 0)
        return fail_at(e, "mountpoint", path);
    int rc = mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof a);
    int err = errno;
    close(fd);
    errno = err;
    return rc < 0 ? fail_at(e, "set attributes of", path) : 0;
}

static int make_file(const char *path, const char *data, size_t len, mode_t mode, err_t *e)
{
    int fd = beneath_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode,
                          BENEATH_IN_ROOT);
    if (fd < 0)
        return fail_at(e, "create", path);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = errno;
            close(fd);
            errno = err;
            return fail_at(e, "write", path);
        }
        data += n;
        len -= (size_t)n;
    }
    close(fd);
    return 0;
}

/* mkdirat + fchmod on the new directory's descriptor (never by path). */
static int make_dir(const char *path, mode_t mode, err_t *e)
{
    int fd = beneath_mkdir(AT_FDCWD, path, mode, true, (uid_t)-1, (gid_t)-1, BENEATH_IN_ROOT);
    if (fd < 0)
        return fail_at(e, "create", path);
    close(fd);
    return 0;
}

static int make_link(const char *target, const char *path, err_t *e)
{
    const char *name;
    int dir = beneath_parent(AT_FDCWD, path, &name, BENEATH_IN_ROOT);
    int rc = dir < 0 ? -1 : symlinkat(target, dir, name);
    int err = errno;
    if (dir >= 0)
        close(dir);
    errno = err;
    return rc < 0 ? fail_at(e, "symlink", path) : 0;
}

/* Cover node directories a distro might show (the host distro shows the
 * whole host): other containers' homes, the state directory. */
static int hide_node_dirs(const rt_plan_t *p, err_t *e)
{
    for (int i = 0; i < 2; i++) {
        if (!p->hide[i][0] || strcmp(p->hide[i], "/") == 0)
            continue;
        int fd = inside(p->hide[i], O_DIRECTORY);
        if (fd < 0)
            continue; /* not in this distro */
        close(fd);
        if (mount_fresh("tmpfs", "mode=0755,size=4k", RO_ATTRS, p->hide[i], e) < 0)
            return -1;
    }
    return 0;
}

static int mount_dev(struct sources *s, err_t *e)
{
    char path[64];
    if (mount_fresh("tmpfs", "mode=0755,size=64k", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "/dev",
                    e) < 0)
        return -1;
    for (size_t i = 0; i < N_DEV; i++) {
        snprintf(path, sizeof path, "/dev/%s", dev_nodes[i]);
        if (make_file(path, "", 0, 0666, e) < 0 || attach(s->fd[S_DEV + i], path, 0, e) < 0)
            return -1;
        close_fd(&s->fd[S_DEV + i]);
    }
    if (make_dir("/dev/pts", 0755, e) < 0 ||
        mount_fresh("devpts", "newinstance,ptmxmode=0666,mode=0620",
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "/dev/pts", e) < 0 ||
        make_link("pts/ptmx", "/dev/ptmx", e) < 0 || make_dir("/dev/shm", 01777, e) < 0 ||
        mount_fresh("tmpfs", "mode=1777", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "/dev/shm", e) <
            0 ||
        make_link("/proc/self/fd", "/dev/fd", e) < 0 ||
        make_link("/proc/self/fd/0", "/dev/stdin", e) < 0 ||
        make_link("/proc/self/fd/1", "/dev/stdout", e) < 0 ||
        make_link("/proc/self/fd/2", "/dev/stderr", e) < 0)
        return -1;
    return set_attrs("/dev", MOUNT_ATTR_RDONLY, e);
}

/* /run/cgroup: a read-only tmpfs holding the two cgroup files (bound
 * read-only), so the customer can neither write nor replace them. */
static int mount_run_cgroup(struct sources *s, err_t *e)
{
    if (make_dir(RT_CGROUP_DIR, 0755, e) < 0 ||
        mount_fresh("tmpfs", "mode=0755,size=16k", RO_ATTRS & ~MOUNT_ATTR_RDONLY, RT_CGROUP_DIR,
                    e) < 0 ||
        make_file(RT_CGROUP_DIR "/memory.limit_in_bytes", "", 0, 0444, e) < 0 ||
        make_file(RT_CGROUP_DIR "/memory.usage_in_bytes", "", 0, 0444, e) < 0 ||
        attach(s->fd[S_CG_LIMIT], RT_CGROUP_DIR "/memory.limit_in_bytes", 0, e) < 0 ||
        attach(s->fd[S_CG_USAGE], RT_CGROUP_DIR "/memory.usage_in_bytes", 0, e) < 0)
        return -1;
    close_fd(&s->fd[S_CG_LIMIT]);
    close_fd(&s->fd[S_CG_USAGE]);
    return set_attrs(RT_CGROUP_DIR, MOUNT_ATTR_RDONLY, e);
}

/* /run/imperium: what the Emperor and the vassals include (platform.ini,
 * shortcuts.ini) and plugin aliases, read-only. */
static int mount_run_platform(const rt_plan_t *p, err_t *e)
{
    /* The drain: a vassal the Emperor stops (its file left vassals/)
     * unsubscribes and stops its workers in the same instant, so a request
     * the router sent before it read the unsubscribe lands in a backlog no
     * worker will accept, and the client gets a reset.  The emperor-stop
     * hook runs first: it unsubscribes (uwsgi_subscribe_all(1, ...) is
     * what uWSGI's own shutdown calls; the second argument only turns on
     * a log line) and keeps serving for a second while the router catches
     * up; then uWSGI's graceful shutdown goes on as before. */
    static const char platform_ini[] = "[uwsgi]\n"
                                       "; written by imperium-node at container start\n"
                                       "plugins-dir = " RT_PLUGINS_DIR "\n"
                                       "hook-emperor-stop = callint:uwsgi_subscribe_all 1\n"
                                       "hook-emperor-stop = callint:sleep " RT_DRAIN_SECONDS "\n";
    /* Included after each vassal's file.  uWSGI 2.0.21 runs wait-for-
     * mountpoint/dir/file/fs only when it starts as root (uwsgi_as_root),
     * and vassals start as the container's uid: the seed's `wait-for-
     * mountpoint = $(HOME)/zeus` (waiting for a loopbox) would be ignored.
     * The same waits as hooks, which run as any uid, before the sockets
     * are bound (asap): uwsgi_wait_for_mountpoint through callret, the
     * others through their own hooks; wait-for-fs-timeout still bounds
     * them (then the Emperor starts the vassal again). */
    static const char platform_after[] =
        "[uwsgi]\n"
        "; written by imperium-node at container start\n"
        "if-opt = wait-for-mountpoint\n"
        "hook-asap = callret:uwsgi_wait_for_mountpoint %(wait-for-mountpoint)\n"
        "endif =\n"
        "if-opt = wait-for-dir\n"
        "hook-asap = wait_for_dir:%(wait-for-dir)\n"
        "endif =\n"
        "if-opt = wait-for-file\n"
        "hook-asap = wait_for_file:%(wait-for-file)\n"
        "endif =\n"
        "if-opt = wait-for-fs\n"
        "hook-asap = wait_for_fs:%(wait-for-fs)\n"
        "endif =\n";
    /* The Emperor's --emperor-wrapper: it runs each vassal with
     * IMPERIUM_VASSAL set to the vassal file's name (its last argument
     * that is neither an option nor one of our includes: after.ini comes
     * after it), so the `domain`
     * shortcut names the vassal's socket after it.  The name must outlive
     * a graceful reload (uWSGI re-execs itself and keeps the listening
     * socket only if the configured name is the same), which the
     * environment does and uWSGI's own %-variables do not. */
    char wrapper[RT_PATH + 512];
    int wn = snprintf(wrapper, sizeof wrapper,
                      "#!/bin/sh\n"
                      "# written by imperium-node: run a vassal with IMPERIUM_VASSAL set\n"
                      "for a in \"$@\"; do case $a in " RT_PLATFORM_DIR "/*|-*) ;; "
                      "*) v=$a ;; esac; done\n"
                      "v=${v##*/}\n"
                      "IMPERIUM_VASSAL=$(printf '%%s' \"$v\" | tr -c 'A-Za-z0-9._-' '_')\n"
                      "export IMPERIUM_VASSAL\n"
                      "exec %s \"$@\"\n",
                      p->argv[0]);
    if (wn < 0 || (size_t)wn >= sizeof wrapper)
        return err_set(e, ERR_INPUT, "the uwsgi path is too long");
    /* Executable (the wrapper), but read-only, nosuid, nodev. */
    if (make_dir(RT_PLATFORM_DIR, 0755, e) < 0 ||
        mount_fresh("tmpfs", "mode=0755,size=1m", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    RT_PLATFORM_DIR, e) < 0 ||
        make_file(RT_PLATFORM_INI, platform_ini, sizeof platform_ini - 1, 0444, e) < 0 ||
        make_file(RT_PLATFORM_AFTER_INI, platform_after, sizeof platform_after - 1, 0444, e) < 0 ||
        make_file(RT_VASSAL_WRAPPER, wrapper, (size_t)wn, 0555, e) < 0 ||
        (p->shortcuts &&
         make_file(RT_SHORTCUTS_INI, p->shortcuts, p->shortcuts_len, 0444, e) < 0) ||
        make_dir(QUOTA_CMD_DIR, 0755, e) < 0 ||
        make_file(QUOTA_CMD_DIR "/quota", p->quota_cmd, (size_t)p->quota_cmd_len, 0555, e) < 0 ||
        make_dir(RT_PLUGINS_DIR, 0755, e) < 0 ||
        /* `plugin = 0:python` loads python_plugin.so; Debian ships the
         * Python 3 plugin as python3_plugin.so.  uWSGI follows the link to
         * find the plugin's symbol name. */
        make_link("/usr/lib/uwsgi/plugins/python3_plugin.so", RT_PLUGINS_DIR "/python_plugin.so",
                  e) < 0)
        return -1;
    return set_attrs(RT_PLATFORM_DIR, MOUNT_ATTR_RDONLY, e);
}

static int mount_run(const rt_plan_t *p, struct sources *s, err_t *e)
{
    char opts[64];
    snprintf(opts, sizeof opts, "mode=0755,uid=%d,gid=%d", p->uid, p->uid);
    if (mount_fresh("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "/run", e) < 0)
        return -1;
    if (mount_run_cgroup(s, e) < 0 || mount_run_platform(p, e) < 0)
        return -1;
    if (s->fd[S_SUBSCRIBE] < 0)
        return 0;
    if (make_dir(RT_SUBSCRIBE_DIR, 0755, e) < 0 ||
        attach(s->fd[S_SUBSCRIBE], RT_SUBSCRIBE_DIR, 1, e) < 0)
        return -1;
    close_fd(&s->fd[S_SUBSCRIBE]);
    return 0;
}

static int mount_home(const rt_plan_t *p, struct sources *s, err_t *e)
{
    /* Only this container's home under /containers. */
    if (mount_fresh("tmpfs", "mode=0755,size=16k", RO_ATTRS & ~MOUNT_ATTR_RDONLY, "/containers",
                    e) < 0 ||
        make_dir(p->home_inside, 0700, e) < 0 || attach(s->fd[S_HOME], p->home_inside, 1, e) < 0 ||
        set_attrs("/containers", MOUNT_ATTR_RDONLY, e) < 0)
        return -1;
    /* A mountpoint cannot be renamed or removed: run/ stays the node's. */
    if (s->fd[S_SOCKETS] >= 0) {
        char run[sizeof p->home_inside + 8];
        snprintf(run, sizeof run, "%s/run", p->home_inside);
        if (attach(s->fd[S_SOCKETS], run, 1, e) < 0)
            return -1;
        close_fd(&s->fd[S_SOCKETS]);
    }
    if (attach(s->fd[S_USR_LOCAL], "/usr/local", 1, e) < 0 ||
        attach(s->fd[S_LOGS], "/var/log", 1, e) < 0 || attach(s->fd[S_TMP], "/tmp", 1, e) < 0 ||
        attach(s->fd[S_VAR_TMP], "/var/tmp", 1, e) < 0)
        return -1;
    return 0;
}

/* Shadow /etc/hosts and /etc/resolv.conf when the distro has them as plain
 * files (a symlinked resolv.conf is left as the distro made it). */
static int mount_etc(struct sources *s, err_t *e)
{
    const char *targets[2] = {"/etc/hosts", "/etc/resolv.conf"};
    int srcs[2] = {s->fd[S_HOSTS], s->fd[S_RESOLV]};
    for (int i = 0; i < 2; i++) {
        int fd = inside(targets[i], 0);
        struct stat sb;
        bool plain = fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
        /* Onto the very file checked, not whatever the path is now. */
        int rc = plain ? attach_fd(srcs[i], fd, targets[i], e) : 0;
        if (fd >= 0)
            close(fd);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Last, so the mounts made during setup (run/) stay private; those made
 * under the home later propagate to the sessions' slave copies. */
static int share_home(const rt_plan_t *p, err_t *e)
{
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.propagation = MS_SHARED;
    int fd = inside(p->home_inside, O_DIRECTORY);
    if (fd < 0)
        return fail_at(e, "mountpoint", p->home_inside);
    int rc = mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof a);
    int err = errno;
    close(fd);
    errno = err;
    return rc < 0 ? fail_at(e, "make shared", p->home_inside) : 0;
}

static int build(const rt_plan_t *p, struct sources *s, err_t *e)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return rt_fail(e, "make mounts private");
    if (clone_sources(p, s, e) < 0 || enter_rootfs(p, s, e) < 0)
        return -1;
    for (const char *const *m = mountpoints; *m; m++)
        if (ensure_dir(*m, e) < 0)
            return -1;
    if (hide_node_dirs(p, e) < 0 ||
        mount_fresh("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, "/proc",
                    e) < 0 ||
        mount_dev(s, e) < 0 || mount_run(p, s, e) < 0 || mount_home(p, s, e) < 0 ||
        mount_etc(s, e) < 0 || share_home(p, e) < 0)
        return -1;
    return set_attrs("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, e);
}

int rt_mounts(const rt_plan_t *p, err_t *e)
{
    struct sources s;
    for (int i = 0; i < S_COUNT; i++)
        s.fd[i] = -1;
    int rc = build(p, &s, e);
    /* Attached clones stay mounted; unattached ones vanish with their fd. */
    for (int i = 0; i < S_COUNT; i++)
        close_fd(&s.fd[i]);
    return rc;
}
