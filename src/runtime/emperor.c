/* emperor.c - the customer's uWSGI Emperor: its command line and
 * environment, and the exec of imperium-init that starts it (init.c runs
 * the Emperor itself, in the container).
 *
 *   uwsgi --master --emperor /containers/<uid>/vassals
 *         --vassals-include-before /run/imperium/platform.ini
 *         [--vassals-include-before /run/imperium/shortcuts.ini]
 *         --vassals-include /run/imperium/after.ini
 *         --emperor-wrapper /run/imperium/vassal --emperor-graceful-shutdown
 *         --emperor-freq 1
 *         --logto /containers/<uid>/logs/emperor.log --log-maxsize 104857600
 *         --log-backupname /containers/<uid>/logs/emperor.log.1
 *         --die-on-term [--emperor-nofollow]
 *
 * IMPERIUM_CLUSTER, in the Emperor's environment and so every vassal's, is
 * the node's cluster endpoint (container_spec_t.cluster), which the
 * `cluster-domain` shortcut subscribes for the Legion's Lord.
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
 * master (it would imply one anyway); without log-backupname uWSGI renames
 * the full log to emperor.log.<unix time> at every rotation and never
 * deletes one (checked with 2.0.21), so the home would fill with old logs:
 * with it there is one backup, replaced each time (node setting
 * emperor_log_maxsize, default 100 MB, PLATFORM.md).  die-on-term makes SIGTERM a shutdown
 * instead of uWSGI's default brutal reload.  The Emperor already runs as
 * the container's uid, so there is no --uid/--gid.
 *
 * --emperor-nofollow (the container's `nofollow`, API.md): the Emperor
 * takes a vassal's mtime from a symbolic link in vassals/ itself (lstat)
 * rather than from the file it points to, so touching the target no longer
 * reloads the vassal (touching the link, `touch -h`, does). */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container.h"
#include "quota.h"

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

/* imperium-init SYNC LOG HOME -- EMPEROR-ARGV... (init_main.c). */
static int init_plan(rt_plan_t *p, err_t *e)
{
    int a = 0;
    char **iv = p->init_argv;
    if (!(iv[a++] = plan_str(p, e, "imperium-init")) ||
        !(iv[a++] = plan_str(p, e, "%d", RT_INIT_SYNC_FD)) ||
        !(iv[a++] = plan_str(p, e, "%s", p->log_inside)) ||
        !(iv[a++] = plan_str(p, e, "%s", p->home_inside)) || !(iv[a++] = plan_str(p, e, "--")))
        return -1;
    for (int i = 0; p->argv[i]; i++)
        iv[a++] = p->argv[i]; /* RT_MAX_ARGS + 8 leaves room for both */
    iv[a] = NULL;
    return 0;
}

int rt_emperor_plan(rt_plan_t *p, const char *uwsgi, bool shortcuts, err_t *e)
{
    /* QUOTA_CMD_DIR first: its `quota` stands in for quota(1) (quota.h). */
    const char *fixed_env[] = {"PATH=" QUOTA_CMD_DIR
                               ":/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
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
    /* After the vassal: the waits it asked for (mounts.c, platform_after). */
    if (!(argv[a++] = plan_str(p, e, "--vassals-include")) ||
        !(argv[a++] = plan_str(p, e, "%s", RT_PLATFORM_AFTER_INI)))
        return -1;
    if (!(argv[a++] = plan_str(p, e, "--emperor-wrapper")) ||
        !(argv[a++] = plan_str(p, e, "%s", RT_VASSAL_WRAPPER)) ||
        !(argv[a++] = plan_str(p, e, "--emperor-graceful-shutdown")) ||
        !(argv[a++] = plan_str(p, e, "--emperor-freq")) || !(argv[a++] = plan_str(p, e, "1")) ||
        !(argv[a++] = plan_str(p, e, "--logto")) ||
        !(argv[a++] = plan_str(p, e, "%s", p->log_inside)) ||
        !(argv[a++] = plan_str(p, e, "--log-maxsize")) ||
        !(argv[a++] = plan_str(p, e, "%d", p->log_maxsize)) ||
        !(argv[a++] = plan_str(p, e, "--log-backupname")) ||
        !(argv[a++] = plan_str(p, e, "%s.1", p->log_inside)) ||
        !(argv[a++] = plan_str(p, e, "--die-on-term")))
        return -1;
    if (p->nofollow && !(argv[a++] = plan_str(p, e, "--emperor-nofollow")))
        return -1;
    argv[a] = NULL;
    if (!(envp[v++] = plan_str(p, e, "HOME=%s", p->home_inside)) ||
        !(envp[v++] = plan_str(p, e, "IMPERIUM_CLUSTER=%s",
                               p->cluster[0] ? p->cluster : RT_NO_CLUSTER)) ||
        !(envp[v++] = plan_str(p, e, "USER=%d", p->uid)) ||
        !(envp[v++] = plan_str(p, e, "LOGNAME=%d", p->uid)))
        return -1;
    for (size_t i = 0; i < sizeof fixed_env / sizeof fixed_env[0]; i++)
        if (!(envp[v++] = plan_str(p, e, "%s", fixed_env[i])))
            return -1;
    envp[v] = NULL;
    return init_plan(p, e);
}

int rt_exec_init(const rt_plan_t *p, err_t *e)
{
    /* Through the descriptor: the host's copy of the binary, whatever the
     * container's root holds at that path.  The environment is the
     * Emperor's: imperium-init passes it on unchanged. */
    syscall(SYS_execveat, p->init_fd, "", p->init_argv, p->envp, AT_EMPTY_PATH);
    return rt_fail(e, "exec the container's init (imperium-init)");
}
