/* runtime.h - the container's first process: what it needs and its steps.
 *
 * container_start() fills an rt_plan_t in the parent, then clones the child
 * with new namespaces.  The child (which becomes the container's PID 1) only
 * reads the plan: every path, argument and environment string is formatted
 * beforehand, so between clone and exec nothing allocates (the daemon that
 * calls this is multi-threaded: a malloc lock held by another thread at
 * clone time would never be released in the child).  Errors travel back on
 * a socket as one line naming the failing step. */
#ifndef IMP_NODE_RUNTIME_H
#define IMP_NODE_RUNTIME_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "state.h"

#define RT_PATH STATE_PATH_MAX
#define RT_MAX_ARGS 24
#define RT_MAX_ENV 16

/* Where the platform's own read-only files live inside every container. */
#define RT_PLATFORM_DIR "/run/imperium"
#define RT_PLUGINS_DIR RT_PLATFORM_DIR "/plugins"
#define RT_PLATFORM_INI RT_PLATFORM_DIR "/platform.ini"
#define RT_SHORTCUTS_INI RT_PLATFORM_DIR "/shortcuts.ini"
#define RT_VASSAL_WRAPPER RT_PLATFORM_DIR "/vassal" /* --emperor-wrapper (mounts.c) */
#define RT_CGROUP_DIR "/run/cgroup"
#define RT_SUBSCRIBE_DIR "/run/subscribe" /* the HTTP router's subscription socket */

typedef struct {
    int uid; /* also the gid */
    char hostname[65];

    /* Host side, resolved in the child's copy of the host mount tree. */
    char rootfs[RT_PATH];   /* the distro */
    char staging[RT_PATH];  /* <state>/<uid>/rootfs: the pivot_root mountpoint */
    char home[RT_PATH];     /* the home on the host */
    char hide[2][RT_PATH];  /* node directories to cover if the distro shows them */
    char cg_limit[RT_PATH]; /* cgroup files shown in /run/cgroup */
    char cg_usage[RT_PATH];
    char subscribe[RT_PATH]; /* the router's socket directory ("": none) */
    char sockets_run[RT_PATH]; /* mounted on the home's run/ ("": none) */

    /* Inside. */
    char home_inside[64];  /* /containers/<uid> */
    char log_inside[128];  /* <home_inside>/logs/emperor.log */
    const char *shortcuts; /* the shortcuts file's text (NULL: none) */
    size_t shortcuts_len;

    /* The Emperor (emperor.c). */
    char *argv[RT_MAX_ARGS];
    char *envp[RT_MAX_ENV];
    char strings[8192];
    size_t strings_used;

    /* The child's end of a socketpair with the parent: the parent sends
     * "go" once the child is in its cgroup; the child answers with one
     * error line, or with EOF once the Emperor has exec'd (close-on-exec). */
    int sync_fd;
} rt_plan_t;

/* namespaces.c */
#define RT_CLONE_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)
/* fork(2) semantics through clone3 with the given namespace flags and no
 * atfork handlers (see above); 0 in the child, -1 on error. */
pid_t rt_clone(unsigned long long flags);
int rt_enter_cgroup_ns(err_t *e);
int rt_set_hostname(const rt_plan_t *p, err_t *e);
int rt_loopback_up(err_t *e);
/* uid/gid, no supplementary groups, no capabilities of any kind,
 * no_new_privs. */
int rt_drop_privileges(int uid, err_t *e);

/* mounts.c: private propagation, the distro read-only as /, the home, /tmp,
 * /var/tmp, /run, /var/log, /usr/local, /proc, /dev (docs/NODE.md). */
int rt_mounts(const rt_plan_t *p, err_t *e);

/* emperor.c */
int rt_emperor_plan(rt_plan_t *p, const char *uwsgi, bool shortcuts, err_t *e);
/* In a fresh child of init: stdio, signals, cwd, then execve.  Never
 * returns: on failure it reports on sync_fd and exits 127. */
void rt_emperor_exec(const rt_plan_t *p) __attribute__((noreturn));

/* init.c: the container's PID 1, after setup.  Starts the Emperor, reaps
 * every zombie, forwards SIGTERM/SIGINT/SIGQUIT/SIGHUP/SIGUSR1/SIGUSR2 to
 * it, and exits with its status when it exits. */
void rt_init(rt_plan_t *p) __attribute__((noreturn));

/* Send err's message to the parent (async-signal-safe). */
void rt_report(const rt_plan_t *p, const err_t *e);
/* err_set for a failed syscall: "<step>: <description of errno>". */
int rt_fail(err_t *e, const char *step);

#endif
