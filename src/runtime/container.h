/* container.h - one customer jail: namespaces, a memory cgroup, the distro
 * as a read-only root, the home, an init, and the customer's uWSGI Emperor.
 *
 * The library is a list of steps (crun style): each step is a function that
 * returns -1 and fills an err_t naming what failed.  Nothing here prints or
 * exits; the debug CLI (main.c) and the daemon decide what to do with errors.
 * docs/NODE.md describes what a container looks like from inside. */
#ifndef IMP_RUNTIME_CONTAINER_H
#define IMP_RUNTIME_CONTAINER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "net.h"
#include "quota.h"
#include "state.h"

/* The node's directories and tools.  Nothing is hard-wired: a test runs a
 * whole node inside a temporary directory. */
typedef struct {
    const char *state_dir;      /* <state_dir>/<uid>/: state.json, pivot mountpoint */
    const char *containers_dir; /* homes default to <containers_dir>/<uid> */
    const char *uwsgi;          /* the Emperor binary, a path inside the container */
    const char *shortcuts;      /* host path of the shortcuts file, or NULL */
    const char *cgroup_root;    /* where cgroupfs lives: /sys/fs/cgroup */
    const char *cgroup_parent;  /* our sub-tree under the memory hierarchy */
    const char *subscribe_dir;  /* the HTTP router's subscription socket directory,
                                   shown as /run/subscribe (NULL: no router) */
    const char *sockets_dir;    /* <sockets_dir>/<uid>/run, root-owned and sticky, is
                                   mounted on the home's run/ (NULL: no router) */
    gid_t sockets_gid;          /* the router's group: may search <uid>/ and run/,
                                   owns the sockets made in run/ (router.h) */
    const char *init;           /* host path of imperium-init (NULL: beside this
                                   program's own executable) */
    int pids_max;               /* per container (0: CG_DEFAULT_PIDS_MAX) */
    int cpu_weight;             /* 1-10000 (0: CG_DEFAULT_CPU_WEIGHT) */
    int io_weight;              /* 1-10000 (0: CG_DEFAULT_IO_WEIGHT) */
    net_cfg_t net;              /* containers' uwsgi0 (net.h); zeroed: off, lo only */
    int emperor_log_maxsize;    /* bytes: logs/emperor.log rotates to emperor.log.1 past it
                                   (0: NODE_DEFAULT_EMPEROR_LOG_MAXSIZE) */
    quota_kind_t quota;         /* the homes' disk quota (quota.h); zeroed: loop */
} node_cfg_t;

#define NODE_DEFAULT_UWSGI "/usr/bin/uwsgi"
#define NODE_DEFAULT_CGROUP_ROOT "/sys/fs/cgroup"
#define NODE_DEFAULT_CGROUP_PARENT "imperium"
#define NODE_INIT_NAME "imperium-init" /* the container's PID 1 program */
#define NODE_PIDS_MAX_MAX 4194304        /* the kernel's own pid_max limit */
#define NODE_DEFAULTS_TEXT "pids_max 1024, cpu_weight 100, io_weight 100"
#define NODE_STOP_TIMEOUT_MS 10000
#define NODE_DEFAULT_EMPEROR_LOG_MAXSIZE 104857600 /* 100 MB, PLATFORM.md */

/* Fill the optional fields with the defaults above. */
void node_cfg_defaults(node_cfg_t *cfg);

/* What the API wants running.  The node fills it from the nodes' channel
 * (src/node/spec.h: spec_runtime) or the debug CLI's file (spec_cli_parse):
 * the runtime reads no JSON of the API. */
typedef struct {
    int uid; /* 30000 + id: also the gid */
    char *hostname;
    long long memory_mb;
    long long storage_mb; /* the home's quota in MB (quota.h); 0: no limit */
    char *rootfs; /* host path of the distro; "/" is the host distro */
    char *home;   /* host path of the home */
    char **ssh_keys;
    size_t n_ssh_keys;
    char *rsa_key;            /* PEM, etc/uwsgi.key; NULL leaves the file alone */
    char *rsa_pubkey;         /* PEM, etc/uwsgi.pubkey; NULL likewise */
    char *etc_hosts;          /* etc/hosts; NULL: a default naming the hostname */
    char *etc_resolv_conf;    /* etc/resolv.conf; NULL: empty */
    long long generation;     /* bumped by every change that needs a restart */
    long long ssh_generation; /* bumped by key changes (no restart) */
    net_spec_t net;           /* uwsgi0 (net_spec_fill); net.on false: lo only */
    bool nofollow;            /* the Emperor runs with --emperor-nofollow */
    /* A custom distro (issue 17): rootfs_holder > 0 is the container whose
     * home holds it, at distros/<rootfs_custom> (custom_distro_path_valid);
     * container_start mounts that home's image for this start only
     * (quota_mount_home_at on <state_dir>/<uid>/distro, detached once the
     * container runs or failed) and boots from the tree there.  rootfs is
     * then the nominal host path <containers_dir>/<holder>/distros/<path>,
     * for messages. */
    int rootfs_holder;
    char *rootfs_custom;
    /* cluster-domain (docs/CLUSTER.md): IMPERIUM_CLUSTER in the Emperor's
     * environment, "<server address>:<cluster_port>", the endpoint the
     * shortcut subscribes for the Legion's Lord; "" gives RT_NO_CLUSTER
     * (the node is in no legion: the gate refuses it, politely). */
    char cluster[64];
} container_spec_t;

#define RT_NO_CLUSTER "none:0"

/* Free the members (the struct itself is the caller's). */
void container_spec_free(container_spec_t *s);

/* Start the container; *pid is its init in the host's pid namespace.
 * Refused (ERR_CONFLICT) when it already runs.  A failure is recorded in
 * the state directory (status.last_error) and leaves nothing running. */
int container_start(const node_cfg_t *cfg, const container_spec_t *spec, pid_t *pid, err_t *e);

/* SIGTERM to init (which forwards it to the Emperor), SIGKILL for the whole
 * cgroup after timeout_ms, then the cgroup and (cfg->net.on) the host end
 * of its veth are removed, and the home's image (quota.h) unmounted.  The
 * home stays.
 * Stopping a stopped container is fine. */
int container_stop(const node_cfg_t *cfg, int uid, int timeout_ms, err_t *e);

/* Adoption: true (and *pid) when the init recorded in the state directory
 * is alive and is really that init (same start time, same uid): a pid file
 * alone proves nothing after pid reuse. */
bool container_find(const node_cfg_t *cfg, int uid, pid_t *pid);
bool container_is_running(const node_cfg_t *cfg, int uid);

/* Rewrite .ssh/uwsgi_authorized_keys atomically; the container keeps
 * running.  Records spec->ssh_generation in the state. */
int container_write_keys(const node_cfg_t *cfg, const container_spec_t *spec, err_t *e);

typedef enum { CONTAINER_STOPPED, CONTAINER_RUNNING, CONTAINER_FAILED } container_state_t;

typedef struct {
    container_state_t state;
    state_t rec; /* what the state directory says (pid is 0 unless running) */
} container_status_t;

/* The state of a container; one never started reads as stopped. */
int container_status(const node_cfg_t *cfg, int uid, container_status_t *st, err_t *e);
const char *container_state_name(container_state_t s);
/* {"uid", "state", "pid", "since", "restarts", "last_error", "generation",
 *  "ssh_generation", "cgroup"}; NULL on allocation failure. */
json_t *container_status_json(const container_status_t *st);

#endif
