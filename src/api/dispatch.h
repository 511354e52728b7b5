/* dispatch.h - from a received request to its sent answer: the prefix and
 * route (routes.c), throttling and authentication (auth.c), the response
 * cache, the hand-off to a worker thread, the wake of the nodes' long polls
 * after a write the route declares (WAKE_NODES), and the JSON sent back.
 * server.c owns the connections and calls it once a request's body is in. */
#ifndef IMP_DISPATCH_H
#define IMP_DISPATCH_H

#include "../common/strutil.h"
#include "api.h"
#include "req.h"
#include "workers.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* One connection's current request across libmicrohttpd's calls: the server
 * fills the body, the dispatcher the rest. */
typedef struct {
    work_t work; /* first: the worker finds the context from it */
    buf_t body;
    size_t received;
    bool too_large;             /* answered 413 without being handled */
    struct timespec start;      /* CLOCK_MONOTONIC, for the log line */
    long long poll_deadline_ms; /* a node's long poll, across resumptions */
    req_t *job; /* on a worker, or answered by one and waiting to be sent */
} conn_ctx_t;

/* Answer the request of `ctx` (its body complete, or too large): on this
 * thread, or suspended and handed to a worker (libmicrohttpd calls this
 * again once it is resumed, and then it sends the worker's answer). */
enum MHD_Result dispatch_request(struct MHD_Connection *c, api_t *api, conn_ctx_t *ctx,
                                 const char *url, const char *method);

/* The connection's request has ended: free the context (and an answer a
 * worker made for a client that has gone). */
void dispatch_conn_free(conn_ctx_t *ctx);

#endif
