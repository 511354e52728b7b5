/* seccomp.c - the container's system-call filter (seccomp.h), with
 * libseccomp.
 *
 * Starting point: Docker's default profile for a container without added
 * capabilities.  We keep its effect with the opposite shape - everything is
 * allowed except a deny list - because customers run arbitrary programs
 * (uWSGI and its plugins, python, perl, ruby, shells, sftp-server, their own
 * binaries) and an allow list that misses a new but harmless call breaks
 * them in ways they cannot fix, while the calls worth refusing are few and
 * known.  The price: a system call added to a future kernel is allowed
 * until it is listed here (the container has no capabilities, so anything
 * privileged is still refused by the kernel itself).
 *
 *   - EPERM for what Docker refuses an unprivileged container: kernel
 *     modules, kexec, reboot, clocks, swap, quotas, accounting, the kernel
 *     keyring, BPF, perf events, userfaultfd, io_uring (Docker 25+), mounts
 *     (old and fd-based API), pivot_root, namespaces (setns, unshare, and
 *     clone with any CLONE_NEW* flag: no user namespace, hence none of the
 *     kernel code only a namespace's "root" may reach), file handles,
 *     syslog, I/O ports, vm86, and obsolete calls;
 *   - ENOSYS for clone3: its flags sit behind a pointer seccomp cannot
 *     read, so (like Docker) libc is told it does not exist and falls back
 *     to clone, whose flags are checked;
 *   - a foreign architecture (i386, x32 on x86_64) kills the process: its
 *     system-call numbers are different and would bypass the list.
 * adjtimex stays allowed (as in Docker): reading the clock's state is
 * harmless and setting it needs CAP_SYS_TIME.  ptrace stays allowed too
 * (gdb, strace): the kernel already refuses it across uids, and inside a
 * container there is no other uid to trace. */
#include "seccomp.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>

static const char *const denied[] = {
    /* modules, kexec, reboot */
    "create_module", "delete_module", "init_module", "finit_module", "get_kernel_syms",
    "query_module", "kexec_load", "kexec_file_load", "reboot",
    /* clocks (adjtimex: see above) */
    "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64", "settimeofday",
    "stime",
    /* system administration */
    "acct", "swapon", "swapoff", "quotactl", "quotactl_fd", "syslog", "vhangup", "nfsservctl",
    "lookup_dcookie", "sysfs", "_sysctl", "uselib", "ustat", "iopl", "ioperm", "vm86",
    "vm86old",
    /* the kernel keyring */
    "add_key", "keyctl", "request_key",
    /* large kernel attack surface for unprivileged users */
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init", "io_uring_setup",
    "io_uring_enter", "io_uring_register",
    /* mounts and namespaces */
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
    "fspick", "fsconfig", "mount_setattr", "setns", "unshare",
    /* file handles: open_by_handle_at escapes a chroot */
    "name_to_handle_at", "open_by_handle_at",
};

static const unsigned long long clone_ns_flags[] = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

static int add_rules(scmp_filter_ctx ctx, err_t *e)
{
    int rc;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* unknown to this libseccomp: no kernel it targets has it */
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) < 0)
            return err_set(e, ERR_INTERNAL, "seccomp: deny %s: %s", denied[i], strerror(-rc));
    }
    /* clone(flags, ...) on x86_64 and most arches (s390 swaps the first two
     * arguments, but s390 is not a target): one rule per namespace flag. */
    for (size_t i = 0; i < sizeof clone_ns_flags / sizeof clone_ns_flags[0]; i++) {
        unsigned long long f = clone_ns_flags[i];
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                   SCMP_A0(SCMP_CMP_MASKED_EQ, f, f))) < 0)
            return err_set(e, ERR_INTERNAL, "seccomp: clone rule: %s", strerror(-rc));
    }
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
        return err_set(e, ERR_INTERNAL, "seccomp: clone3 rule: %s", strerror(-rc));
    return 0;
}

int sc_install(err_t *e)
{
    /* Only the native architecture is in the filter: any other one (and
     * x32's numbers on x86_64) meets the bad-architecture action. */
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return err_set(e, ERR_INTERNAL, "seccomp: cannot create the filter (out of memory)");
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc < 0)
        err_set(e, ERR_INTERNAL, "seccomp: bad-architecture action: %s", strerror(-rc));
    else if ((rc = add_rules(ctx, e)) == 0 && (rc = seccomp_load(ctx)) < 0)
        err_set(e, ERR_INTERNAL, "seccomp: load the filter: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc < 0 ? -1 : 0;
}
