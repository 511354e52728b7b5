/* init_main.c - imperium-init, the container's PID 1.
 *
 *   imperium-init SYNC-FD LOG HOME -- EMPEROR-ARGV...   (environment: the Emperor's)
 *
 * The node's child execs it through a descriptor once the container is set
 * up (namespaces, mounts, hostname, loopback, cgroups) and the process runs
 * as the container's uid with no capabilities and no_new_privs
 * (container.c).  It is a program of its own so that PID 1 holds nothing of
 * the node daemon's memory (which has every customer's keys) and is
 * single-threaded from its first instruction, which lets it build the
 * seccomp filter here (seccomp.c allocates).
 *
 * Steps: block signals, not dumpable, the seccomp filter, then init.c
 * (fork the Emperor, reap, forward signals).  Any error before the Emperor
 * has exec'd goes to SYNC-FD, which the node reads to EOF: it becomes the
 * node's log line and the container's status.last_error. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "../runtime/runtime.h"
#include "../runtime/seccomp.h"

extern char **environ;

static void fail(int fd, err_t *e) __attribute__((noreturn));
static void fail(int fd, err_t *e)
{
    rt_report_fd(fd, e);
    _exit(1);
}

/* argv as described above; -1 (with e) when it is not that. */
static int parse(int argc, char **argv, rt_init_args_t *a, err_t *e)
{
    char *end = NULL;
    if (argc < 6 || strcmp(argv[4], "--") != 0)
        return err_set(e, ERR_INPUT, "imperium-init: usage: imperium-init SYNC-FD LOG HOME -- "
                                     "COMMAND... (started by imperium-node only)");
    long fd = strtol(argv[1], &end, 10);
    if (!*argv[1] || *end || fd < 0 || fd > 1024)
        return err_set(e, ERR_INPUT, "imperium-init: bad sync descriptor '%s'", argv[1]);
    a->sync_fd = (int)fd;
    a->log = argv[2];
    a->home = argv[3];
    a->argv = argv + 5;
    a->envp = environ;
    return 0;
}

int main(int argc, char **argv)
{
    /* Signals stay blocked for good (init.c takes them with sigwaitinfo);
     * the child blocked them before exec already, this is belt and braces. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    rt_init_args_t a;
    err_t e;
    err_clear(&e);
    if (parse(argc, argv, &a, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 2;
    }
    /* The sync socket must not reach the Emperor: it reads EOF once the
     * Emperor has exec'd. */
    if (fcntl(a.sync_fd, F_SETFD, FD_CLOEXEC) < 0)
        fail(-1, &e);
    /* The name ps shows (exec through a descriptor would name it after the
     * descriptor); a failure changes nothing else. */
    prctl(PR_SET_NAME, "imperium-init", 0, 0, 0);
    /* exec made us dumpable again: the customer's processes (same uid)
     * have no business tracing PID 1. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 && rt_fail(&e, "imperium-init: not dumpable") < 0)
        fail(a.sync_fd, &e);
    if (sc_install(&e) < 0)
        fail(a.sync_fd, &e);
    rt_init(&a);
}
