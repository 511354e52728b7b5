/* enter.c - imperium-enter: the login shell sshd runs for a container's uid
 * (the NSS module names it).  It puts the session inside the caller's own
 * running container and execs the container's shell there:
 *
 *     imperium-enter                  an interactive login shell
 *     imperium-enter -c COMMAND       `ssh 30009@node COMMAND`, scp, sftp-server
 *
 * It is installed setuid root (mode 4755): entering namespaces needs
 * CAP_SYS_ADMIN, and sshd has already dropped to the user when it runs the
 * shell.  What keeps that safe (docs/SSH.md):
 *   - the only container it enters is the one of the caller's *real* uid;
 *     nothing the caller passes (argv, environment) names a container, a
 *     path or a config: the config file is compiled in and must be
 *     root-owned, the environment is rebuilt from a short whitelist;
 *   - the target is the init recorded by the node in its root-only state
 *     directory, verified like the daemon does (alive, same start time,
 *     the caller's uid) through a pidfd, so a recycled pid cannot be
 *     entered: setns(pidfd) fails if that init has died since;
 *   - before exec (and in the waiting parent) it drops to uid = gid = the
 *     caller's, no supplementary groups, an empty bounding set, no
 *     capabilities of any kind and PR_SET_NO_NEW_PRIVS, exactly like the
 *     container's own processes (docs/NODE.md);
 *   - inside a container no_new_privs and the nosuid root make the setuid
 *     bit void, so it cannot be used from within.
 *
 * Steps: join the container's cgroup, setns(pidfd) into its mnt, pid, uts,
 * ipc, net and cgroup namespaces, fork (the pid namespace applies to
 * children), the child drops and execs /bin/bash (or /bin/sh) of the
 * container's distro in HOME=/containers/<uid>; the parent drops too,
 * forwards SIGHUP/SIGTERM and exits with the child's status. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/config.h"
#include "../common/validate.h"
#include "../runtime/cgroup.h"
#include "../runtime/quota.h"
#include "../runtime/seccomp.h"
#include "../runtime/state.h"

#ifndef IMP_SSH_CONF
#define IMP_SSH_CONF "/etc/imperium/ssh.conf"
#endif

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* The node's state directory, from the root-owned config file. */
static void load_state_dir(char *out, size_t len)
{
    struct stat st;
    if (stat(IMP_SSH_CONF, &st) < 0)
        die("imperium-enter: %s: %s", IMP_SSH_CONF, strerror(errno));
    if (st.st_uid != 0 || (st.st_mode & 022))
        die("imperium-enter: %s must be owned by root and writable by root only", IMP_SSH_CONF);
    conf_t c = {0};
    err_t e = {0};
    if (conf_load(&c, IMP_SSH_CONF, &e) < 0)
        die("imperium-enter: %s", e.msg);
    const char *v = conf_get(&c, "state_dir");
    if (!v || v[0] != '/')
        die("imperium-enter: %s: state_dir missing", IMP_SSH_CONF);
    snprintf(out, len, "%s", v);
    conf_free(&c);
}

/* Every cgroup of the container (memory, and on cgroup v1 pids, cpu and
 * blkio too): the session counts against its pids limit like the rest. */
static void join_cgroup(int uid, const char *dir)
{
    cgroup_t cg;
    err_t e = {0};
    if (dir[0] && (cgroup_from_dir(dir, &cg, &e) < 0 || cgroup_add(&cg, getpid(), &e) < 0))
        die("imperium-enter: container %d: cannot join its cgroup: %s", uid, e.msg);
}

/* uid = gid = uid, no groups, no capabilities, no new privileges. */
static void drop(int uid)
{
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
            break;
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
        die("imperium-enter: cannot drop to uid %d: %s", uid, strerror(errno));
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die("imperium-enter: cannot drop capabilities: %s", strerror(errno));
    if (getuid() != (uid_t)uid || geteuid() != (uid_t)uid || setuid(0) == 0)
        die("imperium-enter: privileges still held");
}

static const char *const KEEP_ENV[] = {"TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
                                       "SSH_CLIENT", "SSH_CONNECTION", NULL};

static char **build_env(int uid, const char *shell)
{
    static char *env[32];
    static char home[64], user[32], logname[40], shellv[64];
    size_t n = 0;
    snprintf(home, sizeof home, "HOME=/containers/%d", uid);
    snprintf(user, sizeof user, "USER=%d", uid);
    snprintf(logname, sizeof logname, "LOGNAME=%d", uid);
    snprintf(shellv, sizeof shellv, "SHELL=%s", shell);
    env[n++] = home;
    env[n++] = user;
    env[n++] = logname;
    env[n++] = shellv;
    /* QUOTA_CMD_DIR first: its `quota` stands in for quota(1) (quota.h). */
    env[n++] = "PATH=" QUOTA_CMD_DIR
               ":/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";
    bool have_lang = false;
    for (const char *const *k = KEEP_ENV; *k; k++) {
        const char *v = getenv(*k);
        if (!v || strlen(v) > 256 || n + 2 >= sizeof env / sizeof env[0])
            continue;
        size_t len = strlen(*k) + strlen(v) + 2;
        char *s = malloc(len);
        if (!s)
            die("imperium-enter: out of memory");
        snprintf(s, len, "%s=%s", *k, v);
        env[n++] = s;
        if (strcmp(*k, "LANG") == 0)
            have_lang = true;
    }
    if (!have_lang)
        env[n++] = "LANG=C.UTF-8";
    env[n] = NULL;
    return env;
}

/* The distro's file (a regular file, at most 1 MiB, resolved inside the
 * container's root without following any symlink) minus any line of `uid`,
 * plus `line`; written to fd. */
static int write_db(int root, const char *path, int uid, const char *line, int out)
{
    static char buf[1 << 20];
    size_t n = 0;
    int fd = beneath_open(root, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0,
                          BENEATH_IN_ROOT);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        ssize_t r;
        while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
            n += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    buf[n] = '\0';
    char prefix[24];
    int plen = snprintf(prefix, sizeof prefix, "%d:", uid);
    FILE *f = fdopen(out, "w");
    if (!f)
        return -1;
    for (char *l = buf, *next; l && *l; l = next) {
        next = strchr(l, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(l, prefix, (size_t)plen) != 0)
            fprintf(f, "%s\n", l);
    }
    fputs(line, f);
    return fclose(f);
}

/* A new tmpfs that is attached nowhere (the fd-based mount API): it is
 * filled and made read-only through its descriptor, so no path of the
 * container (whose distro may be the customer's, with `run` swapped for a
 * symlink at any moment) is ever mounted on or remounted. */
static int detached_tmpfs(void)
{
    int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0)
        die("imperium-enter: tmpfs: %s", strerror(errno));
    if (fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "size", "4m", 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        die("imperium-enter: tmpfs: %s", strerror(errno));
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    if (mnt < 0)
        die("imperium-enter: tmpfs: %s", strerror(errno));
    close(fs);
    return mnt;
}

/* Bind mnt/name over the target whose O_PATH descriptor is `target`.
 * Kernels before 6.15 refuse to clone from a mount that is attached
 * nowhere (EINVAL): there the tmpfs is first attached on the descriptor
 * of the container's /run (*attached says so; the caller detaches it). */
static void bind_file(int root, int mnt, const char *name, int target, bool *attached)
{
    int src = open_tree(mnt, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (src < 0 && errno == EINVAL && !*attached) {
        int run = beneath_open(root, "/run", O_PATH | O_DIRECTORY, 0, BENEATH_IN_ROOT);
        if (run < 0 || move_mount(mnt, "", run, "",
                                  MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            die("imperium-enter: attach the session tmpfs: %s", strerror(errno));
        close(run);
        *attached = true;
        src = open_tree(mnt, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    }
    if (src < 0 ||
        move_mount(src, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        die("imperium-enter: bind %s: %s", name, strerror(errno));
    close(src);
}

/* Unmount the mount of descriptor mnt through /proc/self/fd/<mnt>, walked
 * from a verified procfs (the container's /proc, reached without symlinks)
 * rather than from a path the customer's distro could redirect. */
static void detach_by_fd(int root, int mnt)
{
    struct statfs sf;
    int proc = beneath_open(root, "/proc", O_PATH | O_DIRECTORY, 0, BENEATH_IN_ROOT);
    if (proc < 0 || fstatfs(proc, &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC || fchdir(proc) < 0)
        die("imperium-enter: detach the session tmpfs: no /proc");
    char self[64];
    snprintf(self, sizeof self, "self/fd/%d", mnt);
    if (umount2(self, MNT_DETACH) < 0)
        die("imperium-enter: detach the session tmpfs: %s", strerror(errno));
    close(proc);
}

/* The distros know nothing of the container's uid, and programs that look
 * the user up (sftp-server, whoami, bash's prompt) need it.  The session
 * gets a mount namespace of its own (a copy of the container's: every
 * mount of the container is made at its start) where /etc/passwd and
 * /etc/group are the distro's plus the uid's line, and /etc/profile the
 * distro's plus the quota command's PATH, read-only.  Best effort:
 * a distro without these files (or with symlinks there) keeps its own view.
 * Every path is resolved inside the container's root with no symlink
 * followed (a custom distro is the customer's to change while we run).
 * The copy is a slave: the container's home is a shared mount (mounts.c),
 * so what is mounted or unmounted under it later (a loopbox) reaches the
 * open session, and nothing goes the other way; every other mount of the
 * container is private, so stays private here, the binds below included. */
static void session_users(int uid, const char *shell)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        die("imperium-enter: session mount namespace: %s", strerror(errno));
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        die("imperium-enter: open /: %s", strerror(errno));
    int mnt = detached_tmpfs();
    char pw[256], gr[64];
    snprintf(pw, sizeof pw, "%d:x:%d:%d:container %d:/containers/%d:%s\n", uid, uid, uid, uid,
             uid, shell);
    snprintf(gr, sizeof gr, "%d:x:%d:\n", uid, uid);
    /* A login shell's /etc/profile sets PATH anew: the copy puts the
     * quota command's directory back in front. */
    const char *names[3][2] = {
        {"/etc/passwd", "passwd"}, {"/etc/group", "group"}, {"/etc/profile", "profile"}};
    const char *lines[3] = {pw, gr,
                            "case \":$PATH:\" in *:" QUOTA_CMD_DIR ":*) ;; *) PATH=" QUOTA_CMD_DIR
                            ":$PATH; export PATH ;; esac # imperium: quota (docs/NODE.md)\n"};
    for (int i = 0; i < 3; i++) {
        int fd = openat(mnt, names[i][1], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        0644);
        if (fd < 0 || write_db(root, names[i][0], uid, lines[i], fd) != 0)
            die("imperium-enter: session %s: %s", names[i][1], strerror(errno));
    }
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (mount_setattr(mnt, "", AT_EMPTY_PATH, &ro, sizeof ro) < 0)
        die("imperium-enter: read-only session tmpfs: %s", strerror(errno));
    bool attached = false;
    for (int i = 0; i < 3; i++) {
        /* The target through an O_PATH fd: a symlink is neither followed
         * nor mounted over. */
        int fd = beneath_open(root, names[i][0], O_PATH | O_NOFOLLOW, 0, BENEATH_IN_ROOT);
        struct stat st;
        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            bind_file(root, mnt, names[i][1], fd, &attached);
        close(fd);
    }
    if (attached)
        detach_by_fd(root, mnt);
    close(mnt);
    close(root);
}

static pid_t child_pid;

static void forward(int sig)
{
    if (child_pid > 0)
        kill(child_pid, sig);
}

int main(int argc, char **argv)
{
    int uid = (int)getuid();
    const char *command = NULL;
    if (argc == 3 && strcmp(argv[1], "-c") == 0)
        command = argv[2];
    else if (argc != 1)
        die("usage: imperium-enter [-c COMMAND] (the login shell of a container's uid)");
    if (uid <= UID_BASE)
        die("imperium-enter: uid %d is not a container's", uid);
    if (geteuid() != 0)
        die("imperium-enter: must be installed setuid root (chown root; chmod 4755)");

    /* The caller is known (uid); until the drop act as root for real, so
     * that access(2) and friends in the state code check root's rights. */
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        die("imperium-enter: setresuid: %s", strerror(errno));
    char state_dir[STATE_PATH_MAX];
    load_state_dir(state_dir, sizeof state_dir);
    state_t st;
    err_t e = {0};
    int loaded = state_load(state_dir, uid, &st, &e);
    if (loaded < 0)
        die("imperium-enter: container %d: %s", uid, e.msg);
    int pidfd = loaded == 1 && st.pid > 0 ? pidfd_open(st.pid, 0) : -1;
    /* Checked after the pidfd is open: from here on the pid cannot be
     * recycled under us without setns(pidfd) failing. */
    if (pidfd < 0 || st.uid != uid || !state_init_alive(&st))
        die("container %d is not running", uid);
    join_cgroup(uid, st.cgroup);
    if (setns(pidfd, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                         CLONE_NEWCGROUP) < 0)
        die(errno == ESRCH ? "container %d is not running"
                           : "imperium-enter: container %d: cannot enter its namespaces",
            uid);
    close(pidfd);

    const char *shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
    char **env = build_env(uid, shell);
    char home[64];
    snprintf(home, sizeof home, "/containers/%d", uid);

    child_pid = fork();
    if (child_pid < 0)
        die("imperium-enter: fork: %s", strerror(errno));
    if (child_pid == 0) {
        session_users(uid, shell);
        drop(uid);
        if (chdir(home) < 0 && chdir("/") < 0)
            die("imperium-enter: chdir: %s", strerror(errno));
        umask(022);
        /* The container's system-call filter, as for its init (seccomp.c). */
        if (sc_install(&e) < 0)
            die("imperium-enter: %s", e.msg);
        const char *base = strrchr(shell, '/') + 1;
        if (command) {
            char *const av[] = {(char *)base, "-c", (char *)command, NULL};
            execve(shell, av, env);
        } else {
            char login[32];
            snprintf(login, sizeof login, "-%s", base);
            char *const av[] = {login, NULL};
            execve(shell, av, env);
        }
        die("imperium-enter: cannot run %s: %s", shell, strerror(errno));
    }
    /* The parent only waits: unprivileged, outside the pid namespace. */
    drop(uid);
    struct sigaction sa = {.sa_handler = forward};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    int status;
    while (waitpid(child_pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
