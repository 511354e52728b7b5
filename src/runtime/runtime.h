/* runtime.h - the container's first process: what it needs and its steps.
 *
 * container_start() fills an rt_plan_t in the parent, then clones the child
 * with new namespaces.  The child only reads the plan: every path, argument
 * and environment string is formatted beforehand, so between clone and exec
 * nothing allocates (the daemon that calls this is multi-threaded: a malloc
 * lock held by another thread at clone time would never be released in the
 * child).  The child does the privileged setup, drops to the container's
 * uid and execs imperium-init (init_main.c) through a descriptor opened
 * before clone: the container's PID 1 is then a small program of its own,
 * not a copy of the node daemon's memory (every customer's keys).  Errors
 * travel back on a socket as one line naming the failing step, from the
 * child and then from imperium-init until the Emperor has exec'd. */
#ifndef IMP_RUNTIME_RUNTIME_H
#define IMP_RUNTIME_RUNTIME_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "net.h"
#include "state.h"

#define RT_PATH STATE_PATH_MAX
#define RT_MAX_ARGS 32
#define RT_MAX_ENV 16

/* Where the platform's own read-only files live inside every container. */
#define RT_PLATFORM_DIR "/run/imperium"
#define RT_PLUGINS_DIR RT_PLATFORM_DIR "/plugins"
#define RT_PLATFORM_INI RT_PLATFORM_DIR "/platform.ini"
/* Included after each vassal's own file (mounts.c): what must see its options. */
#define RT_PLATFORM_AFTER_INI RT_PLATFORM_DIR "/after.ini"
/* Seconds a stopped vassal keeps serving after it unsubscribed (mounts.c). */
#define RT_DRAIN_SECONDS "1"
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
    int log_maxsize;       /* bytes past which uWSGI renames it to <log_inside>.1 */
    const char *shortcuts; /* the shortcuts file's text (NULL: none) */
    size_t shortcuts_len;
    char quota_cmd[2048];  /* QUOTA_CMD_DIR/quota (quota_script) */
    int quota_cmd_len;
    bool nofollow;         /* the Emperor runs with --emperor-nofollow */
    char cluster[64];      /* IMPERIUM_CLUSTER (container_spec_t.cluster) */

    /* The Emperor (emperor.c). */
    char *argv[RT_MAX_ARGS];
    char *envp[RT_MAX_ENV];
    char strings[8192];
    size_t strings_used;

    /* imperium-init's command line (init_main.c): its options, "--", then
     * the Emperor's argv; its environment is the Emperor's envp. */
    char *init_argv[RT_MAX_ARGS + 8];

    /* uwsgi0 (net.h): the parent made the veth before "go"; the child
     * gives it its address, MTU and default route (net.on false: lo only). */
    net_spec_t net;

    /* The child's end of a socketpair with the parent: the parent sends
     * "go" once the child is in its cgroup; the child (then imperium-init)
     * answers with one error line, or with EOF once the Emperor has exec'd
     * (close-on-exec). */
    int sync_fd;
    /* imperium-init, opened O_PATH in the parent (the child's mount
     * namespace no longer shows the host's files). */
    int init_fd;
} rt_plan_t;

/* Where the child puts the two descriptors before it execs imperium-init
 * (every other one is closed). */
#define RT_INIT_SYNC_FD 3
#define RT_INIT_EXE_FD 4

/* namespaces.c */
#define RT_CLONE_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)
/* fork(2) semantics through clone3 with the given namespace flags and no
 * atfork handlers (see above); 0 in the child, -1 on error. */
pid_t rt_clone(unsigned long long flags);
int rt_enter_cgroup_ns(err_t *e);
int rt_set_hostname(const rt_plan_t *p, err_t *e);
int rt_loopback_up(err_t *e);
/* uwsgi0: p->net.ip/prefixlen, MTU, up, default route via the gateway
 * (raw ioctls, no allocation).  Nothing to do when p->net.on is false. */
int rt_uwsgi0_up(const rt_plan_t *p, err_t *e);
/* uid/gid, no supplementary groups, no capabilities of any kind,
 * no_new_privs. */
int rt_drop_privileges(int uid, err_t *e);

/* mounts.c: private propagation, the distro read-only as /, the home, /tmp,
 * /var/tmp, /run, /var/log, /usr/local, /proc, /dev (docs/NODE.md). */
int rt_mounts(const rt_plan_t *p, err_t *e);

/* emperor.c: the Emperor's argv/envp and imperium-init's argv. */
int rt_emperor_plan(rt_plan_t *p, const char *uwsgi, bool shortcuts, err_t *e);
/* The child's last step: exec imperium-init (sync fd RT_INIT_SYNC_FD).
 * Returns only on failure, with e set. */
int rt_exec_init(const rt_plan_t *p, err_t *e);

/* What imperium-init is told on its command line (init_main.c). */
typedef struct {
    int sync_fd;     /* report errors here until the Emperor has exec'd */
    const char *log; /* the Emperor's stdout/stderr: <home>/logs/emperor.log */
    const char *home;
    char **argv;     /* the Emperor's */
    char **envp;
} rt_init_args_t;

/* init.c (imperium-init only): the container's PID 1.  Starts the Emperor,
 * reaps every zombie, forwards SIGTERM/SIGINT/SIGQUIT/SIGHUP/SIGUSR1/SIGUSR2
 * to it, and exits with its status when it exits. */
void rt_init(rt_init_args_t *a) __attribute__((noreturn));

/* report.c (both programs): send err's message to the parent
 * (async-signal-safe). */
void rt_report_fd(int fd, const err_t *e);
void rt_report(const rt_plan_t *p, const err_t *e);
/* err_set for a failed syscall: "<step>: <description of errno>". */
int rt_fail(err_t *e, const char *step);

#endif
