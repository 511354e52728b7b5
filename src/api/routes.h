/* routes.h - the API's URL map.  Every handler file exports one route
 * table; routes.c lists the tables; dispatch.c matches a request against
 * them and does what each entry declares (auth, cache, wake). */
#ifndef IMP_ROUTES_H
#define IMP_ROUTES_H

#include "req.h"

typedef void (*handler_fn)(req_t *r);

enum route_auth {
    AUTH_CUSTOMER, /* Basic or hex headers; 401 otherwise */
    AUTH_OPTIONAL, /* the handler looks at r->authed itself */
    AUTH_ALARM,    /* customer credentials or ?key=<alarm key> (alarms.c) */
    AUTH_ADMIN,    /* the supplier's admin token */
    AUTH_NODE,     /* a server: Basic <server name>:<node secret> */
};

/* Whether a 200 of a GET may be answered again from resp_cache.c until the
 * next write.  Only for answers made of the database alone: nothing that
 * depends on the clock, the query string or another service. */
enum route_cache {
    CACHE_NONE,
    CACHE_UNTIL_WRITE,
};

/* Whether a successful answer (2xx, not a suspended long poll) wakes the
 * nodes' long polls (changes.c) after the handler ran: every write that may
 * change what some node must run.  The dispatcher does it; handlers need do
 * nothing.  Reads never wake; neither do the nodes' own reports.  A raised
 * alarm does: the node delivers it (server.alarm_seq of its state). */
enum route_wake {
    WAKE_NONE,
    WAKE_NODES,
};

typedef struct route {
    const char *method;
    const char *pattern; /* segments joined by '/', '*' matches one segment */
    handler_fn fn;
    enum route_auth auth;
    enum route_cache cache;
    enum route_wake wake;
} route_t;

/* Find the route for a request's method and segments in a NULL-terminated
 * list of tables.  Returns the route, or NULL with *path_known telling 405
 * (the path exists for another method) from 404. */
const route_t *route_find(const route_t *const *tables, const char *method, char *const *segs,
                          int nsegs, bool *path_known);

/* Each handler file owns its routes; these tables are searched in order. */
extern const route_t *const customer_tables[];
extern const route_t *const admin_tables[];
extern const route_t *const node_tables[];

extern const route_t me_routes[];
extern const route_t container_routes[];
extern const route_t distro_routes[];
extern const route_t tag_routes[];
extern const route_t domain_routes[];
extern const route_t loopbox_routes[];
extern const route_t alarm_routes[];
extern const route_t portmapping_routes[];
extern const route_t custom_distro_routes[];
extern const route_t metric_routes[];
extern const route_t news_routes[];
extern const route_t admin_customer_routes[];
extern const route_t admin_server_routes[];
extern const route_t admin_container_routes[];
extern const route_t admin_other_routes[];
extern const route_t admin_metrics_routes[];
extern const route_t node_routes[];

#endif
