/* api.h - the imperium-api daemon: its context and the request object every
 * handler receives. */
#ifndef IMP_API_H
#define IMP_API_H

#include "../common/db.h"
#include "../common/err.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define API_MAX_BODY (64 * 1024)
#define API_MAX_SEGS 8

typedef struct auth_cache auth_cache_t;
typedef struct resp_cache resp_cache_t;
typedef struct resp_entry resp_entry_t;
typedef struct changes changes_t;
typedef struct workers workers_t;
typedef struct throttle throttle_t;
typedef struct gate gate_t;
struct route;

/* A fixed pool of database connections shared by the HTTP worker threads. */
typedef struct {
    db_t **conns;
    bool *busy;
    int n;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    fifo_lock_t write_lock;     /* db_set_write_lock: writers queue here */
    atomic_ullong commits;      /* db_set_commit_counter: the data's version */
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
    int response_cache_mb; /* resp_cache.c's bodies; 0 = off */
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
    char dummy_hash[128]; /* checked for unknown users: the same work */
    resp_cache_t *responses; /* repeated GETs, until the next write */
    changes_t *changes; /* wakes the nodes' long polls */
    workers_t *workers;
} api_t;

/* The authenticated customer of a request. */
typedef struct {
    long long id;
    char uuid[37];
    char username[128];
} customer_t;

typedef struct req {
    api_t *api;
    db_t *db;
    const char *method;
    const char *path;       /* the full URL path */
    char *segs[API_MAX_SEGS];
    int nsegs;              /* path segments after the prefix */
    char *segbuf;
    const char *body;
    size_t body_len;
    json_t *json;           /* the parsed body, for handlers that take one */
    void *conn;             /* struct MHD_Connection * */
    customer_t me;
    bool authed;
    long long node_server_id; /* the server of an authenticated node */
    /* Long polls: the deadline (monotonic ms) kept across resumptions, and
     * set when the handler suspended the connection instead of replying. */
    long long *poll_deadline_ms;
    bool suspended;
    /* resp_cache.c: the key and data version of a cacheable GET, and the
     * entry that answers it when there is one. */
    bool cache_keyed;
    unsigned char cache_key[32];
    unsigned long long cache_version;
    resp_entry_t *cache_hit;
    /* Set by dispatch when the route must run on a worker thread. */
    const struct route *route;
    bool on_worker;    /* may block: a worker thread runs it */
    bool needs_worker; /* an HTTP thread met work that may block (auth.c) */
    /* The response. */
    int status;
    json_t *out;
    const char *extra_header[2];
    int retry_after; /* seconds, sent as Retry-After when > 0 (429) */
} req_t;

/* Answer helpers: every handler ends with exactly one of these. */
void reply(req_t *r, int status, json_t *body); /* steals body */
void reply_ok(req_t *r);                        /* 200 {"message": "Ok"} */
void reply_error(req_t *r, int status, const char *reason);
void reply_bad_request(req_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void reply_conflict(req_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 500, logging the internal message (never sent to the client). */
void reply_internal(req_t *r, const err_t *e);
/* The status an error kind stands for: 400, 403, 404, 409 with e->msg as
 * the reason, or 500 for ERR_INTERNAL. */
void reply_err(req_t *r, const err_t *e);

/* A query string argument, or NULL. */
const char *req_arg(req_t *r, const char *name);
const char *req_header(req_t *r, const char *name);

/* Parse the body as a JSON object into r->json.  On failure it answers 400
 * itself and returns -1. */
int req_parse_object(req_t *r);

/* Ownership (owned.c).  `sql` takes $1 = the object's id and $2 = the
 * caller's customer id, and selects the id when the object is the caller's.
 * Returns the id, or -1 after answering `missing` (403 or 404, as API.md
 * lists for that object: someone else's and missing look alike) or 500.
 * An id < 0 (a path segment that is no id) counts as missing. */
long long req_owned(req_t *r, const char *sql, long long id, int missing);
/* The caller's container named by a uid path segment; 403 otherwise. */
long long req_own_container(req_t *r, const char *uid_seg);

/* Customer authentication (auth.c).  Answers 401 itself on failure, or
 * 429 (with Retry-After) when password checks of this username or client
 * address are throttled, or all argon2 slots are busy. */
int auth_customer(req_t *r);
int auth_admin(req_t *r);
/* 0: authenticated; -1: no or wrong credentials (nothing answered);
 * AUTH_ANSWERED: throttled, answered 429 already. */
#define AUTH_ANSWERED (-2)
int auth_optional(req_t *r);
/* Before anything else answers a customer request (the response cache):
 * true after answering 429 when its username or address is throttled. */
bool auth_throttled(req_t *r);
/* The limits on password checks, from api->cfg; freed by auth_limits_free. */
int auth_limits_init(api_t *api, err_t *e);
void auth_limits_free(api_t *api);
int auth_node(req_t *r);
/* A fresh node secret (hex) and the hash stored for it. */
int node_secret_new(char secret[65], char hash[65]);
auth_cache_t *auth_cache_new(int ttl);
void auth_cache_free(auth_cache_t *c);

/* Password hashing (auth.c): argon2id via libsodium. */
int password_hash(const char *password, char out[128], err_t *e);

#endif
