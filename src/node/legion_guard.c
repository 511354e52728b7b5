/* legion_guard.c - `imperium-legion-hook guard`: the single-threaded parent
 * of a node's uWSGI legion member (legion.h, docs/CLUSTER.md).
 *
 * Why a parent of its own: the member must end, and the floating address
 * leave the uplink, when the node daemon dies, kill -9 included.  The daemon
 * is threaded, and the kernel re-sends PR_SET_PDEATHSIG at each reparenting
 * among its dying threads: a member that were its direct child got SIGINT
 * several times, and a later one interrupted uWSGI's waitpid() of its death
 * hook (the address stayed beside the new Lord's).  The guard takes those
 * signals instead, gives the member exactly one SIGINT (its graceful death:
 * the death announcement, the unlord hook), SIGKILL if it lingers, and once
 * the member has ended removes the address itself, whatever the member did. */
#include "legion.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "netpolicy.h"

/* The member's graceful stop before the guard kills it: below the daemon's
 * LEGION_STOP_WAIT_MS, so the guard, not the daemon, is the one to kill. */
#define GUARD_STOP_MS (LEGION_STOP_WAIT_MS - 1000)

/* The signals that ask the member to stop: the daemon's (SIGINT), a
 * parent's death (PDEATHSIG), an operator's. */
static void stop_signals(sigset_t *s)
{
    sigemptyset(s);
    sigaddset(s, SIGINT);
    sigaddset(s, SIGTERM);
    sigaddset(s, SIGHUP);
    sigaddset(s, SIGQUIT);
}

/* In the child: the member, which gets SIGINT if the guard dies. */
static void __attribute__((noreturn)) exec_member(char **argv, pid_t guard)
{
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 ||
        prctl(PR_SET_PDEATHSIG, SIGINT, 0, 0, 0) < 0 || getppid() != guard)
        _exit(127);
    execv(argv[0], argv);
    fprintf(stderr, "%s guard: exec %s: %s\n", LEGION_HOOK_NAME, argv[0], strerror(errno));
    _exit(127);
}

/* Wait for the member, forwarding one stop: its wait status, -1 with e. */
static int watch_member(int sfd, int pidfd, pid_t pid, err_t *e)
{
    long long deadline = -1; /* set by the first stop: SIGKILL then */
    for (;;) {
        struct pollfd p[2] = {{.fd = pidfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int timeout = deadline < 0 ? -1 : (int)(deadline > now_ms() ? deadline - now_ms() : 0);
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR)
            return err_set(e, ERR_INTERNAL, "guard: poll: %s", strerror(errno));
        if (n == 0) {
            fprintf(stderr, "%s guard: the member did not stop within %d ms: killed\n",
                    LEGION_HOOK_NAME, GUARD_STOP_MS);
            if (pidfd_send_signal(pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
                return err_set(e, ERR_INTERNAL, "guard: SIGKILL: %s", strerror(errno));
            deadline = -1;
            continue;
        }
        if (n > 0 && (p[0].revents & POLLIN)) {
            int status;
            while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                    return err_set(e, ERR_INTERNAL, "guard: waitpid: %s", strerror(errno));
            return status;
        }
        struct signalfd_siginfo si;
        if (n > 0 && (p[1].revents & POLLIN) && read(sfd, &si, sizeof si) == sizeof si &&
            deadline < 0) {
            /* Only the first: a second SIGINT breaks uWSGI's graceful death. */
            if (pidfd_send_signal(pidfd, SIGINT, NULL, 0) < 0 && errno != ESRCH)
                return err_set(e, ERR_INTERNAL, "guard: SIGINT: %s", strerror(errno));
            deadline = now_ms() + GUARD_STOP_MS;
        }
    }
}

/* argv = {prog, "guard", ADDR|-, IFNAME|-, MEMBER, ARGS...}: the member's
 * exit status (128 + signal when killed), -1 with e. */
int legion_guard_run(int argc, char **argv, err_t *e)
{
    if (argc < 5 || strcmp(argv[1], "guard"))
        return err_set(e, ERR_INPUT, "usage: %s guard ADDR|- IFNAME|- MEMBER [ARGS...]",
                       LEGION_HOOK_NAME);
    const char *addr = strcmp(argv[2], "-") ? argv[2] : NULL;
    const char *ifname = strcmp(argv[3], "-") ? argv[3] : NULL;
    if (!addr != !ifname)
        return err_set(e, ERR_INPUT, "guard: give both ADDR and IFNAME, or neither ('-')");
    if (ifname && (netpolicy_check_ifname(ifname, e) < 0 || !*ifname))
        return e->msg[0] ? -1 : err_set(e, ERR_INPUT, "the interface name is empty");
    sigset_t stop;
    stop_signals(&stop);
    if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0)
        return err_set(e, ERR_INTERNAL, "guard: sigprocmask: %s", strerror(errno));
    int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
    if (sfd < 0)
        return err_set(e, ERR_INTERNAL, "guard: signalfd: %s", strerror(errno));
    pid_t self = getpid();
    pid_t pid = fork(); /* single-threaded: a plain fork */
    if (pid == 0)
        exec_member(argv + 4, self);
    int pidfd = pid > 0 ? pidfd_open(pid, 0) : -1;
    if (pidfd < 0) {
        int err = errno;
        close(sfd);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return err_set(e, ERR_INTERNAL, "guard: start %s: %s", argv[4], strerror(err));
    }
    int status = watch_member(sfd, pidfd, pid, e);
    if (status < 0) { /* the guard cannot watch: the member goes too */
        pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        waitpid(pid, NULL, 0);
    }
    close(pidfd);
    close(sfd);
    /* Whatever the member did (its hook interrupted, killed -9): the
     * address goes with it. */
    err_t ae;
    err_clear(&ae);
    int rc = addr ? legion_address(addr, ifname, false, &ae) : 0;
    if (rc < 0)
        fprintf(stderr, "%s guard: %s\n", LEGION_HOOK_NAME, ae.msg);
    else if (rc == 1)
        fprintf(stderr, "%s guard: the member ended: %s removed from %s\n", LEGION_HOOK_NAME,
                addr, ifname);
    if (status < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
