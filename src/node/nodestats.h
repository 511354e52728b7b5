/* nodestats.h - the node daemon's own health, for suppliers: counters any
 * module bumps (lock-free, from any thread) and gauges the main loop sets;
 * rendered as Prometheus text by the node's `metrics_listen` server
 * (nodestats.c; docs/OPERATING.md, "Monitoring").  Issue 16. */
#ifndef IMP_NODE_NODESTATS_H
#define IMP_NODE_NODESTATS_H

#include <stddef.h>

#include "../common/err.h"

typedef enum {
    /* counters (Prometheus *_total) */
    NS_STARTS,          /* container starts that succeeded */
    NS_START_FAILURES,  /* container starts that failed */
    NS_RESTARTS,        /* inits that ended on their own and were started again */
    NS_OOM_KILLS,       /* OOM kills seen in containers */
    NS_ALARMS_RAISED,   /* system alarms raised by this node */
    NS_CHANNEL_ERRORS,  /* failed requests to the API */
    NS_SAMPLES,         /* metric sampling rounds */
    NS_SAMPLE_USEC,     /* time spent sampling, microseconds */
    NS_METRICS_DROPPED, /* metric batches dropped from a full outbox */
    /* gauges (set, not added) */
    NS_CONTAINERS_RUNNING,
    NS_CONTAINERS_STARTING,
    NS_CONTAINERS_FAILED,
    NS_OUTBOX_LENGTH, /* batches waiting for the API */
    NS__COUNT
} nodestat_t;

/* Alarm delivery channels, for alarms sent/failed per channel. */
typedef enum { DC_SHELL, DC_XMPP, DC_PUSHOVER, DC_PUSHBULLET, DC_SLACK, DC__COUNT } delivery_channel_t;

void nodestats_add(nodestat_t s, unsigned long long n);
void nodestats_set(nodestat_t s, unsigned long long v);
unsigned long long nodestats_get(nodestat_t s);
void nodestats_delivery(delivery_channel_t c, int ok); /* ok != 0: sent, 0: failed */

/* The Prometheus text exposition (format 0.0.4) of everything above;
 * malloc'd, NULL when out of memory. */
char *nodestats_render(void);

/* The `metrics_listen` server: GET /metrics answers nodestats_render(),
 * anything else 404 (405 for another method on /metrics).  libmicrohttpd
 * with its own polling thread: a scrape never waits for the main loop.
 * `listen` is IPV4:PORT (nodestats_check_listen's rules). */
typedef struct nodestats_server nodestats_server_t;
nodestats_server_t *nodestats_serve(const char *listen, err_t *e);
void nodestats_serve_stop(nodestats_server_t *s); /* NULL: nothing */

/* IPV4:PORT (port 1-65535), e.g. 127.0.0.1:9101; what `name` is called in
 * the error.  0 or -1 with e saying what is wrong. */
int nodestats_check_listen(const char *name, const char *listen, err_t *e);

#endif
