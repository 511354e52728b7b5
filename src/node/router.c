/* router.c - the node's HTTP and HTTPS router: a supervised uWSGI http
 * router (our patched plugin) with secured subscriptions (router.h,
 * docs/ROUTER.md).
 *
 * The router is started through an intermediate child that exits at once,
 * so the router is never the daemon's child: the daemon watches it through
 * a pidfd, exactly as it watches a router a previous daemon left running
 * (adoption).  <dir>/router.pid records its pid and start time, so a reused
 * pid is never mistaken for it.
 *
 * It runs in a mount namespace of its own where /containers is <dir>/homes:
 * for each container, <uid>/run/, a root-owned sticky directory that is
 * also mounted on the container's home run/.  So the in-container socket
 * paths the vassals subscribe with (/containers/<uid>/run/NAME) are valid
 * for the router, and reach nothing but sockets: no path of the customer's
 * can be swapped for a symlink elsewhere (protected_symlinks stops the
 * router from following the customer's links in the sticky run/).  The
 * vassals reach the router only through the subscription gate (subgate.c),
 * which lets each container name sockets in its own run/ only.
 *
 * It runs as router_user, never as root (router.h): <dir> is bound on
 * ROUTER_INSIDE in its namespace (the state directory above it is root's
 * only), no_new_privs is set, and uWSGI drops to the user's uid and gid
 * (no supplementary groups) right after binding the listening address as
 * a shared socket, which it keeps across reloads; every other socket it
 * binds as the user, in run/. */

#include "router.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/pidfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "../runtime/state.h"
#include "tlsfiles.h"

#define MAX_ARGS 64
#define STOP_FOREIGN_MS 5000 /* a router running as another user must go first */
/* Built by make beside imperium-node (Makefile, uwsgi/). */
#define ROUTER_PLUGIN "imperium_http_plugin.so"
#define ROUTER_CR_PLUGIN "imperium_corerouter_plugin.so"
#define ROUTER_FR_PLUGIN "imperium_fastrouter_plugin.so" /* cluster_port > 0 */
#define DEFAULT_CERT_CN "imperium default certificate"
#define DEFAULT_CERT_DAYS 3650

struct router {
    router_opts_t o;
    char *dir, *keys, *subscribe, *log_path, *pid_path, *homes, *run, *server, *tls, *acme,
        *acme_challenges, *acme_certs, *plugins, *cluster_server;
    uid_t uid; /* router_user */
    gid_t gid;
    char *argv[MAX_ARGS];
    pid_t pid;
    unsigned long long starttime;
    int pidfd;
    long long started_ms, due_ms;
    int failures; /* consecutive failed starts and deaths: the backoff */
    bool reload_pending;
};

const char *router_subscribe_dir(const router_t *r) { return r->subscribe; }
const char *router_sockets_dir(const router_t *r) { return r->homes; }
const char *router_subscription_server(const router_t *r) { return r->server; }
const char *router_cluster_server(const router_t *r) { return r->cluster_server; }
int router_fd(const router_t *r) { return r->pidfd; }
uid_t router_uid(const router_t *r) { return r->uid; }
gid_t router_gid(const router_t *r) { return r->gid; }

static void forget(router_t *r)
{
    if (r->pidfd >= 0)
        close(r->pidfd);
    r->pidfd = -1;
    r->pid = 0;
    r->starttime = 0;
}

/* The recorded router, if it still runs: pid and start time match. */
static pid_t recorded(const char *pid_path, unsigned long long *start)
{
    FILE *f = fopen(pid_path, "re");
    if (!f)
        return 0;
    long long pid = 0;
    unsigned long long st = 0, now_st = 0;
    int n = fscanf(f, "%lld %llu", &pid, &st);
    fclose(f);
    char state = 0;
    if (n != 2 || pid <= 1 || pid > INT_MAX || proc_stat((pid_t)pid, &now_st, &state) < 0 ||
        now_st != st || state == 'Z')
        return 0;
    if (start)
        *start = st;
    return (pid_t)pid;
}

static void record(router_t *r)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%d %llu\n", (int)r->pid, r->starttime);
    err_t e;
    err_clear(&e);
    if (fs_write_atomic(r->pid_path, line, (size_t)n, 0644, &e) < 0)
        log_error("router: %s", e.msg);
}

static int add_arg(router_t *r, int *n, char *s, err_t *e)
{
    if (!s)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (*n >= MAX_ARGS - 1) {
        free(s);
        return err_set(e, ERR_INTERNAL, "router: too many arguments");
    }
    r->argv[(*n)++] = s;
    return 0;
}

/* Each "--option value" pair (or lone flag when value is NULL), formatted. */
static int add_opt(router_t *r, int *n, const char *opt, char *value, err_t *e)
{
    if (add_arg(r, n, str_printf("%s", opt), e) < 0) {
        free(value);
        return -1;
    }
    return value ? add_arg(r, n, value, e) : 0;
}

/* cluster-domain: the fastrouter (beside the http plugin), after both. */
static char *fastrouter_plugin(const char *cr, const char *http, err_t *e)
{
    char fr[PATH_MAX];
    const char *slash = strrchr(http, '/');
    int dir_len = slash ? (int)(slash - http) : 0;
    if (snprintf(fr, sizeof fr, "%.*s/%s", dir_len, http, ROUTER_FR_PLUGIN) >= (int)sizeof fr) {
        err_set(e, ERR_INPUT, "router: %s: path too long", http);
        return NULL;
    }
    if (access(fr, R_OK) < 0) {
        err_set(e, ERR_INPUT,
                "the router's fastrouter plugin %s is missing (cluster_port is set; make builds "
                "it from Debian's uwsgi-src)",
                fr);
        return NULL;
    }
    char *s = str_printf("%s,%s,%s", cr, http, fr);
    if (!s)
        err_set(e, ERR_INTERNAL, "out of memory");
    return s;
}

/* The plugins, beside imperium-node (or in ../lib/imperium: fs_beside_self)
 * unless plugin_dir says: the corerouter
 * first (the http plugin needs it; ours, not Debian's: it renews TLS
 * contexts). */
static char *plugin_list(const router_t *r, err_t *e)
{
    char http[PATH_MAX], cr[PATH_MAX];
    if (r->o.plugin_dir) {
        if (snprintf(http, sizeof http, "%s/%s", r->o.plugin_dir, ROUTER_PLUGIN) >=
                (int)sizeof http ||
            snprintf(cr, sizeof cr, "%s/%s", r->o.plugin_dir, ROUTER_CR_PLUGIN) >= (int)sizeof cr) {
            err_set(e, ERR_INPUT, "router: plugin directory %s: path too long", r->o.plugin_dir);
            return NULL;
        }
    } else if (fs_beside_self(ROUTER_PLUGIN, http, sizeof http, e) < 0 ||
               fs_beside_self(ROUTER_CR_PLUGIN, cr, sizeof cr, e) < 0) {
        return NULL;
    }
    if (access(http, R_OK) < 0 || access(cr, R_OK) < 0) {
        err_set(e, ERR_INPUT,
                "the router's plugins %s and %s are missing (make builds them from Debian's "
                "uwsgi-src: apt-get install uwsgi-src)",
                http, cr);
        return NULL;
    }
    if (r->o.cluster_port > 0)
        return fastrouter_plugin(cr, http, e);
    char *s = str_printf("%s,%s", cr, http);
    if (!s)
        err_set(e, ERR_INTERNAL, "out of memory");
    return s;
}

/* cluster-domain: the fastrouter on the node's cluster endpoint (uwsgi
 * protocol from the Lord's router, routed by Host to this node's vassals),
 * bound as root like the http listeners (shared socket =2, or =1 without
 * HTTPS); subscriptions come from the gate's cluster socket only, signed
 * like the http router's (sign-check and dotsplit are global).  A member
 * that died costs a request at most 1 s (connect timeout, then the next
 * node; the dead one is dropped), and its entries go 5 s after its last
 * announcement (uWSGI drops a node when now - last > tolerance, in whole
 * seconds; vassals announce every 2 s, so two announcements must be
 * missed): docs/CLUSTER.md. */
static int cluster_args(router_t *r, int *n, err_t *e)
{
    if (r->o.cluster_port <= 0)
        return 0;
    const char *in = ROUTER_INSIDE;
    return add_opt(r, n, "--shared-socket", str_printf("0.0.0.0:%d", r->o.cluster_port), e) < 0 ||
                   add_opt(r, n, "--fastrouter", str_printf("=%d", r->o.https ? 2 : 1), e) < 0 ||
                   add_opt(r, n, "--fastrouter-subscription-server",
                           str_printf("%s/run/cluster-subscription.sock", in), e) < 0 ||
                   add_opt(r, n, "--http-connect-timeout", str_printf("1"), e) < 0 ||
                   add_opt(r, n, "--subscription-tolerance", str_printf("4"), e) < 0
               ? -1
               : 0;
}

static int build_argv(router_t *r, err_t *e)
{
    int n = 0;
    const char *in = ROUTER_INSIDE;
    /* One hop: our patched http router owns the subscriptions (signed with
     * the domain owners' keys, dotsplit for wildcards) and connects to the
     * vassal's socket itself; it answers an unknown Host with a 404, a
     * misdirected HTTPS request with a 421 (uwsgi/imperium_router.c). */
    if (add_arg(r, &n, str_printf("%s", r->o.uwsgi), e) < 0 ||
        add_opt(r, &n, "--plugin", str_printf("%s", r->plugins), e) < 0 ||
        add_opt(r, &n, "--master", NULL, e) < 0 || add_opt(r, &n, "--die-on-term", NULL, e) < 0 ||
        add_opt(r, &n, "--subscription-dotsplit", NULL, e) < 0)
        return -1;
    /* One HTTP process per core (up to ROUTER_MAX_PROCESSES): with 2, 0.74x
     * to 0.82x the app's own http-socket (keep-alive clients), against 0.61x
     * with 1 (docs/PERFORMANCE.md).  Each
     * keeps its own subscription table and TLS contexts (a packet reaches
     * one, which passes it to the others) and counts what it routes: each
     * answers its own stats socket (router-stats.sock, .1, ...), summed by
     * the sampler. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long procs = cpus < 1 ? 1 : cpus > ROUTER_MAX_PROCESSES ? ROUTER_MAX_PROCESSES : cpus;
    if (add_opt(r, &n, "--http-processes", str_printf("%ld", procs), e) < 0)
        return -1;
    /* The addresses are shared sockets: uWSGI binds them first, as root (a
     * port below 1024 needs that), then drops to the router's user (uid,
     * gid, no supplementary groups) before its plugins bind or read
     * anything (the TLS key is read as the user: root:router 0640); a
     * reload (a new uWSGI, exec'd by the unprivileged master) inherits
     * them.  The http router listens on =0, the https one on =1. */
    if (add_opt(r, &n, "--shared-socket", str_printf("%s", r->o.http), e) < 0 ||
        (r->o.https && add_opt(r, &n, "--shared-socket", str_printf("%s", r->o.https), e) < 0) ||
        add_opt(r, &n, "--uid", str_printf("%u", (unsigned)r->uid), e) < 0 ||
        add_opt(r, &n, "--gid", str_printf("%u", (unsigned)r->gid), e) < 0 ||
        add_opt(r, &n, "--no-initgroups", NULL, e) < 0 ||
        add_opt(r, &n, "--http", str_printf("=0"), e) < 0 ||
        (r->o.https && add_opt(r, &n, "--https",
                               str_printf("=1,%s/tls/default.crt,%s/tls/default.key", in, in),
                               e) < 0) ||
        add_opt(r, &n, "--http-keepalive", NULL, e) < 0 ||
        add_opt(r, &n, "--http-subscription-server", str_printf("%s/run/subscription.sock", in),
                e) < 0 ||
        add_opt(r, &n, "--subscriptions-sign-check", str_printf("SHA1:%s/keys", in), e) < 0 ||
        add_opt(r, &n, "--http-stats", str_printf("%s/run/router-stats.sock", in), e) < 0 ||
        add_opt(r, &n, "--stats", str_printf("%s/run/stats.sock", in), e) < 0 ||
        add_opt(r, &n, "--imperium-acme-dir", str_printf("%s/acme/challenges", in), e) < 0 ||
        cluster_args(r, &n, e) < 0)
        return -1;
    r->argv[n] = NULL;
    return 0;
}

/* The router must not follow a symlink a customer leaves in their sticky
 * run/ directory, nor the gate one the router leaves in its own:
 * fs.protected_symlinks makes the kernel refuse that.  It is on by default
 * on Debian and most distributions.  Read first, written only when off: a
 * node in a container (systemd-nspawn, LXC) has /proc/sys read-only, and
 * the setting, the host's, is on there too. */
static int protect_symlinks(err_t *e)
{
    static const char path[] = "/proc/sys/fs/protected_symlinks";
    char v = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool on = fd >= 0 && read(fd, &v, 1) == 1 && v == '1';
    if (fd >= 0)
        close(fd);
    if (on)
        return 0;
    fd = open(path, O_WRONLY | O_CLOEXEC);
    bool set = fd >= 0 && write(fd, "1\n", 2) == 2;
    int err = errno;
    if (fd >= 0)
        close(fd);
    if (!set)
        return err_set(e, ERR_INTERNAL,
                       "the router needs fs.protected_symlinks = 1 and %s could not be set: %s",
                       path, strerror(err));
    log_info("router: set fs.protected_symlinks = 1 (the router must not follow customers' "
             "symlinks)");
    return 0;
}

/* useradd --system, as a Debian package's postinst creates its user. */
static int create_user(const char *name, err_t *e)
{
    char *argv[] = {"/usr/sbin/useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                    "--comment", "Imperium HTTP router", (char *)name, NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, envp);
    if (rc != 0)
        return err_set(e, ERR_INTERNAL, "create the router's user %s: run %s: %s", name, argv[0],
                       strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return err_set(e, ERR_INTERNAL, "create the router's user %s: wait for useradd: %s",
                           name, strerror(errno));
    /* 9: it exists already (another node on this host made it meanwhile). */
    if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 9))
        return err_set(e, ERR_INTERNAL,
                       "create the router's user %s: useradd failed (status %d); create it "
                       "(useradd --system --user-group %s) or set router_user",
                       name, WIFEXITED(st) ? WEXITSTATUS(st) : -1, name);
    log_info("router: created the system user %s (useradd --system --user-group)", name);
    return 0;
}

/* The router's uid and gid: never root, never a container's. */
static int find_user(router_t *r, const char *name, err_t *e)
{
    for (int attempt = 0;; attempt++) {
        struct passwd pw, *found = NULL;
        char buf[4096];
        int rc = getpwnam_r(name, &pw, buf, sizeof buf, &found);
        if (rc != 0)
            return err_set(e, ERR_INTERNAL, "look up router_user %s: %s", name, strerror(rc));
        if (found && (pw.pw_uid == 0 || pw.pw_gid == 0))
            return err_set(e, ERR_INPUT,
                           "router_user %s is root (uid %u, gid %u): the internet-facing router "
                           "must run as a user of its own",
                           name, (unsigned)pw.pw_uid, (unsigned)pw.pw_gid);
        if (found && (pw.pw_uid >= UID_BASE || pw.pw_gid >= UID_BASE))
            return err_set(e, ERR_INPUT,
                           "router_user %s has uid %u, gid %u: ids from %d up are the "
                           "containers'; use a system user",
                           name, (unsigned)pw.pw_uid, (unsigned)pw.pw_gid, UID_BASE);
        if (found) {
            r->uid = pw.pw_uid;
            r->gid = pw.pw_gid;
            return 0;
        }
        if (attempt > 0 || strcmp(name, ROUTER_DEFAULT_USER) != 0)
            return err_set(e, ERR_INPUT,
                           "router_user %s does not exist: create it (useradd --system "
                           "--user-group %s) or name another (docs/ROUTER.md)",
                           name, name);
        if (create_user(name, e) < 0)
            return -1;
    }
}

/* Who may reach what: the router's group searches dir, keys/ (it opens
 * <domain>.pem by name) and homes/; it adds its sockets to run/, sticky
 * and open to all (only root and its group can reach it): the kernel's
 * protected_symlinks then keeps the gate (root) from following a link
 * the router would leave there.  The containers see subscribe/ only. */
static int make_dirs(router_t *r, err_t *e)
{
    if (fs_mkdirs(r->dir, 0700, e) < 0 || fs_own_dir(r->dir, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->keys, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->subscribe, 0, 0, 0755, e) < 0 ||
        fs_own_dir(r->homes, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->run, 0, r->gid, 01733, e) < 0 ||
        fs_own_dir(r->tls, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->acme, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->acme_challenges, 0, r->gid, 0710, e) < 0 ||
        fs_own_dir(r->acme_certs, 0, r->gid, 0710, e) < 0)
        return -1;
    /* The mount point of <dir> in the router's namespace. */
    if (mkdir(ROUTER_INSIDE, 0755) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create %s: %s", ROUTER_INSIDE, strerror(errno));
    return 0;
}

/* The certificate of the names no vassal has one for: made once (a
 * client pinning it keeps working across restarts), self-signed. */
static int default_certificate(router_t *r, err_t *e)
{
    if (!r->o.https)
        return 0;
    char *key = str_printf("%s/default.key", r->tls), *crt = str_printf("%s/default.crt", r->tls);
    int rc = -1;
    if (!key || !crt)
        err_set(e, ERR_INTERNAL, "out of memory");
    else if (access(key, F_OK) == 0 && access(crt, F_OK) == 0)
        rc = 0;
    else if (tls_make_self_signed(DEFAULT_CERT_CN, DEFAULT_CERT_DAYS, key, crt, r->gid, e) == 0) {
        log_info("router: made the default certificate %s (self-signed, for names without one)",
                 crt);
        rc = 0;
    }
    free(key);
    free(crt);
    return rc;
}

/* Whether pid runs exactly argv (a reload re-execs the same command). */
static bool same_command(pid_t pid, char *const *argv)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    ssize_t len = fs_read_small(path, buf, sizeof buf);
    if (len <= 0)
        return false;
    size_t off = 0;
    for (int i = 0; argv[i]; i++) {
        size_t l = strlen(argv[i]) + 1;
        if (off + l > (size_t)len || memcmp(buf + off, argv[i], l) != 0)
            return false;
        off += l;
    }
    return off == (size_t)len;
}

/* Adopt the router a previous daemon left, if it runs as the router's
 * user; one running as anybody else (root, before this node ran it
 * unprivileged) is stopped, and a new one starts. */
static int adopt(router_t *r, err_t *e)
{
    pid_t pid = recorded(r->pid_path, &r->starttime);
    if (pid <= 0)
        return 0;
    long long uid = proc_uid(pid);
    if (uid != (long long)r->uid) {
        log_info("router: the running HTTP router (pid %d) runs as uid %lld, not as %s (uid %u): "
                 "restarting it",
                 (int)pid, uid, r->o.user, (unsigned)r->uid);
        r->starttime = 0;
        return router_stop_dir(r->dir, STOP_FOREIGN_MS, e);
    }
    if (!same_command(pid, r->argv)) {
        log_info("router: the running HTTP router (pid %d) was started with other options (an "
                 "older node, or router_http/router_https changed): restarting it",
                 (int)pid);
        r->starttime = 0;
        return router_stop_dir(r->dir, STOP_FOREIGN_MS, e);
    }
    if ((r->pidfd = pidfd_open(pid, 0)) >= 0) {
        r->pid = pid;
        r->started_ms = now_ms();
        log_info("router: adopted the running HTTP router (pid %d)", (int)pid);
    }
    return 0;
}

router_t *router_new(const router_opts_t *o, err_t *e)
{
    router_t *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    r->o = *o;
    r->pidfd = -1;
    if (!(r->dir = str_printf("%s", o->dir)) || !(r->keys = str_printf("%s/keys", o->dir)) ||
        !(r->subscribe = str_printf("%s/subscribe", o->dir)) ||
        !(r->log_path = str_printf("%s/router.log", o->dir)) ||
        !(r->pid_path = str_printf("%s/router.pid", o->dir)) ||
        !(r->homes = str_printf("%s/homes", o->dir)) ||
        !(r->run = str_printf("%s/run", o->dir)) ||
        !(r->server = str_printf("%s/run/subscription.sock", o->dir)) ||
        !(r->cluster_server = str_printf("%s/run/cluster-subscription.sock", o->dir)) ||
        !(r->tls = str_printf("%s/tls", o->dir)) || !(r->acme = str_printf("%s/acme", o->dir)) ||
        !(r->acme_challenges = str_printf("%s/acme/challenges", o->dir)) ||
        !(r->acme_certs = str_printf("%s/acme/certs", o->dir))) {
        err_set(e, ERR_INTERNAL, "router: out of memory");
        router_free(r);
        return NULL;
    }
    r->o.user = o->user ? o->user : ROUTER_DEFAULT_USER;
    if (find_user(r, r->o.user, e) < 0 || make_dirs(r, e) < 0 ||
        default_certificate(r, e) < 0 || protect_symlinks(e) < 0 ||
        !(r->plugins = plugin_list(r, e)) || build_argv(r, e) < 0 || adopt(r, e) < 0) {
        router_free(r);
        return NULL;
    }
    return r;
}

void router_free(router_t *r)
{
    if (!r)
        return;
    if (r->pidfd >= 0)
        close(r->pidfd);
    for (int i = 0; r->argv[i]; i++)
        free(r->argv[i]);
    free(r->dir);
    free(r->keys);
    free(r->subscribe);
    free(r->log_path);
    free(r->pid_path);
    free(r->homes);
    free(r->run);
    free(r->server);
    free(r->cluster_server);
    free(r->tls);
    free(r->acme);
    free(r->acme_challenges);
    free(r->acme_certs);
    free(r->plugins);
    free(r);
}

char *router_stats_path(const char *dir)
{
    return str_printf("%s/run/router-stats.sock", dir);
}

/* ---- start ------------------------------------------------------------------ */

/* The router's own process, after fork: nothing here allocates (the daemon
 * is multi-threaded). */
static void __attribute__((noreturn)) exec_router(const router_t *r, int log_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nul < 0 || dup2(nul, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
        _exit(126);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        dprintf(2, "imperium-node: router: mount namespace: %s\n", strerror(errno));
        _exit(126);
    }
    if (mkdir("/containers", 0755) < 0 && errno != EEXIST) {
        dprintf(2, "imperium-node: router: mkdir /containers: %s\n", strerror(errno));
        _exit(126);
    }
    if (mount(r->homes, "/containers", NULL, MS_BIND, NULL) < 0) {
        dprintf(2, "imperium-node: router: bind %s on /containers: %s\n", r->homes,
                strerror(errno));
        _exit(126);
    }
    if (mount(r->dir, ROUTER_INSIDE, NULL, MS_BIND, NULL) < 0 ||
        mount(NULL, ROUTER_INSIDE, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) < 0) {
        dprintf(2, "imperium-node: router: bind %s on %s: %s\n", r->dir, ROUTER_INSIDE,
                strerror(errno));
        _exit(126);
    }
    if (close_range(3, ~0U, 0) < 0) {
        /* close-on-exec covers the daemon's descriptors anyway */
    }
    /* Nothing it execs (its own reloads) may gain privileges: no setuid
     * binary, no file capabilities, even before uWSGI drops root. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || chdir("/") < 0) {
        dprintf(2, "imperium-node: router: no_new_privs: %s\n", strerror(errno));
        _exit(126);
    }
    /* Its sockets are its own (root reaches them anyway): the containers
     * talk to the gate. */
    umask(077);
    char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", NULL};
    execve(r->argv[0], r->argv, envp);
    dprintf(2, "imperium-node: router: exec %s: %s\n", r->argv[0], strerror(errno));
    _exit(127);
}

static int start(router_t *r, err_t *e)
{
    int log_fd = open(r->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (log_fd < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", r->log_path, strerror(errno));
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        close(log_fd);
        return err_set(e, ERR_INTERNAL, "pipe: %s", strerror(errno));
    }
    pid_t mid = fork();
    if (mid < 0) {
        int err = errno;
        close(log_fd);
        close(p[0]);
        close(p[1]);
        return err_set(e, ERR_INTERNAL, "fork: %s", strerror(err));
    }
    if (mid == 0) {
        setsid();
        pid_t gc = fork();
        if (gc == 0)
            exec_router(r, log_fd);
        int32_t v = gc;
        ssize_t w = write(p[1], &v, sizeof v);
        _exit(w == (ssize_t)sizeof v && gc > 0 ? 0 : 1);
    }
    close(p[1]);
    close(log_fd);
    int32_t v = -1;
    ssize_t got;
    while ((got = read(p[0], &v, sizeof v)) < 0 && errno == EINTR)
        ;
    close(p[0]);
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    if (got != (ssize_t)sizeof v || v <= 0)
        return err_set(e, ERR_INTERNAL, "fork the router failed");
    r->pid = v;
    char state = 0;
    if (proc_stat(r->pid, &r->starttime, &state) < 0 || (r->pidfd = pidfd_open(r->pid, 0)) < 0) {
        forget(r);
        return err_set(e, ERR_INTERNAL, "the router exited at once (see %s)", r->log_path);
    }
    r->started_ms = now_ms();
    record(r);
    log_info("router: HTTP router started on %s%s%s (pid %d, log %s)", r->o.http,
             r->o.https ? ", HTTPS on " : "", r->o.https ? r->o.https : "", (int)r->pid,
             r->log_path);
    return 0;
}

bool router_converge(router_t *r)
{
    long long now = now_ms();
    if (r->pid > 0) {
        if (r->reload_pending) {
            r->reload_pending = false;
            log_info("router: a domain's key changed or went away: reloading the router");
            kill(r->pid, SIGHUP);
        }
        return false;
    }
    if (now < r->due_ms)
        return false;
    r->reload_pending = false; /* a fresh router reads the keys anyway */
    err_t e;
    err_clear(&e);
    if (start(r, &e) < 0) {
        long long delay = backoff_ms(++r->failures);
        r->due_ms = now + delay;
        log_error("router: start: %s; retrying in %lld s", e.msg, delay / 1000);
        return false;
    }
    return true;
}

void router_events(router_t *r)
{
    if (r->pid <= 0)
        return;
    unsigned long long st = 0;
    char state = 0;
    if (proc_stat(r->pid, &st, &state) == 0 && st == r->starttime && state != 'Z')
        return; /* still there: a stale event */
    long long now = now_ms(), ran = now - r->started_ms;
    if (ran >= BACKOFF_RESET_MS)
        r->failures = 0;
    long long delay = backoff_ms(++r->failures);
    r->due_ms = now + delay;
    log_error("router: the HTTP router (pid %d) ended after %lld s; restarting it in %lld s (see %s)",
              (int)r->pid, ran / 1000, delay / 1000, r->log_path);
    forget(r);
}

long long router_next_deadline(const router_t *r)
{
    if (r->pid > 0)
        return r->reload_pending ? 0 : -1;
    return r->due_ms;
}

/* ---- keys --------------------------------------------------------------------- */

/* uWSGI's file name for a subscription key (uwsgi_sanitize_cert_filename):
 * every byte outside [0-9A-Za-z._-] becomes '_', then ".pem". */
static char *key_file_name(const char *name)
{
    char *s = str_printf("%s.pem", name);
    if (!s)
        return NULL;
    for (char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
              *c == '.' || *c == '-' || *c == '_'))
            *c = '_';
    return s;
}

/* A key file is root's, readable by the router's group only (0640). */
static int key_owner(int fd, gid_t gid)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (st.st_uid == 0 && st.st_gid == gid && (st.st_mode & 07777) == 0640)
        return 0;
    return fchown(fd, 0, gid) < 0 || fchmod(fd, 0640) < 0 ? -1 : 0;
}

/* The key file's text; its owner and mode are made right on the way (a
 * file an older node wrote 0644). */
static char *read_file(int dfd, const char *name, gid_t gid)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    if (key_owner(fd, gid) < 0)
        log_error("router: set owner and mode of key %s: %s", name, strerror(errno));
    buf_t b = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        if (buf_append(&b, chunk, (size_t)n) < 0)
            break;
    close(fd);
    if (n != 0 || buf_append(&b, "", 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int write_file(int dfd, const char *name, const char *data, gid_t gid)
{
    char tmp[300];
    if (snprintf(tmp, sizeof tmp, ".tmp-%s", name) >= (int)sizeof tmp)
        return -1;
    unlinkat(dfd, tmp, 0);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    if (key_owner(fd, gid) < 0) {
        close(fd);
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            unlinkat(dfd, tmp, 0);
            return -1;
        }
        off += (size_t)n;
    }
    if (close(fd) < 0 || renameat(dfd, tmp, dfd, name) < 0) {
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    return 0;
}

void router_set_domains(router_t *r, const spec_domain_t *domains, size_t n)
{
    int dfd = open(r->keys, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        log_error("router: open %s: %s", r->keys, strerror(errno));
        return;
    }
    json_t *wanted = json_object(); /* file name -> pubkey */
    for (size_t i = 0; i < n; i++) {
        const char *name = domains[i].name, *key = domains[i].pubkey;
        if (!wanted || !name || !*name || !key || !*key)
            continue;
        char *file = key_file_name(name);
        if (file)
            json_object_set_new(wanted, file, json_string(key));
        free(file);
    }
    if (!wanted) {
        close(dfd);
        log_error("router: keys: out of memory");
        return;
    }
    int added = 0, changed = 0, removed = 0;
    /* Remove what is no longer wanted. */
    DIR *dir = fdopendir(dup(dfd));
    struct dirent *de;
    while (dir && (de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' && (len <= 2 || !strncmp(de->d_name, ".tmp-", 5)))
            continue;
        if (len < 4 || strcmp(de->d_name + len - 4, ".pem") != 0)
            continue;
        if (!json_object_get(wanted, de->d_name)) {
            if (unlinkat(dfd, de->d_name, 0) == 0)
                removed++;
            else
                log_error("router: remove key %s: %s", de->d_name, strerror(errno));
        }
    }
    if (dir)
        closedir(dir);
    const char *file;
    json_t *v;
    json_object_foreach(wanted, file, v) {
        const char *key = json_string_value(v);
        char *old = read_file(dfd, file, r->gid);
        if (old && !strcmp(old, key)) {
            free(old);
            continue;
        }
        if (write_file(dfd, file, key, r->gid) < 0)
            log_error("router: write key %s/%s: %s", r->keys, file, strerror(errno));
        else if (old)
            changed++;
        else
            added++;
        free(old);
    }
    json_decref(wanted);
    close(dfd);
    if (added || changed || removed)
        log_info("router: domain keys: %d added, %d changed, %d removed", added, changed,
                 removed);
    /* uWSGI keeps a domain's key while the domain has subscribers: only a
     * fresh subscription table forgets a moved or deleted domain. */
    if (changed || removed)
        r->reload_pending = true;
}

/* ---- stop-all ------------------------------------------------------------------ */

int router_stop_dir(const char *dir, int timeout_ms, err_t *e)
{
    char *pid_path = str_printf("%s/router.pid", dir);
    if (!pid_path)
        return err_set(e, ERR_INTERNAL, "out of memory");
    unsigned long long st = 0;
    pid_t pid = recorded(pid_path, &st);
    if (pid <= 0) {
        free(pid_path);
        return 0;
    }
    log_info("router: stopping the HTTP router (pid %d)", (int)pid);
    kill(pid, SIGINT);
    long long deadline = now_ms() + timeout_ms;
    struct timespec ts = {0, 20 * 1000000L};
    while (recorded(pid_path, NULL) == pid) {
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            deadline = now_ms() + 2000;
            timeout_ms = -1;
        }
        nanosleep(&ts, NULL);
        if (timeout_ms < 0 && now_ms() >= deadline)
            break;
    }
    bool gone = recorded(pid_path, NULL) != pid;
    if (gone)
        unlink(pid_path);
    free(pid_path);
    if (!gone)
        return err_set(e, ERR_INTERNAL, "the HTTP router (pid %d) did not stop", (int)pid);
    return 0;
}
