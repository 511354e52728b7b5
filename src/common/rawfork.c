/* rawfork.c - fork(2) as a bare system call (rawfork.h). */
#include "rawfork.h"

#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* struct clone_args of linux/sched.h, first version (linux/sched.h and
 * glibc's sched.h both define the CLONE_ flags). */
struct raw_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

pid_t raw_fork(int exit_signal, int *pidfd)
{
    struct raw_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = pidfd ? CLONE_PIDFD : 0;
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = (uint64_t)exit_signal;
    return (pid_t)syscall(SYS_clone3, &args, sizeof args);
}
