/* sampler.c - the containers' metrics (sampler.h, docs/METRICS.md). */
#include "sampler.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "../runtime/cgroup.h"
#include "../runtime/quota.h"
#include "nodestats.h"
#include "router.h"

/* The router answers its stats at once; a hung one must not hold the loop. */
#define STATS_TIMEOUT_MS 200
#define STATS_MAX (16 * 1024 * 1024)

/* ---- deltas ----------------------------------------------------------------- */

long long sampler_delta(long long prev, long long now)
{
    return now >= prev ? now - prev : now;
}

/* One container's counters as of the last round (-1: not read). */
typedef struct {
    int uid;
    bool seen; /* in this round */
    long long cpu, io_read, io_write, net_rx, net_tx;
    char loop[32]; /* the loop device the io counters are of */
    cgroup_t *cg;  /* located once */
} ctr_t;

/* The router's http processes each count what they route and answer on a
 * stats socket of their own: router_stats, then router_stats.1, .2, ...
 * (uwsgi/imperium_router.c); the hits are their sum. */
#define ROUTER_STATS_PROCS ROUTER_MAX_PROCESSES

struct sampler {
    node_cfg_t node;
    char *router_stats;
    int interval_s;
    long long next_ms;
    bool first; /* the first round: counters are only recorded */
    ctr_t *ctrs;
    size_t n_ctrs, cap_ctrs;
    sub_table_t *subs[ROUTER_STATS_PROCS]; /* one per router process (its own counters) */
};

/* ---- the router's subscription nodes ---------------------------------------- */

typedef struct {
    char *key, *name;
    long long hits, rx, tx;
    bool seen;
} sub_t;

struct sub_table {
    sub_t *v;
    size_t n, cap;
};

sub_table_t *sub_table_new(void) { return calloc(1, sizeof(sub_table_t)); }

void sub_table_free(sub_table_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].key);
        free(t->v[i].name);
    }
    free(t->v);
    free(t);
}

static sub_t *sub_find(sub_table_t *t, const char *key, const char *name, bool *created)
{
    *created = false;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].key, key) == 0 && strcmp(t->v[i].name, name) == 0)
            return &t->v[i];
    sub_t *v = array_room(t->v, t->n, &t->cap, sizeof *v);
    if (!v)
        return NULL;
    t->v = v;
    sub_t *s = &t->v[t->n];
    memset(s, 0, sizeof *s);
    s->key = strdup(key);
    s->name = strdup(name);
    if (!s->key || !s->name) {
        free(s->key);
        free(s->name);
        return NULL;
    }
    t->n++;
    *created = true;
    return s;
}

/* "/containers/<uid>/run/NAME" -> uid; 0 for any other address. */
static long long node_uid(const char *name)
{
    const char *p = "/containers/";
    if (strncmp(name, p, strlen(p)) != 0)
        return 0;
    char *end;
    errno = 0;
    long long uid = strtoll(name + strlen(p), &end, 10);
    return errno || uid <= 0 || strncmp(end, "/run/", 5) != 0 ? 0 : uid;
}

static long long num(const json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v > 0 ? (long long)v : 0;
}

/* The entry of (key, uid) in out, made on first use. */
static json_t *domain_entry(json_t *out, size_t from, const char *key, long long uid,
                            long long unix_time)
{
    for (size_t i = from; i < json_array_size(out); i++) {
        json_t *d = json_array_get(out, i);
        if (json_integer_value(json_object_get(d, "uid")) == uid &&
            strcmp(json_string_value(json_object_get(d, "name")), key) == 0)
            return json_object_get(d, "m");
    }
    json_t *d = json_pack("{s:s,s:I,s:I,s:{s:I,s:I,s:I}}", "name", key, "uid", (json_int_t)uid,
                          "unix", (json_int_t)unix_time, "m", "hits", (json_int_t)0, "net.rx",
                          (json_int_t)0, "net.tx", (json_int_t)0);
    if (!d || json_array_append_new(out, d) < 0)
        return NULL;
    return json_object_get(d, "m");
}

static int add_to(json_t *m, const char *k, long long v)
{
    return json_object_set_new(m, k, json_integer(json_integer_value(json_object_get(m, k)) + v));
}

/* One subscription node: its growth into the (domain, container) entry. */
static int node_delta(sub_table_t *t, const char *key, const json_t *node, bool baseline,
                      long long unix_time, json_t *out, size_t from, err_t *e)
{
    const char *name = json_string_value(json_object_get(node, "name"));
    long long uid = name ? node_uid(name) : 0;
    if (!uid)
        return 0; /* not a container's socket: nothing to attribute */
    bool created;
    sub_t *s = sub_find(t, key, name, &created);
    if (!s)
        return err_set(e, ERR_INTERNAL, "out of memory");
    long long hits = num(node, "requests"), rx = num(node, "rx"), tx = num(node, "tx");
    long long dh = sampler_delta(s->hits, hits), drx = sampler_delta(s->rx, rx),
              dtx = sampler_delta(s->tx, tx);
    s->hits = hits;
    s->rx = rx;
    s->tx = tx;
    s->seen = true;
    if ((created && baseline) || (dh == 0 && drx == 0 && dtx == 0))
        return 0;
    json_t *m = domain_entry(out, from, key, uid, unix_time);
    /* Requests come in (rx of the router's client side), answers go out. */
    if (!m || add_to(m, "hits", dh) < 0 || add_to(m, "net.rx", drx) < 0 ||
        add_to(m, "net.tx", dtx) < 0)
        return err_set(e, ERR_INTERNAL, "out of memory");
    return 0;
}

int sub_table_deltas(sub_table_t *t, const char *json, size_t len, bool baseline,
                     long long unix_time, json_t *out, err_t *e)
{
    json_error_t je;
    json_t *j = json_loadb(json, len, 0, &je);
    json_t *subs = j ? json_object_get(j, "subscriptions") : NULL;
    if (!json_is_array(subs)) {
        json_decref(j);
        return err_set(e, ERR_INPUT, "the router's stats are not {\"subscriptions\": [...]}%s%s",
                       j ? "" : ": ", j ? "" : je.text);
    }
    for (size_t i = 0; i < t->n; i++)
        t->v[i].seen = false;
    size_t from = json_array_size(out), i, k;
    json_t *sub, *node;
    int rc = 0;
    json_array_foreach(subs, i, sub)
    {
        const char *key = json_string_value(json_object_get(sub, "key"));
        if (!key)
            continue;
        json_array_foreach(json_object_get(sub, "nodes"), k, node)
        {
            if (rc == 0 && node_delta(t, key, node, baseline, unix_time, out, from, e) < 0)
                rc = -1;
        }
    }
    json_decref(j);
    /* A node that unsubscribed (vassal reloaded or gone): forget it, so
     * the same name subscribing again counts from zero. */
    size_t w = 0;
    for (size_t r = 0; r < t->n; r++) {
        if (t->v[r].seen) {
            t->v[w++] = t->v[r];
        } else {
            free(t->v[r].key);
            free(t->v[r].name);
        }
    }
    t->n = w;
    return rc;
}

/* The whole answer of the stats socket; NULL when the router is not there. */
static char *read_stats(const char *path, size_t *len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return NULL;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct timeval tv = {0, STATS_TIMEOUT_MS * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    buf_t b = {0};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    while (ok) {
        char chunk[16384];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n == 0)
            break;
        ok = n > 0 && b.len + (size_t)n <= STATS_MAX && buf_append(&b, chunk, (size_t)n) == 0;
    }
    int err = errno;
    close(fd);
    if (!ok || !b.data) {
        log_debug("metrics: the router's stats (%s): %s", path,
                  ok ? "empty answer" : strerror(err));
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* Add one process's (domain, container) entries to the round's: one entry
 * per pair, the processes' counts summed. */
static int merge_domains(json_t *out, size_t from, const json_t *part)
{
    size_t i;
    json_t *d;
    json_array_foreach(part, i, d)
    {
        json_t *m = domain_entry(out, from, json_string_value(json_object_get(d, "name")),
                                 json_integer_value(json_object_get(d, "uid")),
                                 json_integer_value(json_object_get(d, "unix")));
        const char *k;
        json_t *v;
        if (!m)
            return -1;
        json_object_foreach(json_object_get(d, "m"), k, v)
        {
            if (add_to(m, k, json_integer_value(v)) < 0)
                return -1;
        }
    }
    return 0;
}

static void sample_domains(sampler_t *s, long long unix_time, json_t *out)
{
    size_t from = json_array_size(out);
    for (int k = 0; s->router_stats && k < ROUTER_STATS_PROCS; k++) {
        char *path = k ? str_printf("%s.%d", s->router_stats, k) : strdup(s->router_stats);
        size_t len = 0;
        char *text = path ? read_stats(path, &len) : NULL;
        free(path);
        if (!text)
            return; /* no router (yet), or no more processes */
        err_t e;
        err_clear(&e);
        json_t *part = json_array();
        if (!part || sub_table_deltas(s->subs[k], text, len, s->first, unix_time, part, &e) < 0)
            log_warn("metrics: %s", part ? e.msg : "out of memory");
        if (part && merge_domains(out, from, part) < 0)
            log_warn("metrics: out of memory");
        json_decref(part);
        free(text);
    }
}

/* ---- containers ---------------------------------------------------------------- */

static ctr_t *ctr_get(sampler_t *s, int uid)
{
    for (size_t i = 0; i < s->n_ctrs; i++)
        if (s->ctrs[i].uid == uid)
            return &s->ctrs[i];
    ctr_t *v = array_room(s->ctrs, s->n_ctrs, &s->cap_ctrs, sizeof *v);
    if (!v)
        return NULL;
    s->ctrs = v;
    ctr_t *c = &s->ctrs[s->n_ctrs];
    memset(c, 0, sizeof *c);
    c->uid = uid;
    c->cpu = c->io_read = c->io_write = c->net_rx = c->net_tx = -1;
    if (!(c->cg = malloc(sizeof *c->cg)))
        return NULL;
    err_t e;
    err_clear(&e);
    if (cgroup_locate(s->node.cgroup_root, s->node.cgroup_parent, uid, c->cg, &e) < 0) {
        log_warn("metrics: container %d: %s", uid, e.msg);
        free(c->cg);
        c->cg = NULL;
    }
    s->n_ctrs++;
    return c;
}

/* A counter into m as its growth since the last round: the first reading
 * of a container seen in the first round is only recorded. */
static int put_counter(json_t *m, const char *k, long long *prev, long long now, bool record)
{
    long long p = *prev;
    *prev = now;
    if (now < 0 || (p < 0 && record))
        return 0;
    return json_object_set_new(m, k, json_integer(sampler_delta(p < 0 ? 0 : p, now)));
}

static int put_gauge(json_t *m, const char *k, long long v)
{
    return v < 0 ? 0 : json_object_set_new(m, k, json_integer(v));
}

static long long read_ll(const char *path)
{
    char buf[64];
    if (fs_read_small(path, buf, sizeof buf) <= 0)
        return -1;
    long long v;
    return sscanf(buf, "%lld", &v) == 1 && v >= 0 ? v : -1;
}

/* The home's loop device: sectors read and written (fields 3 and 7 of
 * /sys/block/<dev>/stat) x 512. */
static void loop_io(const sampler_t *s, ctr_t *c, long long *rd, long long *wr)
{
    char dev[32], path[96], buf[256];
    *rd = *wr = -1;
    if (quota_loop_device(s->node.containers_dir, c->uid, dev, sizeof dev) < 0)
        return;
    if (strcmp(dev, c->loop) != 0) { /* another device: its counters are not ours */
        snprintf(c->loop, sizeof c->loop, "%s", dev);
        c->io_read = c->io_write = -1;
    }
    snprintf(path, sizeof path, "/sys/block/%s/stat", dev);
    if (fs_read_small(path, buf, sizeof buf) <= 0)
        return;
    unsigned long long f[7];
    if (sscanf(buf, "%llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3], &f[4],
               &f[5], &f[6]) == 7) {
        *rd = (long long)(f[2] * 512);
        *wr = (long long)(f[6] * 512);
    }
}

/* The host end of the veth: its rx is what the container sent. */
static void veth_io(const sampler_t *s, int uid, long long *rx, long long *tx)
{
    char path[160];
    *rx = *tx = -1;
    if (!s->node.net.on || !s->node.net.prefix)
        return;
    snprintf(path, sizeof path, "/sys/class/net/%s%d/statistics/tx_bytes", s->node.net.prefix,
             uid);
    *rx = read_ll(path);
    snprintf(path, sizeof path, "/sys/class/net/%s%d/statistics/rx_bytes", s->node.net.prefix,
             uid);
    *tx = read_ll(path);
}

static json_t *sample_one(sampler_t *s, ctr_t *c, long long unix_time)
{
    json_t *m = json_object();
    if (!m)
        return NULL;
    bool record = s->first;
    cgroup_usage_t u = {-1, -1, -1, -1};
    if (c->cg)
        cgroup_usage(c->cg, &u);
    long long rd, wr, rx, tx;
    loop_io(s, c, &rd, &wr);
    veth_io(s, c->uid, &rx, &tx);
    uint64_t used = 0, limit = 0;
    bool quota = quota_usage(s->node.quota, s->node.containers_dir, c->uid, &used, &limit,
                             NULL) == 0 &&
                 limit > 0; /* no limit: a plain directory, its filesystem is not its own */
    int rc = put_counter(m, "cpu", &c->cpu, u.cpu_ns, record) | put_gauge(m, "mem", u.mem) |
             put_gauge(m, "mem.rss", u.mem_rss) | put_gauge(m, "mem.cache", u.mem_cache) |
             put_counter(m, "io.read", &c->io_read, rd, record) |
             put_counter(m, "io.write", &c->io_write, wr, record) |
             put_counter(m, "net.rx", &c->net_rx, rx, record) |
             put_counter(m, "net.tx", &c->net_tx, tx, record) |
             put_gauge(m, "quota", quota ? (long long)used : -1);
    json_t *o = rc == 0 ? json_pack("{s:i,s:I,s:o}", "uid", c->uid, "unix",
                                    (json_int_t)unix_time, "m", m)
                        : NULL;
    if (!o && rc != 0)
        json_decref(m);
    return o;
}

/* Forget the containers that no longer run (a new start counts from zero). */
static void forget_stopped(sampler_t *s)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n_ctrs; i++) {
        if (s->ctrs[i].seen)
            s->ctrs[w++] = s->ctrs[i];
        else
            free(s->ctrs[i].cg);
    }
    s->n_ctrs = w;
}

/* ---- the rounds ------------------------------------------------------------------ */

sampler_t *sampler_new(const sampler_opts_t *o, err_t *e)
{
    sampler_t *s = calloc(1, sizeof *s);
    bool ok = s != NULL;
    for (int k = 0; ok && k < ROUTER_STATS_PROCS; k++)
        ok = (s->subs[k] = sub_table_new()) != NULL;
    if (!ok || (o->router_stats && !(s->router_stats = strdup(o->router_stats)))) {
        sampler_free(s);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->node = *o->node;
    s->interval_s = o->interval_s;
    s->first = true;
    s->next_ms = now_ms(); /* the baseline round at once: what runs already */
    return s;
}

void sampler_free(sampler_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_ctrs; i++)
        free(s->ctrs[i].cg);
    free(s->ctrs);
    for (int k = 0; k < ROUTER_STATS_PROCS; k++)
        sub_table_free(s->subs[k]);
    free(s->router_stats);
    free(s);
}

long long sampler_next_deadline(const sampler_t *s)
{
    return s && s->interval_s > 0 ? s->next_ms : -1;
}

static json_t *sample_all(sampler_t *s, const int *uids, size_t n, long long unix_time)
{
    json_t *list = json_array(), *domains = json_array();
    json_t *body = list && domains ? json_pack("{s:o,s:o}", "containers", list, "domains",
                                               domains)
                                   : NULL;
    if (!body) {
        json_decref(list);
        json_decref(domains);
        return NULL;
    }
    for (size_t i = 0; i < s->n_ctrs; i++)
        s->ctrs[i].seen = false;
    for (size_t i = 0; i < n; i++) {
        ctr_t *c = ctr_get(s, uids[i]);
        json_t *o = c ? sample_one(s, c, unix_time) : NULL;
        if (c)
            c->seen = true;
        if (!o || json_array_append_new(list, o) < 0) {
            json_decref(body);
            return NULL;
        }
    }
    forget_stopped(s);
    sample_domains(s, unix_time, domains);
    return body;
}

/* ---- the bodies ------------------------------------------------------------------ */

/* What a body is besides its entries. */
#define BODY_FRAME (sizeof "{\"containers\":[],\"domains\":[]}" - 1)

typedef struct {
    buf_t part[2]; /* containers[] and domains[] of the body being filled, comma-separated */
    char **bodies; /* the finished ones, NULL-terminated */
    size_t n;
} bodies_t;

static void bodies_free(bodies_t *b)
{
    buf_free(&b->part[0]);
    buf_free(&b->part[1]);
    for (size_t i = 0; i < b->n; i++)
        free(b->bodies[i]);
    free(b->bodies);
}

/* The body being filled into the list; 0, or -1 when out of memory. */
static int bodies_close(bodies_t *b)
{
    char **grown = realloc(b->bodies, (b->n + 2) * sizeof *grown);
    if (!grown)
        return -1;
    b->bodies = grown;
    char *body = str_printf("{\"containers\":[%s],\"domains\":[%s]}",
                            b->part[0].data ? b->part[0].data : "",
                            b->part[1].data ? b->part[1].data : "");
    if (!body)
        return -1;
    b->bodies[b->n++] = body;
    b->bodies[b->n] = NULL;
    buf_free(&b->part[0]);
    buf_free(&b->part[1]);
    return 0;
}

/* Entry `o` into list `k` (0: containers, 1: domains) of the body being
 * filled, which is closed first when the entry would take it past max. */
static int bodies_add(bodies_t *b, int k, const json_t *o, size_t max)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (!text)
        return -1;
    size_t len = strlen(text);
    if (BODY_FRAME + len > max) { /* cannot be sent whole: the API would refuse its body */
        log_warn("metrics: an entry of %zu bytes is left out (a body has at most %zu)", len,
                 max);
        free(text);
        return 0;
    }
    size_t size = BODY_FRAME + b->part[0].len + b->part[1].len; /* closed now */
    bool filled = b->part[0].len || b->part[1].len;
    int rc = filled && size + (b->part[k].len > 0) + len > max ? bodies_close(b) : 0;
    if (rc == 0 && b->part[k].len)
        rc = buf_appends(&b->part[k], ",");
    if (rc == 0)
        rc = buf_append(&b->part[k], text, len);
    free(text);
    return rc;
}

char **sampler_bodies(const json_t *containers, const json_t *domains, size_t max)
{
    bodies_t b = {0};
    const json_t *lists[2] = {containers, domains};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++)
        for (size_t i = 0; i < json_array_size(lists[k]) && rc == 0; i++)
            rc = bodies_add(&b, k, json_array_get(lists[k], i), max);
    /* The last one; an empty round still sends its (empty) batch. */
    if (rc == 0 && (b.part[0].len || b.part[1].len || b.n == 0))
        rc = bodies_close(&b);
    if (rc < 0) {
        bodies_free(&b);
        return NULL;
    }
    char **out = b.bodies;
    b.n = 0;
    b.bodies = NULL;
    bodies_free(&b);
    return out;
}

char **sampler_sample(sampler_t *s, const int *uids, size_t n)
{
    long long t0 = now_ms();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    /* The next round keeps its rhythm, but never piles up after a stall. */
    s->next_ms += (long long)s->interval_s * 1000;
    if (s->next_ms <= t0)
        s->next_ms = t0 + (long long)s->interval_s * 1000;
    bool baseline = s->first;
    json_t *body = sample_all(s, uids, n, (long long)time(NULL));
    s->first = false;
    char **bodies = body && !baseline
                        ? sampler_bodies(json_object_get(body, "containers"),
                                         json_object_get(body, "domains"), REPORT_MAX_BODY)
                        : NULL;
    json_decref(body);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long usec = (b.tv_sec - a.tv_sec) * 1000000LL + (b.tv_nsec - a.tv_nsec) / 1000;
    nodestats_add(NS_SAMPLES, 1);
    nodestats_add(NS_SAMPLE_USEC, (unsigned long long)(usec > 0 ? usec : 0));
    if (!bodies && !baseline)
        log_error("metrics: out of memory: this interval's sample is lost");
    else
        log_debug("metrics: %zu containers sampled in %lld us", n, usec);
    return bodies;
}
