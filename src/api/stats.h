/* stats.h - the API's own health for GET <admin_prefix>/metrics (Prometheus
 * text format 0.0.4): requests by API, route group, method and status
 * class, a latency histogram per API, and when each node last called.
 * Counted where requests are dispatched (dispatch.c), with atomics: no
 * lock on the request path.  The gauges made of the database (containers
 * by state, alarms stored) are admin_metrics.c's. */
#ifndef IMP_API_STATS_H
#define IMP_API_STATS_H

#include "../common/strutil.h"
#include "routes.h"

/* Which API a request came to (its prefix). */
typedef enum {
    STATS_API_NONE, /* no prefix matched, or answered before routing (OPTIONS, 413) */
    STATS_API_CUSTOMER,
    STATS_API_ADMIN,
    STATS_API_NODE,
    STATS_APIS
} stats_api_t;

typedef struct api_stats api_stats_t;

/* Counters for every route of the customer, admin and node tables
 * (routes.c's lists: passed in, so that this file, which the admin handler
 * uses, does not point back at the tables), all 0; NULL when out of memory. */
api_stats_t *api_stats_new(const route_t *const *customer, const route_t *const *admin,
                           const route_t *const *node);
void api_stats_free(api_stats_t *s);

/* One answered request: `rt` the route it matched (NULL: none), its
 * status, and how long it took (microseconds).  `s` NULL: nothing. */
void api_stats_request(api_stats_t *s, stats_api_t api, const route_t *rt, int status,
                       long long usec);
/* A node of server `server_id` authenticated at unix time `now`. */
void api_stats_node_seen(api_stats_t *s, long long server_id, long long now);
/* The unix time server `server_id`'s node last authenticated, 0: not since
 * this process started. */
long long api_stats_node_last_seen(api_stats_t *s, long long server_id);

/* Append the request counters and the latency histogram, each family with
 * its # HELP and # TYPE lines; -1 when out of memory. */
int api_stats_render(api_stats_t *s, buf_t *out);

/* A Prometheus label value: `"`, `\` and newlines escaped, in quotes. */
int prom_label_value(buf_t *out, const char *v);

#endif
