/* acme.c - certificates from an ACME server for auto-ssl-domain (acme.h). */
#include "acme.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/rawfork.h"
#include "../common/strutil.h"
#include "../runtime/home.h"
#include "tlsfiles.h"

#define ROUTER_LOG_MAX (1 << 20) /* as the gate's: logs/router.log stops at 1 MiB */
#define OUT_MAX 16384            /* what we keep of uacme's output */
#define TOKEN_MAX 128
#define RUN_SETUP_FAILED 126 /* uacme's exit codes are 0, 1, 2: */
#define RUN_EXEC_FAILED 127  /* these and RUN_SIGNALED + signal are ours */
#define RUN_SIGNALED 192
#define DAY_S 86400

/* ---- pure rules ------------------------------------------------------------ */

bool acme_name_ok(const char *name, char *why, size_t len)
{
    size_t n = strlen(name);
    if (name[0] == '.' || name[0] == '*') {
        snprintf(why, len,
                 "a wildcard cannot be proven with an HTTP-01 challenge; use ssl-domain with a "
                 "certificate of your own for it");
        return false;
    }
    bool dot = false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                  (c == '.' && i > 0 && name[i - 1] != '.' && i + 1 < n);
        if (!ok)
            break;
        dot |= c == '.';
        if (i + 1 == n && dot && n <= 253)
            return true;
    }
    snprintf(why, len,
             "'%s' is not a domain name a certificate can be issued for (lowercase letters, "
             "digits, '-' and inner dots, at least one dot, at most 253 bytes)",
             name);
    return false;
}

/* The customer of container uid in the state, NULL when unknown. */
static const char *customer_of(const spec_state_t *s, long long uid)
{
    for (size_t i = 0; i < s->server.n_all_containers; i++)
        if (s->server.all_containers[i].uid == uid && s->server.all_containers[i].customer)
            return s->server.all_containers[i].customer;
    for (size_t i = 0; i < s->n_containers; i++)
        if (s->containers[i].uid == uid && s->containers[i].customer.uuid)
            return s->containers[i].customer.uuid;
    return NULL;
}

/* The domain of the state that routes name: itself, or the nearest
 * wildcard (".example.org") above it, as the router's dotsplit. */
static const spec_domain_t *domain_of(const spec_state_t *s, const char *name)
{
    for (const char *at = name; at; at = strchr(at + 1, '.')) {
        for (size_t i = 0; i < s->n_domains; i++)
            if (s->domains[i].name && strcmp(s->domains[i].name, at) == 0)
                return &s->domains[i];
    }
    return NULL;
}

bool acme_owner_ok(const spec_state_t *s, const char *name, long long uid, char *why,
                   size_t len)
{
    const char *mine = customer_of(s, uid);
    const spec_domain_t *d = domain_of(s, name);
    if (!d) {
        snprintf(why, len, "the domain %s is not one of your domains (add it with the API first)",
                 name);
        return false;
    }
    if (!mine || !d->customer || strcmp(mine, d->customer) != 0) {
        snprintf(why, len, "the domain %s belongs to another customer", name);
        return false;
    }
    return true;
}

time_t acme_renew_at(time_t not_after, int renew_days)
{
    return not_after - (time_t)renew_days * DAY_S;
}

/* 1..max characters of [A-Za-z0-9_-], ending at `end` (NUL or '.'). */
static size_t b64url_run(const char *s, size_t max)
{
    size_t i = 0;
    while (s[i] && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
        i++;
    return i >= 1 && i <= max ? i : 0;
}

int acme_hook_check(int argc, char *const argv[], err_t *e)
{
    if (argc != 6)
        return err_set(e, ERR_INPUT, "usage: %s METHOD TYPE IDENT TOKEN AUTH (as uacme calls it)",
                       ACME_HOOK_NAME);
    const char *method = argv[1], *type = argv[2], *ident = argv[3], *token = argv[4],
               *auth = argv[5];
    if (strcmp(method, "begin") != 0 && strcmp(method, "done") != 0 &&
        strcmp(method, "failed") != 0)
        return err_set(e, ERR_INPUT, "unknown method '%s' (begin, done or failed)", method);
    if (strcmp(type, "http-01") != 0)
        return err_set(e, ERR_INPUT, "challenge type %s declined: only http-01 is answered", type);
    char why[512];
    if (!acme_name_ok(ident, why, sizeof why))
        return err_set(e, ERR_INPUT, "identifier refused: %s", why);
    size_t t = b64url_run(token, TOKEN_MAX);
    if (!t || token[t])
        return err_set(e, ERR_INPUT, "token refused: 1 to %d of [A-Za-z0-9_-]", TOKEN_MAX);
    /* RFC 8555 8.1: keyAuthorization = token || '.' || base64url(thumbprint). */
    if (strncmp(auth, token, t) != 0 || auth[t] != '.' || !b64url_run(auth + t + 1, TOKEN_MAX) ||
        auth[t + 1 + b64url_run(auth + t + 1, TOKEN_MAX)])
        return err_set(e, ERR_INPUT, "key authorization refused: not <token>.<thumbprint>");
    return 0;
}

int acme_hook_run(int dirfd, int argc, char *const argv[], err_t *e)
{
    if (acme_hook_check(argc, argv, e) < 0)
        return -1;
    const char *token = argv[4], *auth = argv[5];
    if (strcmp(argv[1], "begin") == 0) {
        struct stat st;
        if (fstat(dirfd, &st) < 0)
            return err_set(e, ERR_INTERNAL, "the challenges directory: %s", strerror(errno));
        /* The router reads it through its group, the directory's. */
        return tls_write_at(dirfd, token, auth, strlen(auth), st.st_gid, e);
    }
    if (unlinkat(dirfd, token, 0) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove the challenge %s: %s", token, strerror(errno));
    return 0;
}

void acme_reason(const char *out, char *why, size_t len)
{
    why[0] = '\0';
    const char *best = NULL;
    size_t best_len = 0;
    for (const char *l = out; *l;) {
        const char *end = strchrnul(l, '\n');
        size_t n = (size_t)(end - l);
        while (n && (l[n - 1] == '\r' || l[n - 1] == ' '))
            n--;
        /* uacme's own lines of complaint win over anything else said. */
        if (n && (!best || strncmp(l, "uacme: ", 7) == 0 || strncmp(best, "uacme: ", 7) != 0)) {
            best = l;
            best_len = n;
        }
        l = *end ? end + 1 : end;
    }
    if (!best)
        return;
    if (best_len >= 7 && strncmp(best, "uacme: ", 7) == 0) {
        best += 7;
        best_len -= 7;
    }
    snprintf(why, len, "%.*s", (int)best_len, best);
}

/* ---- the thread's records ---------------------------------------------------- */

typedef struct {
    char *name;
    uid_t uid;
    long long wanted_ms; /* its last acme_want */
    long long due_ms;    /* when the thread looks at it next; 0: now */
    bool refused;        /* looked at again when the state changes */
    int failures;        /* issuances failed in a row: the retry delay doubles */
} want_t;

struct acme {
    acme_opts_t o; /* strings below are copies */
    char *directory, *ca_bundle, *email, *uacme, *hook;
    char *dir, *challenges, *certs, *state, *containers_dir;
    int certs_fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop;
    want_t *wants; /* under mu */
    size_t n_wants, cap_wants;
    spec_state_t *owners; /* domains[] and containers' customers; under mu */
    int child_pidfd;      /* a uacme run in flight, under mu (acme_stop kills it) */
    bool account_ok;      /* `uacme new` done by this process */
};

/* One line in the container's logs/router.log, and the node's log. */
static void tell(const acme_t *a, uid_t uid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tell(const acme_t *a, uid_t uid, const char *fmt, ...)
{
    char line[1024], home[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_info("acme: container %u: %s", (unsigned)uid, line);
    if (snprintf(home, sizeof home, "%s/%u", a->containers_dir, (unsigned)uid) >=
        (int)sizeof home)
        return;
    if (home_append_log(home, (int)uid, "logs/router.log", "router", line, ROUTER_LOG_MAX) < 0)
        log_debug("acme: logs/router.log of %u: %s", (unsigned)uid, strerror(errno));
}

/* ---- running uacme ----------------------------------------------------------- */

/* What the child needs, made before the fork (it may only make
 * async-signal-safe calls: the node has threads). */
typedef struct {
    char *const *argv;
    char *const *envp;
    const char *path;   /* uacme */
    int out, devnull;   /* its stdout and stderr; stdin */
    const char *bundle; /* NULL: the system's CA bundle */
} run_t;

#define SYS_BUNDLE_DIR "/etc/ssl/certs"
#define SYS_BUNDLE SYS_BUNDLE_DIR "/ca-certificates.crt"

/* Debian's uacme links libcurl-gnutls, built with the CA path
 * /etc/ssl/certs (and no bundle file), and GnuTLS's system trust is
 * /etc/ssl/certs/ca-certificates.crt: an empty tmpfs on /etc/ssl/certs
 * holding only the bundle as ca-certificates.crt is then all uacme
 * trusts, in a mount namespace of its own. */
/* n in decimal at out (16 bytes at least), NUL-ended: async-signal-safe. */
static void utoa(unsigned n, char *out)
{
    char tmp[16];
    int i = 0;
    do
        tmp[i++] = (char)('0' + n % 10);
    while ((n /= 10) && i < 15);
    while (i)
        *out++ = tmp[--i];
    *out = '\0';
}

static const char *private_bundle(const run_t *r)
{
    if (unshare(CLONE_NEWNS) < 0)
        return "unshare(CLONE_NEWNS)";
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return "make / private";
    if (!r->bundle)
        return NULL;
    /* Opened in the new namespace (a bind's source must be in it) and
     * before the tmpfs, which may hide it. */
    int b = open(r->bundle, O_RDONLY | O_CLOEXEC);
    if (b < 0)
        return "open acme_ca_bundle";
    char src[48] = "/proc/self/fd/";
    utoa((unsigned)b, src + strlen(src));
    if (mount("tmpfs", SYS_BUNDLE_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=64k") < 0)
        return "mount a tmpfs on " SYS_BUNDLE_DIR;
    int f = open(SYS_BUNDLE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f < 0)
        return "create " SYS_BUNDLE;
    close(f);
    if (mount(src, SYS_BUNDLE, NULL, MS_BIND, NULL) < 0)
        return "bind acme_ca_bundle on " SYS_BUNDLE;
    return NULL;
}

/* In the middle: say which step failed (write(2) only), then exit. */
static void setup_failed(const run_t *r, const char *step)
{
    static const char head[] = "could not prepare uacme's namespace: ";
    char num[16];
    utoa((unsigned)errno, num);
    if (write(r->out, head, sizeof head - 1) < 0 || write(r->out, step, strlen(step)) < 0 ||
        write(r->out, " failed: errno ", 15) < 0 || write(r->out, num, strlen(num)) < 0 ||
        write(r->out, "\n", 1) < 0)
        _exit(RUN_SETUP_FAILED);
    _exit(RUN_SETUP_FAILED);
}

static void uacme_exec(const run_t *r, pid_t middle)
{
    int o = fcntl(r->out, F_DUPFD, 10), n = fcntl(r->devnull, F_DUPFD, 10);
    if (o < 0 || n < 0 || dup2(n, 0) < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0 ||
        syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
        _exit(RUN_SETUP_FAILED);
    /* Dies with the middle, which the node kills after ACME_RUN_TIMEOUT_S. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || syscall(SYS_getppid) != middle || chdir("/") < 0)
        _exit(RUN_SETUP_FAILED);
    execve(r->path, r->argv, r->envp);
    _exit(RUN_EXEC_FAILED);
}

/* The middle process, started with no exit signal: the node's SIGCHLD
 * reaper (waitpid(-1) without __WCLONE, supervisor.c) never takes it, so
 * uacme's exit status is ours (uacme itself cannot be that child: an
 * execve makes the exit signal SIGCHLD again). */
static void middle(const run_t *r)
{
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        setup_failed(r, "sigprocmask");
    const char *step = private_bundle(r);
    if (step)
        setup_failed(r, step);
    pid_t me = (pid_t)syscall(SYS_getpid);
    pid_t pid = raw_fork(SIGCHLD, NULL);
    if (pid == 0)
        uacme_exec(r, me);
    if (pid < 0)
        _exit(RUN_SETUP_FAILED);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            _exit(RUN_SETUP_FAILED);
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : RUN_SIGNALED + WTERMSIG(st));
}

/* Read the child's output until it ends, the deadline passes or the node
 * stops; true when it ended by itself. */
static bool watch(acme_t *a, int fd, int pidfd, char *out, size_t size, long long deadline)
{
    size_t used = strlen(out);
    bool eof = false;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool stop = a->stop;
        pthread_mutex_unlock(&a->mu);
        long long left = deadline - now_ms();
        if (stop || left <= 0)
            return false;
        struct pollfd p[2] = {{.fd = eof ? -1 : fd, .events = POLLIN},
                              {.fd = pidfd, .events = POLLIN}};
        int n = poll(p, 2, left > 200 ? 200 : (int)left);
        if (n < 0 && errno != EINTR)
            return false;
        if (n > 0 && p[0].revents) {
            char buf[1024];
            ssize_t got = read(fd, buf, sizeof buf);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                eof = true;
            for (ssize_t i = 0; i < got && used + 1 < size; i++)
                out[used++] = buf[i];
            out[used] = '\0';
        }
        if (n > 0 && p[1].revents && (eof || !(p[0].revents & POLLIN)))
            return true;
    }
}

/* Run uacme with argv; its exit status (RUN_* when it could not), its
 * output in out. */
static int run_uacme(acme_t *a, char *const argv[], char *out, size_t size)
{
    char env_dir[PATH_MAX + 64];
    snprintf(env_dir, sizeof env_dir, "%s=%s", ACME_HOOK_ENV, a->challenges);
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", env_dir, NULL};
    run_t r = {.argv = argv, .envp = envp, .path = a->uacme, .bundle = a->ca_bundle};
    out[0] = '\0';
    int pfd[2] = {-1, -1}, pidfd = -1;
    /* Said here in words; the child only says which step failed. */
    if (a->ca_bundle && access(a->ca_bundle, R_OK) < 0) {
        snprintf(out, size, "the node's acme_ca_bundle %s: %s", a->ca_bundle, strerror(errno));
        return RUN_SETUP_FAILED;
    }
    r.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t pid = -1;
    if (r.devnull >= 0 && pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == 0) {
        r.out = pfd[1];
        pid = raw_fork(0, &pidfd);
        if (pid == 0)
            middle(&r);
    }
    int err = errno;
    if (pfd[1] >= 0)
        close(pfd[1]);
    if (r.devnull >= 0)
        close(r.devnull);
    if (pid < 0) {
        if (pfd[0] >= 0)
            close(pfd[0]);
        snprintf(out, size, "could not run %s: %s", a->uacme, strerror(err));
        return RUN_SETUP_FAILED;
    }
    pthread_mutex_lock(&a->mu);
    a->child_pidfd = pidfd;
    pthread_mutex_unlock(&a->mu);
    bool ended = watch(a, pfd[0], pidfd, out, size, now_ms() + ACME_RUN_TIMEOUT_S * 1000LL);
    close(pfd[0]);
    if (!ended) /* the middle; uacme dies with it (PDEATHSIG) */
        pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | __WCLONE) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&a->mu);
    a->child_pidfd = -1;
    pthread_mutex_unlock(&a->mu);
    close(pidfd);
    if (!ended) {
        snprintf(out, size, "uacme did not finish within %d s (killed)", ACME_RUN_TIMEOUT_S);
        return RUN_SIGNALED + SIGKILL;
    }
    if (si.si_code != CLD_EXITED)
        return RUN_SIGNALED + si.si_status;
    return si.si_status;
}

/* ---- obtaining a certificate ---------------------------------------------- */

/* A whole small file of ours (uacme's output, an installed pair), NUL-ended;
 * NULL when missing or unreadable. */
static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= TLS_FILE_MAX &&
        (buf = malloc((size_t)st.st_size + 1))) {
        ssize_t n = read(fd, buf, (size_t)st.st_size);
        if (n != st.st_size) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    if (fd >= 0)
        close(fd);
    return buf;
}

/* Read and check the pair in (key_path, crt_path) for name: 0 with its
 * expiry and texts (the caller frees), -1 with why. */
static int read_pair(const char *key_path, const char *crt_path, const char *name, char **key,
                     size_t *key_len, char **crt, size_t *crt_len, time_t *not_after, char *why,
                     size_t len)
{
    *key = read_file(key_path, key_len);
    *crt = *key ? read_file(crt_path, crt_len) : NULL;
    if (!*crt) {
        snprintf(why, len, "cannot read %s: %s", *key ? crt_path : key_path, strerror(errno));
    } else if (tls_check_pair(*key, *key_len, *crt, *crt_len, name, not_after, why, len) == 0) {
        return 0;
    }
    free(*key);
    free(*crt);
    *key = *crt = NULL;
    return -1;
}

/* The certificate installed for name is good until *not_after: true. */
static bool installed(acme_t *a, const char *name, time_t *not_after)
{
    char *kp = str_printf("%s/%s.key", a->certs, name), *cp = str_printf("%s/%s.crt", a->certs, name);
    char *key = NULL, *crt = NULL, why[512];
    size_t kl, cl;
    bool ok = kp && cp && read_pair(kp, cp, name, &key, &kl, &crt, &cl, not_after, why, sizeof why) == 0;
    free(key);
    free(crt);
    free(kp);
    free(cp);
    return ok;
}

/* The ACME account, once per process (`uacme new` answers an account that
 * exists already with its URL). */
static int account(acme_t *a, char *why, size_t len)
{
    if (a->account_ok)
        return 0;
    char *argv[] = {a->uacme, "-c", a->state, "-a", a->directory, "-y", "new", a->email, NULL};
    char out[OUT_MAX];
    int rc = run_uacme(a, argv, out, sizeof out);
    if (rc != 0 && !strstr(out, "already")) {
        acme_reason(out, why, len);
        if (!why[0])
            snprintf(why, len, "uacme new ended with status %d", rc);
        return -1;
    }
    a->account_ok = true;
    return 0;
}

/* Issue a certificate for name and install it: 0 with its expiry, -1 with why. */
static int obtain(acme_t *a, const char *name, time_t *not_after, char *why, size_t len)
{
    if (account(a, why, len) < 0)
        return -1;
    char *argv[] = {a->uacme, "-c", a->state, "-a", a->directory, "-h", a->hook, "-t", "EC",
                    "-y", "-f", "issue", (char *)name, NULL};
    char out[OUT_MAX];
    int rc = run_uacme(a, argv, out, sizeof out);
    if (rc != 0) {
        acme_reason(out, why, len);
        if (!why[0])
            snprintf(why, len, "uacme ended with status %d", rc);
        if (strstr(out, "new'") || strstr(out, "account"))
            a->account_ok = false; /* the server forgot it (a new CA): made again next time */
        return -1;
    }
    char *kp = str_printf("%s/private/%s/key.pem", a->state, name),
         *cp = str_printf("%s/%s/cert.pem", a->state, name);
    char *key = NULL, *crt = NULL;
    size_t kl = 0, cl = 0;
    err_t e;
    err_clear(&e);
    int ok = -1;
    if (!kp || !cp)
        snprintf(why, len, "out of memory");
    else if (read_pair(kp, cp, name, &key, &kl, &crt, &cl, not_after, why, len) < 0)
        ;
    else if (tls_install_pair(a->certs_fd, name, key, kl, crt, cl, a->o.router_gid, &e) < 0)
        snprintf(why, len, "could not be installed: %.400s", e.msg);
    else
        ok = 0;
    free(key);
    free(crt);
    free(kp);
    free(cp);
    return ok;
}

static void date_of(time_t t, char *out, size_t len)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%d %H:%M UTC", &tm))
        snprintf(out, len, "%lld", (long long)t);
}

/* Look at one name: the milliseconds (from now) until the next look. */
static long long handle(acme_t *a, const char *name, uid_t uid, int failures, bool *refused,
                        bool *failed)
{
    char why[512];
    long long retry_ms = a->o.retry_s * 1000LL;
    *refused = true;
    if (!acme_name_ok(name, why, sizeof why)) {
        tell(a, uid, "auto-ssl-domain %s refused: %s", name, why);
        return retry_ms;
    }
    if (!a->directory) {
        tell(a, uid, "auto-ssl-domain %s refused: this node has no ACME directory (its "
                     "acme_directory setting is empty): ask the supplier",
             name);
        return retry_ms;
    }
    pthread_mutex_lock(&a->mu);
    bool mine = a->owners && acme_owner_ok(a->owners, name, uid, why, sizeof why);
    pthread_mutex_unlock(&a->mu);
    if (!mine) {
        tell(a, uid, "auto-ssl-domain %s refused: %s", name, why);
        return retry_ms;
    }
    *refused = false;
    time_t not_after, now = time(NULL);
    if (installed(a, name, &not_after) && now < acme_renew_at(not_after, a->o.renew_days)) {
        long long left = (long long)(acme_renew_at(not_after, a->o.renew_days) - now);
        return (left > DAY_S ? DAY_S : left) * 1000;
    }
    if (obtain(a, name, &not_after, why, sizeof why) < 0) {
        /* Each failure in a row doubles the delay (up to ACME_RETRY_MAX_MS):
         * a name that cannot be had does not keep the node's one account
         * busy. */
        long long delay = retry_ms;
        for (int i = 0; i < failures && delay < ACME_RETRY_MAX_MS; i++)
            delay *= 2;
        delay = delay > ACME_RETRY_MAX_MS ? ACME_RETRY_MAX_MS : delay;
        *failed = true;
        tell(a, uid, "certificate for %s could not be obtained from %s: %s; retried in %lld s",
             name, a->directory, why, delay / 1000);
        return delay;
    }
    char until[64];
    date_of(not_after, until, sizeof until);
    tell(a, uid, "certificate for %s obtained from %s, valid until %s", name, a->directory, until);
    long long left = (long long)(acme_renew_at(not_after, a->o.renew_days) - time(NULL)) * 1000;
    return left < retry_ms ? retry_ms : left > DAY_S * 1000LL ? DAY_S * 1000LL : left;
}

/* ---- the thread --------------------------------------------------------------- */

static want_t *find(acme_t *a, const char *name)
{
    for (size_t i = 0; i < a->n_wants; i++)
        if (strcmp(a->wants[i].name, name) == 0)
            return &a->wants[i];
    return NULL;
}

/* Under mu: drop names nobody asked for lately; the next due one (NULL:
 * none), and in *wait_ms how long until it is. */
static want_t *next_due(acme_t *a, long long now, long long *wait_ms)
{
    want_t *best = NULL;
    for (size_t i = 0; i < a->n_wants;) {
        if (now - a->wants[i].wanted_ms > ACME_FORGET_MS) {
            free(a->wants[i].name);
            a->wants[i] = a->wants[--a->n_wants];
            continue;
        }
        if (!best || a->wants[i].due_ms < best->due_ms)
            best = &a->wants[i];
        i++;
    }
    *wait_ms = !best ? 60000 : best->due_ms > now ? best->due_ms - now : 0;
    return best;
}

static void *thread_main(void *arg)
{
    acme_t *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        long long now = now_ms(), wait;
        want_t *w = next_due(a, now, &wait);
        /* Nothing is decided before the first state: who owns what. */
        if (!w || wait > 0 || !a->owners) {
            struct timespec until = clock_after_ms(wait > 60000 || wait <= 0 ? 60000 : (int)wait);
            pthread_cond_timedwait(&a->cv, &a->mu, &until);
            continue;
        }
        char *name = strdup(w->name);
        uid_t uid = w->uid;
        int failures = w->failures;
        w->due_ms = now + a->o.retry_s * 1000LL; /* while it runs */
        pthread_mutex_unlock(&a->mu);
        bool refused = false, failed = false;
        long long next =
            name ? handle(a, name, uid, failures, &refused, &failed) : a->o.retry_s * 1000LL;
        pthread_mutex_lock(&a->mu);
        if (name && (w = find(a, name)) != NULL) {
            w->due_ms = now_ms() + next;
            w->refused = refused;
            w->failures = failed ? w->failures + 1 : 0;
        }
        free(name);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Under mu: the names `uid` asks for now. */
static size_t wants_of(const acme_t *a, uid_t uid)
{
    size_t n = 0;
    for (size_t i = 0; i < a->n_wants; i++)
        n += a->wants[i].uid == uid;
    return n;
}

/* Under mu: may `uid` ask for `name`?  Decided here, at the announcement,
 * so the gate refuses the packet: a name that is not the asker's never
 * touches the record (its retry delay, who hears of it) of its owner's. */
static bool want_ok(const acme_t *a, const char *name, uid_t uid, const want_t *w, char *why,
                    size_t len)
{
    if (!acme_name_ok(name, why, len))
        return false;
    if (!a->directory) {
        snprintf(why, len, "this node has no ACME directory (its acme_directory setting is "
                           "empty): ask the supplier");
        return false;
    }
    /* Before the first state nothing is known: the thread decides then. */
    if (a->owners && !acme_owner_ok(a->owners, name, uid, why, len))
        return false;
    if (!w && wants_of(a, uid) >= ACME_MAX_NAMES_PER_UID) {
        snprintf(why, len,
                 "the container already asks for %d automatic certificates, the node's bound",
                 ACME_MAX_NAMES_PER_UID);
        return false;
    }
    return true;
}

bool acme_want(acme_t *a, const char *name, uid_t uid, char *why, size_t why_len)
{
    if (!a || !name)
        return snprintf(why, why_len, "automatic certificates are not enabled"), false;
    pthread_mutex_lock(&a->mu);
    want_t *w = find(a, name);
    if (!want_ok(a, name, uid, w, why, why_len)) {
        pthread_mutex_unlock(&a->mu);
        return false;
    }
    if (w) /* the latest asker hears the next outcome (two containers may share a name) */
        w->uid = uid;
    if (!w && a->n_wants == a->cap_wants) {
        size_t cap = a->cap_wants ? a->cap_wants * 2 : 8;
        want_t *more = realloc(a->wants, cap * sizeof *more);
        if (more) {
            a->wants = more;
            a->cap_wants = cap;
        }
    }
    if (!w && a->n_wants < a->cap_wants) {
        char *copy = strdup(name);
        if (copy) {
            w = &a->wants[a->n_wants++];
            *w = (want_t){.name = copy, .uid = uid, .due_ms = 0};
            pthread_cond_signal(&a->cv);
        }
    }
    if (w)
        w->wanted_ms = now_ms();
    else
        snprintf(why, why_len, "the node is out of memory");
    pthread_mutex_unlock(&a->mu);
    return w != NULL;
}

bool acme_want_cb(void *arg, const char *name, uid_t uid, char *why, size_t why_len)
{
    return acme_want(arg, name, uid, why, why_len);
}

/* ---- the state ------------------------------------------------------------------ */

static void owners_free(spec_state_t *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->n_domains; i++) {
        free(o->domains[i].name);
        free(o->domains[i].customer);
    }
    for (size_t i = 0; i < o->server.n_all_containers; i++)
        free(o->server.all_containers[i].customer);
    free(o->domains);
    free(o->server.all_containers);
    free(o);
}

/* The part of a state acme_owner_ok reads, copied: every container's
 * customer (startable or not) and each domain's. */
static spec_state_t *owners_copy(const spec_state_t *s)
{
    spec_state_t *o = calloc(1, sizeof *o);
    size_t nc = s->server.n_all_containers + s->n_containers;
    if (!o || !(o->domains = calloc(s->n_domains + 1, sizeof *o->domains)) ||
        !(o->server.all_containers = calloc(nc + 1, sizeof *o->server.all_containers))) {
        owners_free(o);
        return NULL;
    }
    for (size_t i = 0; i < s->n_domains; i++, o->n_domains++) {
        const spec_domain_t *d = &s->domains[i];
        o->domains[i].name = d->name ? strdup(d->name) : NULL;
        o->domains[i].customer = d->customer ? strdup(d->customer) : NULL;
    }
    for (size_t i = 0; i < nc; i++, o->server.n_all_containers++) {
        bool known = i < s->server.n_all_containers;
        const spec_container_t *c = known ? NULL : &s->containers[i - s->server.n_all_containers];
        const char *cust = known ? s->server.all_containers[i].customer : c->customer.uuid;
        o->server.all_containers[i].uid = known ? s->server.all_containers[i].uid : c->uid;
        o->server.all_containers[i].customer = cust ? strdup(cust) : NULL;
    }
    return o;
}

void acme_set_state(acme_t *a, const spec_state_t *s)
{
    if (!a || !s)
        return;
    spec_state_t *o = owners_copy(s);
    if (!o) {
        log_error("acme: the new state: out of memory (the last one stays)");
        return;
    }
    pthread_mutex_lock(&a->mu);
    owners_free(a->owners);
    a->owners = o;
    /* A refusal may not hold any more (a domain added, moved). */
    for (size_t i = 0; i < a->n_wants; i++)
        if (a->wants[i].refused)
            a->wants[i].due_ms = 0;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* ---- start, stop -------------------------------------------------------------- */

/* dir (root:gid, mode) made or put right: the node's own tree. */
/* Challenges a run killed with the node left behind: each is valid only
 * during its order, which is over. */
static void clear_challenges(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        log_warn("acme: %s: %s", path, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")))
            if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                log_warn("acme: remove %s/%s: %s", path, de->d_name, strerror(errno));
    closedir(d);
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static int paths(acme_t *a, const acme_opts_t *o, err_t *e)
{
    char hook[PATH_MAX];
    if (!o->hook && fs_beside_self(ACME_HOOK_NAME, hook, sizeof hook, e) < 0)
        return -1;
    a->directory = dup_or_null(o->directory);
    a->ca_bundle = dup_or_null(o->ca_bundle);
    a->email = dup_or_null(o->email);
    a->uacme = strdup(o->uacme ? o->uacme : ACME_UACME);
    a->hook = strdup(o->hook ? o->hook : hook);
    a->containers_dir = strdup(o->containers_dir);
    a->dir = str_printf("%s/acme", o->router_dir);
    a->challenges = str_printf("%s/acme/challenges", o->router_dir);
    a->certs = str_printf("%s/acme/certs", o->router_dir);
    a->state = str_printf("%s/acme/state", o->router_dir);
    if (!a->uacme || !a->hook || !a->containers_dir || !a->dir || !a->challenges || !a->certs ||
        !a->state || (o->directory && *o->directory && !a->directory))
        return err_set(e, ERR_INTERNAL, "out of memory");
    /* Said at start rather than at every name's failure. */
    if (access(a->uacme, X_OK) < 0)
        return err_set(e, ERR_INPUT, "acme: %s: %s (automatic HTTPS needs Debian's uacme)",
                       a->uacme, strerror(errno));
    if (access(a->hook, X_OK) < 0)
        return err_set(e, ERR_INPUT, "acme: the challenge hook %s: %s (it is installed beside "
                                     "imperium-node)", a->hook, strerror(errno));
    return 0;
}

acme_t *acme_start(const acme_opts_t *o, err_t *e)
{
    acme_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    a->o = *o;
    a->certs_fd = a->child_pidfd = -1;
    if (a->o.renew_days <= 0)
        a->o.renew_days = ACME_DEFAULT_RENEW_DAYS;
    if (a->o.retry_s <= 0)
        a->o.retry_s = ACME_DEFAULT_RETRY_S;
    pthread_condattr_t ca;
    bool sync = pthread_condattr_init(&ca) == 0;
    sync = sync && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
           pthread_cond_init(&a->cv, &ca) == 0;
    if (sync && pthread_mutex_init(&a->mu, NULL) != 0) {
        pthread_cond_destroy(&a->cv);
        sync = false;
    }
    pthread_condattr_destroy(&ca);
    if (!sync) {
        err_set(e, ERR_INTERNAL, "acme: pthread init failed");
        free(a);
        return NULL;
    }
    a->running = false;
    if (paths(a, o, e) < 0 || fs_own_dir(a->dir, 0, o->router_gid, 0710, e) < 0 ||
        fs_own_dir(a->challenges, 0, o->router_gid, 0710, e) < 0 ||
        fs_own_dir(a->certs, 0, o->router_gid, 0710, e) < 0 ||
        fs_own_dir(a->state, 0, 0, 0700, e) < 0) {
        acme_stop(a);
        return NULL;
    }
    clear_challenges(a->challenges);
    if ((a->certs_fd = open(a->certs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        err_set(e, ERR_INTERNAL, "acme: open %s: %s", a->certs, strerror(errno));
        acme_stop(a);
        return NULL;
    }
    int rc = pthread_create(&a->thread, NULL, thread_main, a);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "acme: start the thread: %s", strerror(rc));
        acme_stop(a);
        return NULL;
    }
    a->running = true;
    log_info("acme: certificates for auto-ssl-domain from %s%s%s",
             a->directory ? a->directory : "nowhere (acme_directory is empty: refused)",
             a->ca_bundle ? ", trusting " : "", a->ca_bundle ? a->ca_bundle : "");
    return a;
}

void acme_stop(acme_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    if (a->child_pidfd >= 0)
        pidfd_send_signal(a->child_pidfd, SIGKILL, NULL, 0);
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->running)
        pthread_join(a->thread, NULL);
    for (size_t i = 0; i < a->n_wants; i++)
        free(a->wants[i].name);
    free(a->wants);
    owners_free(a->owners);
    if (a->certs_fd >= 0)
        close(a->certs_fd);
    free(a->directory);
    free(a->ca_bundle);
    free(a->email);
    free(a->uacme);
    free(a->hook);
    free(a->containers_dir);
    free(a->dir);
    free(a->challenges);
    free(a->certs);
    free(a->state);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}
