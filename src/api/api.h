/* api.h - the imperium-api daemon's context (req.h: the request object every
 * handler receives). */
#ifndef IMP_API_H
#define IMP_API_H

#include "../common/db.h"
#include "../common/err.h"
#include "../common/validate.h" /* API_MAX_BODY: the node keeps to it too */

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define API_MAX_SEGS 8

typedef struct auth_cache auth_cache_t;
typedef struct resp_cache resp_cache_t;
typedef struct changes changes_t;
typedef struct workers workers_t;
typedef struct throttle throttle_t;
typedef struct gate gate_t;
typedef struct api_stats api_stats_t;

/* A fixed pool of database connections shared by the HTTP worker threads. */
typedef struct {
    db_t **conns;
    bool *busy;
    int n;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    fifo_lock_t write_lock;     /* db_set_write_lock: writers queue here */
    bool shared;                /* db_shared: other processes write the database too */
} db_pool_t;

typedef struct {
    char listen_addr[64];
    int port;
    char db_url[1024];
    char prefix[64];       /* customer API prefix, "/api" */
    char admin_prefix[64]; /* admin API prefix, "/admin" */
    char node_prefix[64];  /* the nodes' channel, "/node" */
    char admin_token_file[1024];
    int threads;           /* libmicrohttpd's: read requests, answer cached ones */
    int workers;           /* workers.c's: run every other request */
    int auth_cache_ttl;    /* seconds a verified password stays cached */
    int auth_slots;        /* argon2 checks at once (as many may wait) */
    int auth_user_failures;    /* failed checks of one username, a burst... */
    int auth_address_failures; /* ...and of one client address... */
    int auth_failure_window;   /* ...refilled over this many seconds */
    int alarm_raises;      /* alarms raised per container in a burst, and per minute; 0 = off */
    int response_cache_mb; /* resp_cache.c's bodies; 0 = off */
    int long_poll_recheck_ms; /* changes.c: suspended long polls re-checked without a change */
    char dns_resolver[80]; /* POST /domains/ check: "IP[:PORT]"; "" = /etc/resolv.conf */
    int dns_timeout_ms;    /* the whole DNS check of one domain */
} api_config_t;

typedef struct api {
    api_config_t cfg;
    char admin_token[128];
    db_pool_t pool;
    auth_cache_t *auth;
    /* auth.c's limits on password checks (throttle.h). */
    throttle_t *fail_users, *fail_addrs;
    gate_t *argon2;
    throttle_t *alarm_raises; /* alarms.c: raises per container (cfg.alarm_raises) */
    char dummy_hash[128]; /* checked for unknown users: the same work */
    resp_cache_t *responses; /* repeated GETs, until the next write */
    changes_t *changes; /* wakes the nodes' long polls */
    workers_t *workers;
    api_stats_t *stats; /* GET <admin_prefix>/metrics (stats.h); NULL: not counted */
} api_t;

#endif
