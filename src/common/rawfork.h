/* rawfork.h - fork(2) as a bare clone3 system call, for the daemons'
 * threaded processes: no atfork handlers run (the child of a threaded
 * process may only make async-signal-safe calls anyway), and the caller
 * picks the exit signal (0: the node's SIGCHLD reaper, a waitpid(-1)
 * without __WCLONE, never takes the child, so its status stays the
 * caller's: waitid(P_PIDFD, ..., WEXITED | __WCLONE)) and may get a pidfd. */
#ifndef IMP_COMMON_RAWFORK_H
#define IMP_COMMON_RAWFORK_H

#include <sys/types.h>

/* 0 in the child, its pid in the parent (and *pidfd when pidfd is not
 * NULL), -1 with errno. */
pid_t raw_fork(int exit_signal, int *pidfd);

#endif
