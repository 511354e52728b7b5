/* sampler.h - the containers' metrics, sampled every metrics_interval
 * seconds and sent to the API in batches (POST <node_prefix>/metrics
 * through the channel's outbox; docs/METRICS.md, issue 16).
 *
 * Per running container: cpu (ns of CPU time), mem, mem.rss, mem.cache
 * (cgroup.c's readers), io.read/io.write (its home's loop device),
 * net.rx/net.tx (the host end of its veth, swapped: what the host end
 * receives the container sent), quota (bytes used in its home).  Per domain
 * and container: hits, net.rx, net.tx from the http router's stats sockets
 * (router_stats_path, then .1, .2, ...: one per http process, summed).  Counters go up as deltas over the interval, gauges as values.
 *
 * Runs in the main thread: a few small file reads per container and one
 * read of the stats socket (bounded by a 200 ms timeout); no fork. */
#ifndef IMP_NODE_SAMPLER_H
#define IMP_NODE_SAMPLER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"
#include "../runtime/container.h"

typedef struct sampler sampler_t;

typedef struct {
    const node_cfg_t *node;   /* containers_dir, cgroups, the veth prefix, the quota kind
                                 (its strings kept, not copied) */
    const char *router_stats; /* host path of the router's stats socket; NULL: no router */
    int interval_s;           /* 0: no sampling */
} sampler_opts_t;

sampler_t *sampler_new(const sampler_opts_t *o, err_t *e);
void sampler_free(sampler_t *s);

/* Milliseconds (monotonic clock) of the next sample, -1 when off. */
long long sampler_next_deadline(const sampler_t *s);

/* Sample the running containers (uids) now and schedule the next round:
 * the bodies of POST <node_prefix>/metrics ({"containers": [...], "domains":
 * [...]}, CONTRACT in docs/NODE-CHANNEL.md), a NULL-terminated malloc'd
 * array of malloc'd strings (sampler_bodies: a big node's round takes
 * several, the API reads at most API_MAX_BODY); NULL when out of memory
 * (logged) and after the first round, due at once (sampler_new), which only
 * records where the counters stand: an adopted container's CPU time since
 * its start, or what the adopted router served before, is not one
 * interval's. */
char **sampler_sample(sampler_t *s, const int *uids, size_t n);

/* The entries of the JSON arrays containers and domains as metrics bodies
 * of at most max bytes each (the last one less full), in order, no entry
 * cut or repeated; NULL-terminated, at least one body (an empty round's
 * batch is {"containers":[],"domains":[]}); NULL when out of memory.  An
 * entry that cannot fit any body (never, with REPORT_MAX_BODY) is logged
 * and left out. */
char **sampler_bodies(const json_t *containers, const json_t *domains, size_t max);

/* ---- exposed for the unit tests ---- */

/* A counter's growth from prev to now; a counter that went down was reset
 * (a restarted cgroup, a new veth, a restarted router): now is the growth. */
long long sampler_delta(long long prev, long long now);

/* The router's counters of each subscription node, kept between rounds. */
typedef struct sub_table sub_table_t;
sub_table_t *sub_table_new(void);
void sub_table_free(sub_table_t *t);
/* The http router's stats JSON (PLAN: {"subscriptions": [{"key", "nodes":
 * [{"name": "/containers/<uid>/run/...", "requests", "rx", "tx"}]}]}) ->
 * entries {"name": domain, "uid", "unix", "m": {"hits", "net.rx",
 * "net.tx"}} appended to out, one per (domain, container) that served
 * something since the last call (its nodes added up).  A node not seen
 * before counts from zero unless baseline (then it is only recorded); a
 * node that vanished is forgotten.  -1 with e set on a malformed JSON. */
int sub_table_deltas(sub_table_t *t, const char *json, size_t len, bool baseline,
                     long long unix_time, json_t *out, err_t *e);

#endif
