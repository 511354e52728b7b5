/* init.c - the container's PID 1.
 *
 * It must stay tiny and never die early: when PID 1 of a pid namespace
 * exits, the kernel kills everything else in it.  So it starts the Emperor,
 * reaps every orphan that gets reparented to it (zombies would otherwise
 * pile up), forwards the signals the node sends, and exits with the
 * Emperor's status once the Emperor is gone - the node then decides
 * whether to restart the container.
 *
 * Signals stay blocked and are taken with sigwaitinfo(): no handler code
 * runs asynchronously.  No-op handlers are installed as well: the kernel
 * discards a signal whose action is the default when it is sent to a pid
 * namespace's init (unless it is blocked), so with handlers SIGTERM from
 * the node gets through whatever the mask. */
#include "runtime.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

static void no_op(int sig) { (void)sig; }

static void take_signals(sigset_t *set)
{
    struct sigaction sa;
    sigemptyset(set);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sa.sa_handler = no_op;
    sigaddset(set, SIGCHLD);
    sigaction(SIGCHLD, &sa, NULL);
    for (size_t i = 0; i < N_FORWARDED; i++) {
        sigaddset(set, forwarded[i]);
        sigaction(forwarded[i], &sa, NULL);
    }
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

/* Reap everything that is dead; true (and *code) once the Emperor is. */
static int reap(pid_t emperor, int *code)
{
    int status, done = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (pid == emperor) {
            *code = exit_code(status);
            done = 1;
        }
    return done;
}

void rt_init(rt_plan_t *p)
{
    sigset_t set;
    take_signals(&set);
    /* The name ps shows (cosmetic: a failure changes nothing else). */
    prctl(PR_SET_NAME, "imperium-init", 0, 0, 0);

    pid_t emperor = rt_clone(0);
    if (emperor == 0)
        rt_emperor_exec(p);
    if (emperor < 0) {
        err_t e;
        rt_fail(&e, "fork the Emperor");
        rt_report(p, &e);
        _exit(1);
    }
    /* The parent reads the sync socket until EOF: that comes once the
     * Emperor has exec'd (close-on-exec) or reported why it could not. */
    close(p->sync_fd);
    p->sync_fd = -1;

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig < 0)
            continue; /* EINTR */
        int code = 1;
        if (sig == SIGCHLD) {
            if (reap(emperor, &code))
                _exit(code); /* _exit: no atexit handlers of the node's image */
            continue;
        }
        kill(emperor, sig);
    }
}
