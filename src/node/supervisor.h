/* supervisor.h - the node's containers, one record each: what the API wants
 * (spec, generation, ssh_generation) and what runs (init pid, the
 * generations it runs, restarts).  Everything happens in the daemon's main
 * thread; nothing here blocks for long: stops are SIGTERM now and a
 * deadline, and the end of an init is seen through its pidfd (or SIGCHLD for
 * our own children).
 *
 * Converge, for each container:
 *   wanted, not running           -> start (a failed start is retried with
 *                                    backoff 1 s, 2 s, 4 s .. 30 s)
 *   wanted, older generation      -> SIGTERM, SIGKILL after the restart
 *                                    grace, start again (new pid)
 *   wanted, other ssh_generation  -> rewrite the authorized keys only
 *   not wanted, running           -> SIGTERM, SIGKILL after stop_timeout;
 *                                    the home stays
 *   init died on its own          -> start again after the backoff (reset
 *                                    once it ran 60 s), logged
 *
 * System alarms (o.on_alarm): an OOM kill in a running container (its
 * cgroup's watch fd sits in the same epoll as the pidfds; the count already
 * alarmed is kept in <state_dir>/<uid>/oom_seen), and a crash loop (5 failed
 * starts or deaths in a row, once until it runs again). */
#ifndef IMP_NODE_SUPERVISOR_H
#define IMP_NODE_SUPERVISOR_H

#include <jansson.h>
#include <stdbool.h>

#include "../common/err.h"
#include "../runtime/container.h"
#include "spec.h"

typedef struct supervisor supervisor_t;

typedef struct {
    node_cfg_t node;
    bool distro_host_ok;
    int stop_timeout_ms;
    int restart_grace_ms;
    /* A system alarm of a container (an OOM kill, a crash loop): agent.c
     * passes it to alarms_raise (alarms.h).  NULL: none. */
    void (*on_alarm)(void *ctx, long long uid, const char *cls, const char *msg);
    void *alarm_ctx;
    /* cluster-domain: the router's fastrouter port (0: none); a container's
     * IMPERIUM_CLUSTER is "<server address>:<port>" while the server is
     * in a legion (subgate_cluster_endpoint). */
    int cluster_port;
} sv_opts_t;

supervisor_t *sv_new(const sv_opts_t *o, err_t *e);
/* Forget everything; running containers keep running. */
void sv_free(supervisor_t *sv);

/* An fd that polls readable when an init of ours ended: call sv_events. */
int sv_fd(const supervisor_t *sv);
void sv_events(supervisor_t *sv);
/* SIGCHLD: reap our children. */
void sv_reap(supervisor_t *sv);

/* Adopt every container of the state directory whose init still runs. */
void sv_adopt_all(supervisor_t *sv);
/* A node state from the API: its containers become the wanted set. */
void sv_set_state(supervisor_t *sv, const spec_state_t *state);
/* Refuse every start while why is set (a start fails with it as the
 * container's error, retried each second); NULL or "" lets them start at
 * once.  The node holds starts while its nft table is not in force
 * (netpolicy.h): a container must never run without its isolation. */
void sv_hold_starts(supervisor_t *sv, const char *why);
/* Act on the wanted set, the deadlines and the backoffs. */
void sv_converge(supervisor_t *sv);
/* Milliseconds (monotonic clock) of the next deadline, or -1. */
long long sv_next_deadline(const supervisor_t *sv);

/* The uids of the running containers (at most max into uids); returns
 * how many run. */
size_t sv_running(const supervisor_t *sv, int *uids, size_t max);

/* True once since the last call if something changed (worth a report). */
bool sv_take_changed(supervisor_t *sv);
/* {"containers": [{"uid", "state", "since", "restarts", "last_error",
 *  "generation"}]} for POST /node/status; NULL when out of memory.  Also
 * sets the containers-by-state gauges (nodestats.h) to what it reports. */
char *sv_status_report(const supervisor_t *sv);

#endif
