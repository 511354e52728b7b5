/* dispatch.c - from a received request to its sent answer (dispatch.h).
 *
 * The prefix picks the route tables (customer, admin, node), routes.c the
 * route; then, in order: the throttle of password guessers, the response
 * cache, authentication by the route's auth mode, the handler (on this HTTP
 * thread for cacheable reads and the nodes' long poll, otherwise on a
 * worker), the wake of the nodes' long polls after a successful write whose
 * route declares WAKE_NODES, and the JSON sent back (cached when keyed). */
#include "dispatch.h"
#include "../common/log.h"
#include "auth.h"
#include "changes.h"
#include "db_pool.h"
#include "resp_cache.h"
#include "routes.h"
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Split the path after `prefix` into segments, dropping empty ones so that
 * trailing slashes (and doubled slashes) do not matter. */
static int split_path(req_t *r, const char *path, const char *prefix)
{
    size_t plen = strlen(prefix);
    if (strncmp(path, prefix, plen) != 0 || (path[plen] != '/' && path[plen] != '\0'))
        return -1;
    r->segbuf = strdup(path + plen);
    if (!r->segbuf)
        return -1;
    char *save = NULL;
    for (char *s = strtok_r(r->segbuf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (r->nsegs == API_MAX_SEGS)
            return -1;
        r->segs[r->nsegs++] = s;
    }
    return 0;
}

/* curl gets a newline after the JSON (send_json), so a shell prompt does not
 * follow the answer on its line. */
static bool client_is_curl(req_t *r)
{
    const char *ua = req_header(r, "User-Agent");
    return ua && strstr(ua, "curl/");
}

/* The data version a cacheable answer is checked against and tagged with,
 * read before the request's snapshot begins (run_route), so an answer can
 * only ever be tagged older than its data, never newer.  A database this
 * process has to itself (SQLite) counts every write here: no connection
 * needed.  One other processes write too (PostgreSQL) is asked on the
 * request's own connection, taken now and kept for the request (run_route):
 * a notice of another instance's write may still be on its way, and a
 * cached answer skips the password check, so it must see that write at
 * once.  -1 when it answered the request (503 if the database is
 * unreachable). */
static int read_cache_version(req_t *r)
{
    db_pool_t *pool = &r->api->pool;
    if (!pool->shared) {
        r->cache_version = db_pool_version(pool);
        return 0;
    }
    r->db = db_pool_acquire(pool);
    err_t e = {0};
    if (db_data_version_now(r->db, &e, &r->cache_version) < 0) {
        reply_internal(r, &e);
        return -1;
    }
    return 0;
}

/* A GET of a cacheable route without query arguments: key it by what the
 * answer depends on besides the data, and answer it from the cache when
 * nothing was written since the cached answer was built.  1: answered from
 * the cache; 0: not, the route runs; -1: answered with an error. */
static int cache_lookup(req_t *r, const route_t *rt)
{
    if (rt->cache != CACHE_UNTIL_WRITE || strcmp(r->method, "GET") != 0 ||
        !resp_cache_enabled(r->api->responses) ||
        MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
        return 0;
    const char *parts[] = {
        r->path,
        client_is_curl(r) ? "curl" : "", /* send_json's newline */
        req_header(r, "Authorization"),
        req_header(r, "X-uwsgi-it-username"),
        req_header(r, "X-uwsgi-it-password"),
    };
    if (read_cache_version(r) < 0)
        return -1;
    resp_cache_key(r->api->responses, parts, (int)(sizeof parts / sizeof parts[0]),
                   r->cache_key);
    r->cache_keyed = true;
    r->cache_hit = resp_cache_get(r->api->responses, r->cache_key, r->cache_version);
    return r->cache_hit != NULL;
}

/* Give back the request's connection, if it holds one. */
static void release_db(req_t *r)
{
    if (r->db)
        db_pool_release(&r->api->pool, r->db);
    r->db = NULL;
}

/* Authenticate and run the handler, with a database connection: the one
 * the response cache's version was read on (read_cache_version), else one
 * taken now. */
static void run_route(req_t *r, const route_t *rt)
{
    if (!r->db)
        r->db = db_pool_acquire(&r->api->pool);
    /* Reads see one snapshot and take the database's read lock once. */
    bool read_txn = strcmp(r->method, "GET") == 0;
    if (read_txn) {
        err_t e = {0};
        if (db_read_begin(r->db, &e) < 0) {
            reply_internal(r, &e); /* logged; 503 when the database is unreachable */
            goto out;
        }
    }
    switch (rt->auth) {
    case AUTH_NODE:
        if (auth_node(r) < 0)
            goto out;
        api_stats_node_seen(r->api->stats, r->node_server_id, (long long)time(NULL));
        break;
    case AUTH_ADMIN:
        if (auth_admin(r) < 0)
            goto out;
        break;
    case AUTH_CUSTOMER:
        if (auth_customer(r) < 0)
            goto out;
        break;
    case AUTH_OPTIONAL:
    case AUTH_ALARM:
        break; /* the handler authenticates */
    }
    rt->fn(r);
    /* A successful write the route declares may change what some node must
     * run: wake the nodes' long polls (routes.h, enum route_wake). */
    if (rt->wake == WAKE_NODES && !r->suspended && r->status >= 200 && r->status < 300)
        changes_bump(r->api->changes);
out:
    if (read_txn)
        db_read_end(r->db);
    release_db(r);
}

static void dispatch_route(req_t *r, const route_t *const *tables)
{
    bool known;
    const route_t *rt = route_find(tables, r->method, r->segs, r->nsegs, &known);
    if (!rt) {
        reply_error(r, known ? 405 : 404, NULL);
        return;
    }
    r->matched = rt;
    /* Before the response cache: a cached answer to the right password
     * must not tell a throttled guesser that it is right (auth.c). */
    if ((rt->auth == AUTH_CUSTOMER || rt->auth == AUTH_OPTIONAL || rt->auth == AUTH_ALARM) &&
        auth_throttled(r))
        return;
    int cached = cache_lookup(r, rt);
    if (cached != 0) {
        release_db(r);
        if (cached < 0)
            return; /* answered */
        r->status = 200;
        r->authed = true;
        snprintf(r->me.username, sizeof r->me.username, "%s", resp_entry_user(r->cache_hit));
        return;
    }
    /* The plain reads (the cacheable ones) are short: an HTTP thread runs
     * them, saving the trip to a worker and back, unless they meet
     * something that may block (a password to check with argon2): then the
     * request starts again on a worker; nothing was written, so starting
     * again is harmless.  The nodes' long poll must stay: it suspends its
     * connection itself.  Everything else may wait for the database's write
     * lock, a domain's DNS check, a password hash, or reads a lot (metrics):
     * workers. */
    if (strcmp(r->method, "GET") == 0 &&
        (rt->cache == CACHE_UNTIL_WRITE || rt->auth == AUTH_NODE)) {
        run_route(r, rt);
        if (!r->needs_worker)
            return;
        json_decref(r->out);
        r->out = NULL;
        r->status = 500;
        r->authed = false;
        r->needs_worker = false;
        memset(&r->me, 0, sizeof r->me);
    }
    r->route = rt; /* dispatch_request() hands it to a worker */
}

static void route_request(req_t *r)
{
    api_t *api = r->api;
    if (strcmp(r->method, "OPTIONS") == 0) {
        r->status = 200;
        r->out = json_object();
        return;
    }
    const struct {
        const char *prefix;
        const route_t *const *tables;
        stats_api_t kind;
    } apis[] = {
        {api->cfg.admin_prefix, admin_tables, STATS_API_ADMIN},
        {api->cfg.node_prefix, node_tables, STATS_API_NODE},
        {api->cfg.prefix, customer_tables, STATS_API_CUSTOMER},
    };
    for (size_t i = 0; i < sizeof apis / sizeof apis[0]; i++) {
        if (split_path(r, r->path, apis[i].prefix) == 0) {
            r->api_kind = apis[i].kind;
            dispatch_route(r, apis[i].tables);
            return;
        }
        free(r->segbuf);
        r->segbuf = NULL;
        r->nsegs = 0;
    }
    reply_error(r, 404, NULL);
}

/* A handler's text answer (reply_text): the Prometheus metrics. */
static enum MHD_Result send_text(struct MHD_Connection *c, req_t *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(r->text), r->text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->text = NULL; /* the response owns it now */
    MHD_add_response_header(resp, "Content-Type", r->content_type);
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, req_t *r)
{
    if (r->text)
        return send_text(c, r);
    bool curl = client_is_curl(r);
    char *text = r->out ? json_dumps(r->out, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!text) {
        r->status = 500;
        text = strdup("{\"error\":\"Internal Server Error\"}");
        if (!text)
            return MHD_NO;
    }
    size_t len = strlen(text);
    if (curl) {
        char *t = realloc(text, len + 2);
        if (t) {
            text = t;
            text[len++] = '\n';
            text[len] = '\0';
        }
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    if (strcmp(r->method, "OPTIONS") == 0) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                "GET,POST,DELETE,OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "X-uwsgi-it-username,X-uwsgi-it-password,Authorization,"
                                "Content-Type");
    }
    if (r->status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Basic realm=\"uwsgi.it api\"");
    if (r->retry_after > 0) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", r->retry_after);
        MHD_add_response_header(resp, "Retry-After", secs);
    }
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    /* A handler's own headers (Expires) are of the moment: never cached. */
    if (r->cache_keyed && r->status == 200 && r->nheaders == 0)
        resp_cache_put(r->api->responses, r->cache_key, r->cache_version, resp, len,
                       r->me.username);
    else
        MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_cached(struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret = MHD_queue_response(c, 200, resp_entry_response(r->cache_hit));
    resp_entry_release(r->cache_hit);
    r->cache_hit = NULL;
    return ret;
}

/* Log the answered request and count it for GET <admin_prefix>/metrics. */
static void log_request(req_t *r, conn_ctx_t *ctx)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long usec = (long long)(now.tv_sec - ctx->start.tv_sec) * 1000000 +
                     (now.tv_nsec - ctx->start.tv_nsec) / 1000;
    log_info("%s %s %d %.2fms %s", r->method, r->path, r->status, (double)usec / 1e3,
             r->authed ? r->me.username : "-");
    api_stats_request(r->api->stats, (stats_api_t)r->api_kind, r->matched, r->status, usec);
}

/* Send what the request holds (unless a long poll suspended it), log it. */
static enum MHD_Result finish(struct MHD_Connection *c, conn_ctx_t *ctx, req_t *r)
{
    /* A suspended long poll answers later, when libmicrohttpd calls us again
     * for the same request after it is resumed. */
    enum MHD_Result ret = r->suspended   ? MHD_YES
                          : r->cache_hit ? send_cached(c, r)
                                         : send_json(c, r);
    if (!r->suspended)
        log_request(r, ctx);
    req_free(r);
    return ret;
}

/* On a worker thread.  Resuming is the last thing it does with the request:
 * from then on the HTTP thread owns it again (dispatch_request() sends it). */
static void run_job(work_t *w)
{
    conn_ctx_t *ctx = (conn_ctx_t *)w;
    req_t *r = ctx->job;
    r->on_worker = true;
    run_route(r, r->route);
    MHD_resume_connection(r->conn);
}

static enum MHD_Result hand_off(struct MHD_Connection *c, api_t *api, conn_ctx_t *ctx,
                                req_t *r)
{
    req_t *job = malloc(sizeof *job);
    if (!job) {
        r->on_worker = true; /* no memory to queue it: run it here */
        run_route(r, r->route);
        return finish(c, ctx, r);
    }
    *job = *r; /* takes over the request's allocations */
    ctx->job = job;
    ctx->work.fn = run_job;
    MHD_suspend_connection(c);
    if (workers_submit(api->workers, &ctx->work) < 0) {
        reply_error(job, 503, "the API is shutting down");
        MHD_resume_connection(c);
    }
    return MHD_YES;
}

enum MHD_Result dispatch_request(struct MHD_Connection *c, api_t *api, conn_ctx_t *ctx,
                                 const char *url, const char *method)
{
    if (ctx->job) { /* resumed: a worker has answered it */
        req_t *job = ctx->job;
        ctx->job = NULL;
        enum MHD_Result ret = finish(c, ctx, job);
        free(job);
        return ret;
    }
    req_t r = {.api = api, .method = method, .path = url, .conn = c, .status = 500,
               .poll_deadline_ms = &ctx->poll_deadline_ms};
    if (ctx->too_large) {
        reply_error(&r, 413, NULL);
    } else {
        r.body = ctx->body.data ? ctx->body.data : "";
        r.body_len = ctx->body.len;
        route_request(&r);
    }
    if (r.route)
        return hand_off(c, api, ctx, &r);
    return finish(c, ctx, &r);
}

void dispatch_conn_free(conn_ctx_t *ctx)
{
    if (ctx->job) { /* answered by a worker, but the client has gone */
        req_free(ctx->job);
        free(ctx->job);
    }
    buf_free(&ctx->body);
    free(ctx);
}
