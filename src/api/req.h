/* req.h - the request object every handler receives, and the replies a
 * handler answers with (req.c).  Handlers include this (through routes.h or
 * rows.h), never the dispatcher or the server: a handler reads its request
 * and ends with exactly one reply*(). */
#ifndef IMP_REQ_H
#define IMP_REQ_H

#include "api.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct resp_entry resp_entry_t;
struct route;

/* Headers a handler may add to its answer (reply_header). */
#define REQ_MAX_HEADERS 4

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
    /* Set by dispatch for the API's own metrics (stats.h): which API the
     * prefix named (stats_api_t) and the route matched, if any. */
    int api_kind;
    const struct route *matched;
    /* The response. */
    int status;
    json_t *out;
    /* A text answer instead of JSON (reply_text): sent as is. */
    char *text;
    const char *content_type;
    /* Headers the handler added (reply_header), sent with its answer. */
    struct {
        char name[32];
        char value[96];
    } headers[REQ_MAX_HEADERS];
    int nheaders;
    int retry_after; /* seconds, sent as Retry-After when > 0 (429, 503) */
} req_t;

/* Answer helpers: every handler ends with exactly one of these. */
void reply(req_t *r, int status, json_t *body); /* steals body */
/* A text answer of `content_type` (a string that outlives the request):
 * steals `text` (malloc'ed); NULL text is a logged 500. */
void reply_text(req_t *r, int status, char *text, const char *content_type);
void reply_ok(req_t *r);                        /* 200 {"message": "Ok"} */
void reply_error(req_t *r, int status, const char *reason);
void reply_bad_request(req_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void reply_conflict(req_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 500, logging the internal message (never sent to the client). */
void reply_internal(req_t *r, const err_t *e);
/* The status an error kind stands for: 400, 403, 404, 409 with e->msg as
 * the reason, or 500 for ERR_INTERNAL. */
void reply_err(req_t *r, const err_t *e);

/* Add a header to the answer (before or after the reply*() call).  The
 * dispatcher does not keep such an answer in the response cache: what a
 * handler says in a header (Expires) is made of the clock, and a cached
 * copy would go stale.  -1 (logged, nothing added) when the name or value
 * is too long or the request has REQ_MAX_HEADERS already. */
int reply_header(req_t *r, const char *name, const char *value);
/* `Expires: <HTTP date, now + seconds>` (RFC 9110 IMF-fixdate, GMT). */
int reply_expires(req_t *r, long long seconds);

/* A query string argument, or NULL. */
const char *req_arg(req_t *r, const char *name);
/* Whether the query string names `name` at all, its value (possibly NULL)
 * in *value: "?range" and "?range=" count, unlike a missing argument. */
bool req_arg_present(req_t *r, const char *name, const char **value);
const char *req_header(req_t *r, const char *name);

/* Parse the body as a JSON object into r->json.  On failure it answers 400
 * itself and returns -1. */
int req_parse_object(req_t *r);

/* Free what the request holds (its reply, parsed body and path segments). */
void req_free(req_t *r);

/* Ownership (owned.c).  `sql` takes $1 = the object's id and $2 = the
 * caller's customer id, and selects the id when the object is the caller's.
 * Returns the id, or -1 after answering `missing` (403 or 404, as API.md
 * lists for that object: someone else's and missing look alike) or 500.
 * An id < 0 (a path segment that is no id) counts as missing. */
long long req_owned(req_t *r, const char *sql, long long id, int missing);
/* The caller's container named by a uid path segment; 403 otherwise. */
long long req_own_container(req_t *r, const char *uid_seg);

#endif
