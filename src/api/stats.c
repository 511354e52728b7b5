/* stats.c - see stats.h.
 *
 * Each route of the three tables gets a row of counters (one per status
 * class) found from the route's address: the tables are arrays, so a route
 * is table + index.  Counting is one relaxed atomic add; the grouping by
 * route group (the first segment of the pattern) happens when rendering,
 * which is rare (a scrape every few seconds at most). */
#include "stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CLASSES 5 /* 1xx .. 5xx */
#define MAX_TABLES 32

/* Upper bounds of the latency buckets, in microseconds and as printed. */
static const long long bucket_usec[] = {1000,   5000,   10000,   25000,   50000,   100000,
                                        250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const bucket_le[] = {"0.001", "0.005", "0.01", "0.025", "0.05", "0.1",
                                        "0.25",  "0.5",   "1",    "2.5",   "5",    "10"};
#define BUCKETS (sizeof bucket_usec / sizeof bucket_usec[0])

static const char *const api_names[STATS_APIS] = {"none", "customer", "admin", "node"};

typedef struct {
    const route_t *first;
    size_t n, base; /* routes first[0..n) are rows base..base+n */
    stats_api_t api;
} table_t;

typedef struct {
    long long server_id, unix_time;
} seen_t;

struct api_stats {
    table_t tables[MAX_TABLES];
    int ntables;
    size_t nroutes;
    atomic_ullong (*routes)[CLASSES];          /* nroutes rows */
    atomic_ullong unmatched[STATS_APIS][CLASSES]; /* no route */
    atomic_ullong buckets[STATS_APIS][BUCKETS];   /* not cumulative: summed at rendering */
    atomic_ullong count[STATS_APIS], sum_usec[STATS_APIS];
    pthread_mutex_t seen_lock;
    seen_t *seen;
    size_t nseen, seen_cap;
};

static int add_tables(api_stats_t *s, const route_t *const *list, stats_api_t api)
{
    for (; *list; list++) {
        if (s->ntables == MAX_TABLES)
            return -1;
        table_t *t = &s->tables[s->ntables++];
        t->first = *list;
        t->api = api;
        t->base = s->nroutes;
        for (t->n = 0; t->first[t->n].method; t->n++)
            ;
        s->nroutes += t->n;
    }
    return 0;
}

api_stats_t *api_stats_new(const route_t *const *customer, const route_t *const *admin,
                           const route_t *const *node)
{
    api_stats_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->seen_lock, NULL);
    if (add_tables(s, customer, STATS_API_CUSTOMER) < 0 ||
        add_tables(s, admin, STATS_API_ADMIN) < 0 || add_tables(s, node, STATS_API_NODE) < 0 ||
        !(s->routes = calloc(s->nroutes ? s->nroutes : 1, sizeof *s->routes))) {
        api_stats_free(s);
        return NULL;
    }
    return s;
}

void api_stats_free(api_stats_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->seen_lock);
    free(s->routes);
    free(s->seen);
    free(s);
}

/* The table holding `rt`, or NULL (a route of no known table). */
static const table_t *table_of(const api_stats_t *s, const route_t *rt)
{
    for (int i = 0; i < s->ntables; i++) {
        const table_t *t = &s->tables[i];
        /* Compared as addresses: rt may point into any table. */
        if ((uintptr_t)rt >= (uintptr_t)t->first && (uintptr_t)rt < (uintptr_t)(t->first + t->n))
            return t;
    }
    return NULL;
}

void api_stats_request(api_stats_t *s, stats_api_t api, const route_t *rt, int status,
                       long long usec)
{
    if (!s || api < 0 || api >= STATS_APIS)
        return;
    int cls = status / 100 - 1;
    if (cls < 0 || cls >= CLASSES)
        cls = CLASSES - 1; /* not an HTTP status: counted as a server error */
    const table_t *t = rt ? table_of(s, rt) : NULL;
    if (t)
        atomic_fetch_add_explicit(&s->routes[t->base + (size_t)(rt - t->first)][cls], 1,
                                  memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&s->unmatched[api][cls], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < BUCKETS && usec > bucket_usec[b])
        b++;
    if (b < BUCKETS)
        atomic_fetch_add_explicit(&s->buckets[api][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count[api], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_usec[api], (unsigned long long)(usec > 0 ? usec : 0),
                              memory_order_relaxed);
}

void api_stats_node_seen(api_stats_t *s, long long server_id, long long now)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->seen_lock);
    size_t i = 0;
    while (i < s->nseen && s->seen[i].server_id != server_id)
        i++;
    if (i == s->nseen && s->nseen == s->seen_cap) {
        size_t cap = s->seen_cap ? 2 * s->seen_cap : 16;
        seen_t *grown = realloc(s->seen, cap * sizeof *grown);
        if (!grown) { /* not counted: a gauge stays older, nothing else */
            pthread_mutex_unlock(&s->seen_lock);
            return;
        }
        s->seen = grown;
        s->seen_cap = cap;
    }
    if (i == s->nseen)
        s->seen[s->nseen++].server_id = server_id;
    s->seen[i].unix_time = now;
    pthread_mutex_unlock(&s->seen_lock);
}

long long api_stats_node_last_seen(api_stats_t *s, long long server_id)
{
    long long at = 0;
    if (!s)
        return 0;
    pthread_mutex_lock(&s->seen_lock);
    for (size_t i = 0; i < s->nseen; i++)
        if (s->seen[i].server_id == server_id)
            at = s->seen[i].unix_time;
    pthread_mutex_unlock(&s->seen_lock);
    return at;
}

int prom_label_value(buf_t *out, const char *v)
{
    int bad = buf_appends(out, "\"");
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            bad |= buf_printf(out, "\\%c", *p);
        else if (*p == '\n')
            bad |= buf_appends(out, "\\n");
        else
            bad |= buf_append(out, p, 1);
    }
    return bad | buf_appends(out, "\"") ? -1 : 0;
}

/* The length of the route group of `pattern`: its first segment. */
static size_t group_len(const char *pattern)
{
    const char *slash = strchr(pattern, '/');
    return slash ? (size_t)(slash - pattern) : strlen(pattern);
}

/* Whether route b (of table tb) is in the same group as route a. */
static bool same_group(const table_t *ta, const route_t *a, const table_t *tb, const route_t *b)
{
    size_t n = group_len(a->pattern);
    return ta->api == tb->api && strcmp(a->method, b->method) == 0 &&
           group_len(b->pattern) == n && strncmp(a->pattern, b->pattern, n) == 0;
}

/* Sum the counters of every route of a's group into sum; false when a
 * route of that group came earlier (its group was rendered already). */
static bool group_sum(const api_stats_t *s, const table_t *ta, const route_t *a,
                      unsigned long long sum[CLASSES])
{
    memset(sum, 0, CLASSES * sizeof *sum);
    size_t row_a = ta->base + (size_t)(a - ta->first);
    for (int i = 0; i < s->ntables; i++) {
        const table_t *t = &s->tables[i];
        for (size_t j = 0; j < t->n; j++) {
            if (!same_group(ta, a, t, &t->first[j]))
                continue;
            if (t->base + j < row_a)
                return false;
            for (int c = 0; c < CLASSES; c++)
                sum[c] += atomic_load_explicit(&s->routes[t->base + j][c],
                                               memory_order_relaxed);
        }
    }
    return true;
}

static int render_line(buf_t *out, const char *api, const char *group, size_t glen,
                       const char *method, int cls, unsigned long long n)
{
    return buf_printf(out,
                      "imperium_api_requests_total{api=\"%s\",group=\"%.*s\",method=\"%s\","
                      "status=\"%dxx\"} %llu\n",
                      api, (int)glen, group, method, cls + 1, n);
}

static int render_requests(api_stats_t *s, buf_t *out)
{
    int bad = buf_appends(out,
                          "# HELP imperium_api_requests_total Requests answered, by API, route "
                          "group (the first segment of the route's path), method and status "
                          "class; group \"-\" matched no route.\n"
                          "# TYPE imperium_api_requests_total counter\n");
    for (int i = 0; i < s->ntables; i++) {
        const table_t *t = &s->tables[i];
        for (size_t j = 0; j < t->n; j++) {
            const route_t *a = &t->first[j];
            unsigned long long sum[CLASSES];
            if (!group_sum(s, t, a, sum))
                continue;
            for (int c = 0; c < CLASSES; c++)
                if (sum[c])
                    bad |= render_line(out, api_names[t->api], a->pattern,
                                       group_len(a->pattern), a->method, c, sum[c]);
        }
    }
    for (int api = 0; api < STATS_APIS; api++)
        for (int c = 0; c < CLASSES; c++) {
            unsigned long long n = atomic_load_explicit(&s->unmatched[api][c],
                                                        memory_order_relaxed);
            if (n)
                bad |= render_line(out, api_names[api], "-", 1, "-", c, n);
        }
    return bad;
}

static int render_latency(api_stats_t *s, buf_t *out)
{
    int bad = buf_appends(out,
                          "# HELP imperium_api_request_duration_seconds Time from a request's "
                          "first byte to its answer, by API (the nodes' long polls included).\n"
                          "# TYPE imperium_api_request_duration_seconds histogram\n");
    for (int api = 0; api < STATS_APIS; api++) {
        unsigned long long cum = 0;
        for (size_t b = 0; b < BUCKETS; b++) {
            cum += atomic_load_explicit(&s->buckets[api][b], memory_order_relaxed);
            bad |= buf_printf(out,
                              "imperium_api_request_duration_seconds_bucket{api=\"%s\","
                              "le=\"%s\"} %llu\n",
                              api_names[api], bucket_le[b], cum);
        }
        unsigned long long count = atomic_load_explicit(&s->count[api], memory_order_relaxed);
        unsigned long long usec = atomic_load_explicit(&s->sum_usec[api], memory_order_relaxed);
        /* +Inf is the count: read after the buckets, it is never below them. */
        bad |= buf_printf(out,
                          "imperium_api_request_duration_seconds_bucket{api=\"%s\",le=\"+Inf\"} "
                          "%llu\n"
                          "imperium_api_request_duration_seconds_sum{api=\"%s\"} %llu.%06llu\n"
                          "imperium_api_request_duration_seconds_count{api=\"%s\"} %llu\n",
                          api_names[api], count < cum ? cum : count, api_names[api],
                          usec / 1000000, usec % 1000000, api_names[api],
                          count < cum ? cum : count);
    }
    return bad;
}

int api_stats_render(api_stats_t *s, buf_t *out)
{
    if (!s)
        return 0;
    return render_requests(s, out) | render_latency(s, out) ? -1 : 0;
}
