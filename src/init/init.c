/* init.c - the container's PID 1 (imperium-init, see init_main.c).
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
#include "../runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
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
static void setup_stdio(const rt_init_args_t *a)
{
    int in = open("/dev/null", O_RDONLY);
    int out = open(a->log, O_WRONLY | O_APPEND | O_CREAT, 0644);
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

/* In the fresh child: stdio, signals, cwd, then execve.  On failure it
 * reports on the sync socket and exits 127. */
static void emperor_exec(const rt_init_args_t *a) __attribute__((noreturn));

static void emperor_exec(const rt_init_args_t *a)
{
    err_t e;
    reset_signals();
    setup_stdio(a);
    if (chdir(a->home) < 0) {
        err_set(&e, ERR_INTERNAL, "chdir %s: %s", a->home, strerrordesc_np(errno));
    } else {
        execve(a->argv[0], a->argv, a->envp);
        err_set(&e, ERR_INTERNAL, "exec the Emperor %s: %s", a->argv[0], strerrordesc_np(errno));
    }
    rt_report_fd(a->sync_fd, &e);
    _exit(127);
}

void rt_init(rt_init_args_t *a)
{
    sigset_t set;
    take_signals(&set);

    pid_t emperor = fork();
    if (emperor == 0)
        emperor_exec(a);
    if (emperor < 0) {
        err_t e;
        rt_fail(&e, "fork the Emperor");
        rt_report_fd(a->sync_fd, &e);
        _exit(1);
    }
    /* The parent reads the sync socket until EOF: that comes once the
     * Emperor has exec'd (close-on-exec) or reported why it could not. */
    close(a->sync_fd);
    a->sync_fd = -1;

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig < 0)
            continue; /* EINTR */
        int code = 1;
        if (sig == SIGCHLD) {
            if (reap(emperor, &code))
                _exit(code);
            continue;
        }
        kill(emperor, sig);
    }
}
