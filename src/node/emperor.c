/* emperor.c - the customer's uWSGI Emperor: its command line, environment,
 * and the exec inside the container.
 *
 *   uwsgi --master --emperor /containers/<uid>/vassals
 *         --vassals-include-before /run/imperium/platform.ini
 *         [--vassals-include-before /run/imperium/shortcuts.ini]
 *         --emperor-wrapper /run/imperium/vassal --emperor-graceful-shutdown
 *         --emperor-freq 1
 *         --logto /containers/<uid>/logs/emperor.log --log-maxsize 104857600
 *         --die-on-term
 *
 * The wrapper (written by mounts.c) exports IMPERIUM_VASSAL, the vassal's
 * file name, which the `domain` shortcut puts in the socket name: stable
 * across reloads, so a touched vassal keeps its socket and its place in
 * the router.  Graceful shutdown: a vassal removed from vassals/ first
 * unsubscribes, then lets its workers finish the requests they hold.
 * emperor-freq 1: the Emperor looks at vassals/ every second instead of
 * every 3 (a vassal file dropped there serves within about a second; the
 * scan is a readdir and a stat per file).
 *
 * platform.ini comes *before* each vassal's own file because it sets
 * plugins-dir, an immediate option that must precede the vassal's
 * `plugin = 0:python`; the shortcuts come before it as well: uWSGI 2.0
 * expands a custom option (declare-option2) only if it was declared before
 * the line that uses it (checked with 2.0.21: declared after, `domain =`
 * is silently ignored).  log-maxsize needs a
 * master (it would imply one anyway); die-on-term makes SIGTERM a shutdown
 * instead of uWSGI's default brutal reload.  The Emperor already runs as
 * the container's uid, so there is no --uid/--gid. */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOG_MAXSIZE "104857600" /* 100 MB, PLATFORM.md */

/* Copy a formatted string into the plan's string area. */
static char *plan_str(rt_plan_t *p, err_t *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static char *plan_str(rt_plan_t *p, err_t *e, const char *fmt, ...)
{
    size_t room = sizeof p->strings - p->strings_used;
    char *out = p->strings + p->strings_used;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        err_set(e, ERR_INTERNAL, "the Emperor's command line is too long");
        return NULL;
    }
    p->strings_used += (size_t)n + 1;
    return out;
}

int rt_emperor_plan(rt_plan_t *p, const char *uwsgi, bool shortcuts, err_t *e)
{
    const char *fixed_env[] = {"PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
                               "LANG=C.UTF-8", "SHELL=/bin/sh"};
    int a = 0, v = 0;
    char **argv = p->argv, **envp = p->envp;
    if (!(argv[a++] = plan_str(p, e, "%s", uwsgi)) || !(argv[a++] = plan_str(p, e, "--master")) ||
        !(argv[a++] = plan_str(p, e, "--emperor")) ||
        !(argv[a++] = plan_str(p, e, "%s/vassals", p->home_inside)) ||
        !(argv[a++] = plan_str(p, e, "--vassals-include-before")) ||
        !(argv[a++] = plan_str(p, e, "%s", RT_PLATFORM_INI)))
        return -1;
    /* Before the vassal too: uWSGI 2.0 resolves a custom option only when
     * its declare-option2 was parsed before the line using it. */
    if (shortcuts && (!(argv[a++] = plan_str(p, e, "--vassals-include-before")) ||
                      !(argv[a++] = plan_str(p, e, "%s", RT_SHORTCUTS_INI))))
        return -1;
    if (!(argv[a++] = plan_str(p, e, "--emperor-wrapper")) ||
        !(argv[a++] = plan_str(p, e, "%s", RT_VASSAL_WRAPPER)) ||
        !(argv[a++] = plan_str(p, e, "--emperor-graceful-shutdown")) ||
        !(argv[a++] = plan_str(p, e, "--emperor-freq")) || !(argv[a++] = plan_str(p, e, "1")) ||
        !(argv[a++] = plan_str(p, e, "--logto")) ||
        !(argv[a++] = plan_str(p, e, "%s", p->log_inside)) ||
        !(argv[a++] = plan_str(p, e, "--log-maxsize")) ||
        !(argv[a++] = plan_str(p, e, "%s", LOG_MAXSIZE)) ||
        !(argv[a++] = plan_str(p, e, "--die-on-term")))
        return -1;
    argv[a] = NULL;
    if (!(envp[v++] = plan_str(p, e, "HOME=%s", p->home_inside)) ||
        !(envp[v++] = plan_str(p, e, "USER=%d", p->uid)) ||
        !(envp[v++] = plan_str(p, e, "LOGNAME=%d", p->uid)))
        return -1;
    for (size_t i = 0; i < sizeof fixed_env / sizeof fixed_env[0]; i++)
        if (!(envp[v++] = plan_str(p, e, "%s", fixed_env[i])))
            return -1;
    envp[v] = NULL;
    return 0;
}

/* Signals as a fresh program expects them: default actions (an ignored
 * signal would stay ignored across exec) and nothing blocked. */
static void reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL); /* fails harmlessly for SIGKILL/SIGSTOP */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* stdin from /dev/null; stdout and stderr to emperor.log, so what uWSGI
 * says before --logto takes over is not lost.  We run as the customer
 * already, so opening their log file grants nothing. */
static void setup_stdio(const rt_plan_t *p)
{
    int in = open("/dev/null", O_RDONLY);
    int out = open(p->log_inside, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (out < 0)
        out = open("/dev/null", O_WRONLY);
    if (in >= 0 && in != 0) {
        dup2(in, 0);
        close(in);
    }
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
        if (out > 2)
            close(out);
    }
}

void rt_emperor_exec(const rt_plan_t *p)
{
    err_t e;
    reset_signals();
    setup_stdio(p);
    if (chdir(p->home_inside) < 0) {
        err_set(&e, ERR_INTERNAL, "chdir %s: %s", p->home_inside, strerrordesc_np(errno));
    } else {
        execve(p->argv[0], p->argv, p->envp);
        err_set(&e, ERR_INTERNAL, "exec the Emperor %s: %s", p->argv[0], strerrordesc_np(errno));
    }
    rt_report(p, &e);
    _exit(127);
}

void rt_report(const rt_plan_t *p, const err_t *e)
{
    /* One short message; MSG_NOSIGNAL: a parent that gave up is no reason
     * to die of SIGPIPE. */
    size_t len = strnlen(e->msg, sizeof e->msg);
    if (p->sync_fd >= 0 && len > 0) {
        ssize_t n = send(p->sync_fd, e->msg, len, MSG_NOSIGNAL);
        (void)n;
    }
}
