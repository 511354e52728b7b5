/* distro_build.c - `imperium admin distro build NAME`: a Debian root
 * filesystem made with debootstrap, ready to be a distro, registered through
 * the admin API.
 *
 * Steps, each one named in the error when it fails:
 *   1. checks: the options (usage errors, exit 2), root, debootstrap in PATH,
 *      the target directory (missing, or empty, or --force: emptied, since
 *      debootstrap will not unpack over a system), and with registration the
 *      API and the token (before minutes of work, not after);
 *   2. debootstrap --variant=minbase --include=uwsgi-core,... SUITE DIR MIRROR,
 *      spawned (never through a shell), its output streamed to stderr with a
 *      "debootstrap: " prefix;
 *   3. the finishing touches inside DIR, every path resolved as if DIR were
 *      the root (openat2 RESOLVE_IN_ROOT: Debian's absolute symlinks such as
 *      /usr/bin/uwsgi -> /etc/alternatives/uwsgi stay inside): the `python`
 *      plugin alias (python_plugin.so -> python311_plugin.so), /etc/hosts
 *      for the node to mount over, /etc/hostname, apt's downloaded packages
 *      and lists removed, /etc/imperium-distro;
 *   4. POST /admin/distros {"name", "path"}; the new id is printed.
 * When step 2 or 3 fails, DIR is removed if this command created it, else
 * emptied again (mounts debootstrap left below it are detached first;
 * removal never follows a symlink nor crosses into another filesystem). */
#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DISTRO_ROOT "/var/lib/imperium/distros"
#define DEFAULT_SUITE "bookworm"
#define DEFAULT_MIRROR "http://deb.debian.org/debian"
#define PLUGINS_DIR "usr/lib/uwsgi/plugins"

const opt_spec distro_build_opts[] = {
    {"dir", OPT_STR, "dir", "DIR", false},
    {"suite", OPT_STR, "suite", "SUITE", false},
    {"mirror", OPT_STR, "mirror", "URL", false},
    {"packages", OPT_LIST, "packages", "P1,P2", false},
    {"cache-dir", OPT_STR, "cache_dir", "DIR", false},
    {"force", OPT_FLAG, "force", NULL, false},
    {"register", OPT_FLAG, "register", NULL, false},
    {"no-register", OPT_FLAG, "no_register", NULL, false},
    {NULL, 0, NULL, NULL, false},
};

/* What every distro gets.  The rack plugin's package carries the Ruby
 * version, so it depends on the release; it needs the rack gem (ruby-rack)
 * to load a config.ru, which the package does not pull in. */
static const char *const base_packages[] = {
    "uwsgi-core", "uwsgi-plugin-python3", "uwsgi-plugin-psgi", "python3", "ca-certificates",
    NULL,
};

static const struct {
    const char *suite, *rack;
} suites[] = {
    {"bookworm", "uwsgi-plugin-rack-ruby3.1,ruby-rack"},
};

typedef struct {
    const char *name, *suite, *mirror;
    char *dir;       /* absolute; canonical once it exists */
    char *cache_dir; /* absolute, or NULL */
    char *include;   /* "uwsgi-core,uwsgi-plugin-python3,..." */
    char *debootstrap;
    bool force, reg, created, nonempty;
} build_t;

static void build_free(build_t *b)
{
    free(b->dir);
    free(b->cache_dir);
    free(b->include);
    free(b->debootstrap);
}

/* ---- step 1: checks ---- */

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || *s == 0x7f)
            return true;
    return false;
}

/* A name that is safe as one directory name: [A-Za-z0-9][A-Za-z0-9._-]*. */
static bool dir_safe(const char *s)
{
    if (!*s || strlen(s) > 64 || *s == '.' || *s == '-')
        return false;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') ||
              ('0' <= *s && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* Debian policy: [a-z0-9][a-z0-9+.-]+ for packages; suites are similar. */
static bool debian_name(const char *s)
{
    if (!*s || !(('a' <= *s && *s <= 'z') || ('0' <= *s && *s <= '9')))
        return false;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('0' <= *s && *s <= '9') || *s == '+' ||
              *s == '.' || *s == '-'))
            return false;
    return true;
}

/* An absolute version of `path` (relative to the working directory), without
 * trailing slashes; symlinks are left to realpath() once it exists. */
static char *absolute(const char *path, err_t *e)
{
    char *out;
    if (path[0] == '/') {
        out = strdup(path);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) {
            err_set(e, ERR_INTERNAL, "cannot get the working directory: %s", strerror(errno));
            return NULL;
        }
        out = str_printf("%s/%s", cwd, path);
        free(cwd);
    }
    if (!out) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return out;
}

/* The package list debootstrap --include gets: ours, then --packages (each
 * value may hold several, comma-separated). */
static int include_list(build_t *b, json_t *extra, const char *cmd, err_t *e)
{
    buf_t l = {0};
    const char *rack = NULL;
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
        if (!strcmp(suites[i].suite, b->suite))
            rack = suites[i].rack;
    for (size_t i = 0; base_packages[i]; i++)
        if ((l.len && buf_appends(&l, ",") < 0) || buf_appends(&l, base_packages[i]) < 0)
            goto oom;
    if (rack && (buf_appends(&l, ",") < 0 || buf_appends(&l, rack) < 0))
        goto oom;
    size_t i;
    json_t *v;
    json_array_foreach(extra, i, v)
    {
        char *copy = strdup(json_string_value(v));
        if (!copy)
            goto oom;
        char *save = NULL;
        for (char *p = strtok_r(copy, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
            if (!debian_name(p)) {
                err_set(e, ERR_INPUT, "%s: --packages: '%s' is not a Debian package name", cmd,
                        p);
                free(copy);
                buf_free(&l);
                return -1;
            }
            if (buf_appends(&l, ",") < 0 || buf_appends(&l, p) < 0) {
                free(copy);
                goto oom;
            }
        }
        free(copy);
    }
    if (!rack)
        fprintf(stderr,
                "imperium: note: the rack plugin's package is known for %s only; for suite "
                "'%s' add it with --packages (e.g. uwsgi-plugin-rack-rubyX.Y,ruby-rack)\n",
                DEFAULT_SUITE, b->suite);
    b->include = l.data;
    return 0;
oom:
    buf_free(&l);
    return err_set(e, ERR_INTERNAL, "out of memory");
}

/* The options, as usage errors (exit 2). */
static int check_options(build_t *b, const char *name, json_t *opts, const char *cmd, err_t *e)
{
    const char *dir = json_string_value(json_object_get(opts, "dir"));
    const char *cache = json_string_value(json_object_get(opts, "cache_dir"));
    bool yes = json_is_true(json_object_get(opts, "register"));
    bool no = json_is_true(json_object_get(opts, "no_register"));
    b->name = name;
    b->suite = json_string_value(json_object_get(opts, "suite"));
    b->mirror = json_string_value(json_object_get(opts, "mirror"));
    b->force = json_is_true(json_object_get(opts, "force"));
    if (!b->suite)
        b->suite = DEFAULT_SUITE;
    if (!b->mirror)
        b->mirror = DEFAULT_MIRROR;
    if (yes && no)
        return err_set(e, ERR_INPUT, "%s: --register and --no-register contradict each other",
                       cmd);
    b->reg = !no;
    if (!*name || has_control(name))
        return err_set(e, ERR_INPUT, "%s: NAME must be a non-empty line of text", cmd);
    if (!dir && !dir_safe(name))
        return err_set(e, ERR_INPUT,
                       "%s: NAME '%s' cannot be a directory name under " DISTRO_ROOT
                       " (letters, digits, '.', '_', '-'); give --dir DIR",
                       cmd, name);
    if (dir && (!*dir || has_control(dir)))
        return err_set(e, ERR_INPUT, "%s: --dir needs a directory path", cmd);
    if (cache && (!*cache || has_control(cache)))
        return err_set(e, ERR_INPUT, "%s: --cache-dir needs a directory path", cmd);
    if (!debian_name(b->suite))
        return err_set(e, ERR_INPUT, "%s: --suite: '%s' is not a Debian suite name", cmd,
                       b->suite);
    if ((!str_starts_with(b->mirror, "http://") && !str_starts_with(b->mirror, "https://") &&
         !str_starts_with(b->mirror, "file:///")) ||
        has_control(b->mirror) || strchr(b->mirror, ' '))
        return err_set(e, ERR_INPUT,
                       "%s: --mirror needs a URL (http://, https:// or file:///), not '%s'", cmd,
                       b->mirror);
    if (include_list(b, json_object_get(opts, "packages"), cmd, e) < 0)
        return -1;
    if (dir)
        b->dir = absolute(dir, e);
    else if (!(b->dir = str_printf(DISTRO_ROOT "/%s", name)))
        err_set(e, ERR_INTERNAL, "out of memory");
    if (!b->dir || (cache && !(b->cache_dir = absolute(cache, e))))
        return -1;
    return 0;
}

/* The first executable `debootstrap` in PATH. */
static char *find_debootstrap(err_t *e)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    if (!copy) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    char *found = NULL, *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char *p = str_printf("%s/debootstrap", *d ? d : ".");
        if (!p) {
            free(copy);
            err_set(e, ERR_INTERNAL, "out of memory");
            return NULL;
        }
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0)
            found = p;
        else
            free(p);
    }
    free(copy);
    if (!found)
        err_set(e, ERR_INTERNAL,
                "debootstrap not found in PATH: install the debootstrap package "
                "(apt-get install debootstrap; it goes to /usr/sbin)");
    return found;
}

static bool dir_is_empty(const char *path, err_t *e, bool *empty)
{
    DIR *d = opendir(path);
    if (!d)
        return err_set(e, ERR_INTERNAL, "cannot read %s: %s", path, strerror(errno)), false;
    struct dirent *de;
    *empty = true;
    errno = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            *empty = false;
            break;
        }
    int rerr = errno;
    closedir(d);
    if (*empty && rerr)
        return err_set(e, ERR_INTERNAL, "cannot read %s: %s", path, strerror(rerr)), false;
    return true;
}

/* The target: an empty directory (or any with --force), never the root. */
static int check_dir(build_t *b, err_t *e)
{
    struct stat st;
    if (stat(b->dir, &st) < 0) {
        if (errno != ENOENT)
            return err_set(e, ERR_INTERNAL, "cannot use %s: %s", b->dir, strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return err_set(e, ERR_INTERNAL, "%s exists and is not a directory", b->dir);
    char *real = realpath(b->dir, NULL);
    if (!real)
        return err_set(e, ERR_INTERNAL, "cannot resolve %s: %s", b->dir, strerror(errno));
    free(b->dir);
    b->dir = real;
    if (!strcmp(real, "/"))
        return err_set(e, ERR_INTERNAL, "refusing to build a distro in / (the node's own root)");
    bool empty;
    if (!dir_is_empty(real, e, &empty))
        return -1;
    if (!empty && !b->force)
        return err_set(e, ERR_CONFLICT,
                       "%s exists and is not empty: refusing to build a distro over it "
                       "(remove it, pick another --dir, or give --force to empty it first)",
                       real);
    b->nonempty = !empty;
    return 0;
}

/* mkdir -p for the parents, then DIR itself (0755: container uids read it). */
static int create_dir(build_t *b, err_t *e)
{
    struct stat st;
    if (stat(b->dir, &st) == 0)
        return 0;
    if (fs_mkdir_parents(b->dir, e) < 0)
        return -1;
    if (mkdir(b->dir, 0755) < 0)
        return err_set(e, ERR_INTERNAL, "cannot create %s: %s", b->dir, strerror(errno));
    b->created = true;
    if (chmod(b->dir, 0755) < 0)
        return err_set(e, ERR_INTERNAL, "cannot chmod %s: %s", b->dir, strerror(errno));
    char *real = realpath(b->dir, NULL);
    if (!real)
        return err_set(e, ERR_INTERNAL, "cannot resolve %s: %s", b->dir, strerror(errno));
    free(b->dir);
    b->dir = real;
    return 0;
}

/* ---- removing a half-built DIR ---- */

/* Detach every mount below `dir` (not `dir` itself: the supplier may have
 * mounted a filesystem for the distro there), deepest first: debootstrap
 * mounts /proc, /sys ... in the target and a killed debootstrap leaves them. */
static int umount_below(const char *dir, err_t *e)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return err_set(e, ERR_INTERNAL, "cannot read /proc/self/mountinfo: %s",
                       strerror(errno));
    char **list = NULL, *line = NULL;
    size_t n = 0, cap = 0, dlen = strlen(dir);
    int rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        /* id parent major:minor root mountpoint ... */
        char *save = NULL, *mp = strtok_r(line, " ", &save);
        for (int k = 0; k < 4 && mp; k++)
            mp = strtok_r(NULL, " ", &save);
        if (!mp)
            continue;
        str_unescape_octal(mp);
        if (strncmp(mp, dir, dlen) != 0 || mp[dlen] != '/')
            continue;
        char **grown = realloc(list, (n + 1) * sizeof *list);
        char *copy = strdup(mp);
        if (grown)
            list = grown;
        if (!grown || !copy) {
            free(copy);
            rc = err_set(e, ERR_INTERNAL, "out of memory");
            break;
        }
        list[n++] = copy;
    }
    free(line);
    fclose(f);
    for (size_t i = n; i-- > 0;) {
        if (rc == 0 && umount2(list[i], MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
            rc = err_set(e, ERR_INTERNAL, "cannot unmount %s: %s", list[i], strerror(errno));
        free(list[i]);
    }
    free(list);
    return rc;
}

/* Remove what directory `fd` (at `path`, for messages) holds: never
 * following a symlink, never leaving device `dev`. */
static int rm_contents(int fd, const char *path, dev_t dev, err_t *e)
{
    int dfd = dup(fd);
    if (dfd < 0)
        return err_set(e, ERR_INTERNAL, "dup: %s", strerror(errno));
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return err_set(e, ERR_INTERNAL, "cannot read %s: %s", path, strerror(errno));
    }
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while (rc == 0 && (de = readdir(d))) {
        const char *nm = de->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, ".."))
            continue;
        struct stat st;
        if (fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = err_set(e, ERR_INTERNAL, "cannot stat %s/%s: %s", path, nm, strerror(errno));
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev) {
                rc = err_set(e, ERR_INTERNAL, "%s/%s is another filesystem: not removing it",
                             path, nm);
                break;
            }
            char *sub = str_printf("%s/%s", path, nm);
            int cfd = sub ? openat(fd, nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
            if (!sub)
                rc = err_set(e, ERR_INTERNAL, "out of memory");
            else if (cfd < 0)
                rc = err_set(e, ERR_INTERNAL, "cannot open %s: %s", sub, strerror(errno));
            else
                rc = rm_contents(cfd, sub, dev, e);
            if (cfd >= 0)
                close(cfd);
            if (rc == 0 && unlinkat(fd, nm, AT_REMOVEDIR) < 0)
                rc = err_set(e, ERR_INTERNAL, "cannot remove %s: %s", sub, strerror(errno));
            free(sub);
        } else if (unlinkat(fd, nm, 0) < 0) {
            rc = err_set(e, ERR_INTERNAL, "cannot remove %s/%s: %s", path, nm, strerror(errno));
        }
        errno = 0;
    }
    if (rc == 0 && errno)
        rc = err_set(e, ERR_INTERNAL, "cannot read %s: %s", path, strerror(errno));
    closedir(d);
    return rc;
}

/* Remove everything in `dir`, keeping `dir` itself. */
static int empty_dir(const char *dir, err_t *e)
{
    if (umount_below(dir, e) < 0)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "cannot open %s: %s", dir, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? err_set(e, ERR_INTERNAL, "cannot stat %s: %s", dir,
                                          strerror(errno))
                                : rm_contents(fd, dir, st.st_dev, e);
    close(fd);
    return rc;
}

/* After a failed step: remove DIR if this command created it, else empty it
 * again (it was empty, or --force emptied it); the message says which after
 * the step's own. */
static int fail_cleanup(build_t *b, err_t *e)
{
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e->msg);
    enum err_kind kind = e->kind;
    err_t re = {0};
    int rc = empty_dir(b->dir, &re);
    if (rc == 0 && b->created && rmdir(b->dir) < 0)
        rc = err_set(&re, ERR_INTERNAL, "cannot remove %s: %s", b->dir, strerror(errno));
    if (rc < 0)
        err_set(e, kind, "%s; cleaning up the half-built %s failed too: %s", msg, b->dir,
                re.msg);
    else if (b->created)
        err_set(e, kind, "%s; removed the half-built %s", msg, b->dir);
    else
        err_set(e, kind, "%s; emptied %s again (it existed before, so it stays)", msg, b->dir);
    return -1;
}

/* ---- step 2: debootstrap ---- */

static volatile sig_atomic_t child_pid, got_signal;

static void forward_signal(int sig)
{
    got_signal = sig;
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP};
#define NFORWARDED (sizeof forwarded / sizeof forwarded[0])

/* Copy the child's output to stderr line by line, prefixed. */
static void stream_output(int fd)
{
    FILE *in = fdopen(fd, "r");
    if (!in) {
        close(fd);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) >= 0)
        fprintf(stderr, "debootstrap: %s%s", line, n > 0 && line[n - 1] == '\n' ? "" : "\n");
    free(line);
    fclose(in);
}

static int run_debootstrap(build_t *b, err_t *e)
{
    char *variant = NULL, *include = NULL, *cache = NULL;
    int pfd[2] = {-1, -1}, rc = -1, spawn_err;
    bool fa_ok = false, attr_ok = false;
    size_t installed = 0; /* signal handlers to restore */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    struct sigaction old[NFORWARDED];
    sigset_t block, prev;
    pid_t pid = -1;

    if (!(variant = strdup("--variant=minbase")) ||
        !(include = str_printf("--include=%s", b->include)) ||
        (b->cache_dir && !(cache = str_printf("--cache-dir=%s", b->cache_dir)))) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    char *argv[8];
    int argc = 0;
    argv[argc++] = b->debootstrap;
    argv[argc++] = variant;
    argv[argc++] = include;
    if (cache)
        argv[argc++] = cache;
    argv[argc++] = (char *)b->suite;
    argv[argc++] = b->dir;
    argv[argc++] = (char *)b->mirror;
    argv[argc] = NULL;
    if (b->cache_dir && mkdir(b->cache_dir, 0755) < 0 && errno != EEXIST) {
        err_set(e, ERR_INTERNAL, "cannot create the cache directory %s: %s", b->cache_dir,
                strerror(errno));
        goto out;
    }
    if (setenv("DEBIAN_FRONTEND", "noninteractive", 1) < 0) {
        err_set(e, ERR_INTERNAL, "setenv: %s", strerror(errno));
        goto out;
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        err_set(e, ERR_INTERNAL, "pipe: %s", strerror(errno));
        goto out;
    }
    if ((spawn_err = posix_spawn_file_actions_init(&fa)) != 0) {
        err_set(e, ERR_INTERNAL, "posix_spawn_file_actions_init: %s", strerror(spawn_err));
        goto out;
    }
    fa_ok = true;
    if ((spawn_err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (spawn_err = posix_spawn_file_actions_adddup2(&fa, pfd[1], 1)) ||
        (spawn_err = posix_spawn_file_actions_adddup2(&fa, pfd[1], 2))) {
        err_set(e, ERR_INTERNAL, "posix_spawn file actions: %s", strerror(spawn_err));
        goto out;
    }
    if ((spawn_err = posix_spawnattr_init(&attr)) != 0) {
        err_set(e, ERR_INTERNAL, "posix_spawnattr_init: %s", strerror(spawn_err));
        goto out;
    }
    attr_ok = true;
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigemptyset(&block);
    for (size_t i = 0; i < NFORWARDED; i++) {
        sigaddset(&dflt, forwarded[i]);
        sigaddset(&block, forwarded[i]);
    }
    sigaddset(&dflt, SIGPIPE);
    if ((spawn_err = posix_spawnattr_setsigmask(&attr, &none)) ||
        (spawn_err = posix_spawnattr_setsigdefault(&attr, &dflt)) ||
        (spawn_err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                                         POSIX_SPAWN_SETSIGDEF))) {
        err_set(e, ERR_INTERNAL, "posix_spawnattr: %s", strerror(spawn_err));
        goto out;
    }

    /* Ctrl-C, SIGTERM, SIGHUP go to debootstrap; we wait for it to stop and
     * clean up.  Blocked until the child's pid is known. */
    if (sigprocmask(SIG_BLOCK, &block, &prev) < 0) {
        err_set(e, ERR_INTERNAL, "sigprocmask: %s", strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = forward_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    got_signal = 0;
    child_pid = 0;
    spawn_err = 0;
    for (size_t i = 0; i < NFORWARDED && !spawn_err; i++)
        if (sigaction(forwarded[i], &sa, &old[i]) < 0)
            spawn_err = errno;
        else
            installed = i + 1;
    if (!spawn_err)
        spawn_err = posix_spawn(&pid, b->debootstrap, &fa, &attr, argv, environ);
    if (!spawn_err)
        child_pid = pid;
    if (sigprocmask(SIG_SETMASK, &prev, NULL) < 0 && !spawn_err) {
        spawn_err = errno; /* cannot happen with a valid set; stop the child */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    close(pfd[1]);
    pfd[1] = -1;
    if (spawn_err) {
        err_set(e, ERR_INTERNAL, "cannot start %s: %s", b->debootstrap, strerror(spawn_err));
        goto out;
    }

    stream_output(pfd[0]);
    pfd[0] = -1;
    int status;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    child_pid = 0;
    if (w < 0)
        err_set(e, ERR_INTERNAL, "waitpid: %s", strerror(errno));
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !got_signal)
        rc = 0;
    else if (WIFEXITED(status))
        err_set(e, ERR_INTERNAL, "debootstrap failed (exit status %d%s%s)",
                WEXITSTATUS(status), got_signal ? ", after " : "",
                got_signal ? strsignal(got_signal) : "");
    else if (WIFSIGNALED(status))
        err_set(e, ERR_INTERNAL, "debootstrap was killed by signal %d (%s)", WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    else
        err_set(e, ERR_INTERNAL, "debootstrap stopped with wait status %d", status);
out:
    for (size_t i = 0; i < installed; i++)
        sigaction(forwarded[i], &old[i], NULL);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    free(variant);
    free(include);
    free(cache);
    return rc;
}

/* ---- step 3: finishing touches inside DIR ---- */

/* Open `path` as if `root` were / (Debian's absolute symlinks stay inside). */
static int open_in_root(int root, const char *path, int flags)
{
    struct open_how how = {0};
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, root, path, &how, sizeof how);
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static bool str_ends_with_plugin(const char *s)
{
    size_t n = strlen(s), k = strlen("_plugin.so");
    return n > k && !strcmp(s + n - k, "_plugin.so");
}

/* Write DIR/etc/<name> (a plain file; a symlink there is replaced). */
static int write_etc(int root, const char *name, const char *text, err_t *e)
{
    int etc = open_in_root(root, "etc", O_RDONLY | O_DIRECTORY);
    if (etc < 0)
        return err_set(e, ERR_INTERNAL, "cannot open /etc in the distro: %s", strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstatat(etc, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
        unlinkat(etc, name, 0) < 0)
        rc = err_set(e, ERR_INTERNAL, "cannot replace /etc/%s in the distro: %s", name,
                     strerror(errno));
    int fd = rc < 0 ? -1 : openat(etc, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                                 0644);
    if (rc == 0 && fd < 0)
        rc = err_set(e, ERR_INTERNAL, "cannot create /etc/%s in the distro: %s", name,
                     strerror(errno));
    if (fd >= 0) {
        if (write_all(fd, text, strlen(text)) < 0 || fchmod(fd, 0644) < 0)
            rc = err_set(e, ERR_INTERNAL, "cannot write /etc/%s in the distro: %s", name,
                         strerror(errno));
        if (close(fd) < 0 && rc == 0)
            rc = err_set(e, ERR_INTERNAL, "cannot write /etc/%s in the distro: %s", name,
                         strerror(errno));
    }
    close(etc);
    return rc;
}

/* python_plugin.so -> python311_plugin.so (relative): uWSGI turns
 * `plugin = 0:python` into python_plugin.so, and Debian names it python3_plugin.so,
 * a link to /etc/alternatives/uwsgi-plugin-python3 -> python311_plugin.so.
 * The alias points at the end of that chain, not at python3_plugin.so: uWSGI
 * finds the plugin's symbol (python311_plugin) by following the links with
 * readlink() relative to its working directory, so a relative link to another
 * link only works when started from the plugins directory. */
static int python_alias(int root, err_t *e)
{
    int dir = open_in_root(root, PLUGINS_DIR, O_RDONLY | O_DIRECTORY);
    if (dir < 0)
        return err_set(e, ERR_INTERNAL, "no /" PLUGINS_DIR " in the distro: %s",
                       strerror(errno));
    int rc = -1;
    char proc[64], real[PATH_MAX], cur[NAME_MAX + 1];
    const char *base;
    struct stat fst, st;
    ssize_t n;
    int f = open_in_root(root, PLUGINS_DIR "/python3_plugin.so", O_PATH);
    if (f < 0) {
        err_set(e, ERR_INTERNAL, "no /" PLUGINS_DIR "/python3_plugin.so in the distro "
                "(is uwsgi-plugin-python3 installed?): %s", strerror(errno));
        goto out;
    }
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", f);
    if (fstat(f, &fst) < 0 || (n = readlink(proc, real, sizeof real - 1)) < 0) {
        err_set(e, ERR_INTERNAL, "cannot resolve /" PLUGINS_DIR "/python3_plugin.so: %s",
                strerror(errno));
        goto out;
    }
    real[n] = '\0';
    base = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
    /* The end of the chain must be a plain file of the plugins directory. */
    if (!S_ISREG(fst.st_mode) || !str_ends_with_plugin(base) ||
        fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != fst.st_dev ||
        st.st_ino != fst.st_ino) {
        err_set(e, ERR_INTERNAL, "/" PLUGINS_DIR "/python3_plugin.so does not lead to a "
                "plugin file of that directory (%s)", real);
        goto out;
    }
    if ((n = readlinkat(dir, "python_plugin.so", cur, sizeof cur - 1)) >= 0) {
        cur[n] = '\0';
        if (!strcmp(cur, base)) { /* already there (--force over an earlier build) */
            rc = 0;
            goto out;
        }
    }
    if (unlinkat(dir, "python_plugin.so", 0) < 0 && errno != ENOENT)
        err_set(e, ERR_INTERNAL, "cannot replace /" PLUGINS_DIR "/python_plugin.so: %s",
                strerror(errno));
    else if (symlinkat(base, dir, "python_plugin.so") < 0)
        err_set(e, ERR_INTERNAL, "cannot create /" PLUGINS_DIR "/python_plugin.so: %s",
                strerror(errno));
    else
        rc = 0;
out:
    if (f >= 0)
        close(f);
    close(dir);
    return rc;
}

/* The plain files in `path` (inside the distro), removed: apt's downloaded
 * packages and package lists (apt-get update in the distro restores them). */
static int rm_files_in(int root, const char *path, const char *suffix, err_t *e)
{
    int fd = open_in_root(root, path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_set(e, ERR_INTERNAL, "cannot open /%s in the distro: %s",
                                             path, strerror(errno));
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return err_set(e, ERR_INTERNAL, "cannot read /%s in the distro: %s", path,
                       strerror(errno));
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name), s = strlen(suffix);
        struct stat st;
        if (n < s || strcmp(de->d_name + n - s, suffix) != 0 || !strcmp(de->d_name, "lock") ||
            fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (unlinkat(fd, de->d_name, 0) < 0) {
            rc = err_set(e, ERR_INTERNAL, "cannot remove /%s/%s in the distro: %s", path,
                         de->d_name, strerror(errno));
            break;
        }
    }
    closedir(d);
    return rc;
}

static int finish(build_t *b, err_t *e)
{
    int root = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return err_set(e, ERR_INTERNAL, "cannot open %s: %s", b->dir, strerror(errno));
    int rc = -1, f = open_in_root(root, "usr/bin/uwsgi", O_RDONLY);
    if (f < 0) {
        err_set(e, ERR_INTERNAL, "debootstrap succeeded but the distro has no /usr/bin/uwsgi: %s",
                strerror(errno));
        goto out;
    }
    close(f);
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    if (now == (time_t)-1 || !gmtime_r(&now, &tm) ||
        !strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
        err_set(e, ERR_INTERNAL, "cannot get the time of day");
        goto out;
    }
    char *stamp = str_printf("# written by `imperium admin distro build`\n"
                             "name = %s\nsuite = %s\nmirror = %s\npackages = %s\nbuilt = %s\n",
                             b->name, b->suite, b->mirror, b->include, when);
    if (!stamp) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    /* /etc/hosts: debootstrap makes none, and the node mounts the
     * container's own over a plain file only.  /etc/hostname: not the
     * builder's name. */
    struct stat st;
    int hosts_missing = fstatat(root, "etc/hosts", &st, AT_SYMLINK_NOFOLLOW) < 0;
    if (python_alias(root, e) < 0 ||
        (hosts_missing && write_etc(root, "hosts",
                                    "127.0.0.1\tlocalhost\n"
                                    "::1\t\tlocalhost ip6-localhost ip6-loopback\n",
                                    e) < 0) ||
        write_etc(root, "hostname", "localhost\n", e) < 0 ||
        rm_files_in(root, "var/cache/apt/archives", ".deb", e) < 0 ||
        rm_files_in(root, "var/lib/apt/lists", "", e) < 0 ||
        write_etc(root, "imperium-distro", stamp, e) < 0) {
        free(stamp);
        goto out;
    }
    free(stamp);
    rc = 0;
out:
    close(root);
    return rc;
}

/* ---- step 4: the admin API ---- */

/* One admin request; the answer in *resp.  A refused token gets the hint
 * `imperium admin` gives. */
static int admin_request(cli_t *cli, const char *token, const char *method, const char *body,
                         http_resp_t *resp, err_t *e)
{
    char *url = cli_url(cli, CLI_ADMIN_PREFIX, "/distros", e);
    if (!url)
        return -1;
    http_req_t rq = {.method = method, .url = url, .bearer = token, .body = body,
                     .timeout = cli->timeout};
    int rc = http_request(&rq, resp, e);
    free(url);
    if (rc < 0)
        return -1;
    if (http_check(resp, e) < 0) {
        if (resp->status == 401) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, ERR_INTERNAL, "%s: the API refused the admin token (check --token-file, "
                    "IMPERIUM_ADMIN_TOKEN_FILE or IMPERIUM_ADMIN_TOKEN)", msg);
        }
        http_resp_free(resp);
        return -1;
    }
    return 0;
}

static int register_distro(cli_t *cli, build_t *b, const char *token, err_t *e)
{
    json_t *o = json_pack("{s:s, s:s}", "name", b->name, "path", b->dir);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return err_set(e, ERR_INTERNAL, "out of memory (or NAME/DIR not UTF-8)");
    http_resp_t resp = {0};
    int rc = admin_request(cli, token, "POST", body, &resp, e);
    free(body);
    json_t *answer = NULL;
    if (rc == 0 && cli->json) {
        rc = out_raw(stdout, &resp, e);
    } else if (rc == 0 && (answer = http_json(&resp, e))) {
        char *id = out_value(json_object_get(answer, "id"), ",", "-");
        if (!id)
            rc = err_set(e, ERR_INTERNAL, "out of memory");
        else
            printf("%s\n", id);
        free(id);
        json_decref(answer);
    } else if (rc == 0) {
        rc = -1;
    }
    http_resp_free(&resp);
    return rc;
}

int distro_build(cli_t *cli, const char *name, json_t *opts, err_t *e)
{
    const char *cmd = "admin distro build";
    build_t b = {0};
    char *token = NULL;
    int rc = -1;
    http_resp_t resp = {0};
    struct timespec t0, t1;

    if (check_options(&b, name, opts, cmd, e) < 0)
        goto out;
    if (geteuid() != 0) {
        err_set(e, ERR_INTERNAL, "building a distro needs root (debootstrap creates device "
                "nodes, chroots and sets file owners): run it as root");
        goto out;
    }
    if (!(b.debootstrap = find_debootstrap(e)) || check_dir(&b, e) < 0)
        goto out;
    if (b.reg) {
        /* Fail now, not after minutes of building, when the API or the token
         * is wrong. */
        if (cli_settle(cli, e) < 0 || !(token = cli_admin_token(cli, e)) ||
            admin_request(cli, token, "GET", NULL, &resp, e) < 0) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, e->kind == ERR_INPUT ? ERR_INPUT : ERR_INTERNAL,
                    "%s (checked before building: registering the distro needs it; fix "
                    "that, or give --no-register)", msg);
            goto out;
        }
        http_resp_free(&resp);
    }
    if (b.nonempty) {
        /* --force: debootstrap refuses to unpack over an existing system. */
        fprintf(stderr, "imperium: --force: emptying %s\n", b.dir);
        if (empty_dir(b.dir, e) < 0)
            goto out;
    }
    if (create_dir(&b, e) < 0) {
        if (b.created)
            fail_cleanup(&b, e);
        goto out;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &t0) < 0) {
        err_set(e, ERR_INTERNAL, "clock_gettime: %s", strerror(errno));
        fail_cleanup(&b, e);
        goto out;
    }
    fprintf(stderr,
            "imperium: building distro '%s' in %s: debootstrap %s from %s with %s "
            "(downloads about 100 MB, takes a few minutes)\n",
            b.name, b.dir, b.suite, b.mirror, b.include);
    if (run_debootstrap(&b, e) < 0 || finish(&b, e) < 0) {
        fail_cleanup(&b, e);
        goto out;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &t1) < 0)
        t1 = t0;
    fprintf(stderr, "imperium: distro '%s' built in %s (%ld s)\n", b.name, b.dir,
            (long)(t1.tv_sec - t0.tv_sec));
    if (b.reg) {
        if (register_distro(cli, &b, token, e) < 0) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, ERR_INTERNAL,
                    "the distro is built in %s but registering it failed: %s (register it "
                    "with: imperium admin distro add '%s' --path %s)",
                    b.dir, msg, b.name, b.dir);
            goto out;
        }
    } else if (cli->json) {
        json_t *o = json_pack("{s:s, s:s}", "name", b.name, "path", b.dir);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!s) {
            err_set(e, ERR_INTERNAL, "out of memory");
            goto out;
        }
        printf("%s\n", s);
        free(s);
    } else {
        printf("%s\n", b.dir);
    }
    rc = 0;
out:
    http_resp_free(&resp);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    build_free(&b);
    return rc;
}
