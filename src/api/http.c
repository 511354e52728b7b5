/* http.c - receive requests with libmicrohttpd, route them, answer JSON.
 *
 * libmicrohttpd calls on_request several times per request: once with the
 * headers, once per body chunk, once more when the body is complete.  The
 * body is kept up to API_MAX_BODY; anything larger is answered 413 without
 * being handled. */
#include "http.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "changes.h"
#include "db_pool.h"
#include "resp_cache.h"
#include "routes.h"
#include "workers.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Past this much discarded body the client is cut off instead of drained. */
#define DRAIN_LIMIT (16 * 1024 * 1024)

struct http_server {
    struct MHD_Daemon *d;
    api_t *api;
};

typedef struct {
    work_t work; /* first: run_job finds the context from it */
    buf_t body;
    size_t received;
    bool too_large;
    struct timespec start;
    long long poll_deadline_ms; /* a node's long poll, across resumptions */
    req_t *job; /* on a worker, or answered by one and waiting to be sent */
} conn_ctx_t;

void reply(req_t *r, int status, json_t *body)
{
    json_decref(r->out);
    r->status = status;
    r->out = body;
}

void reply_ok(req_t *r) { reply(r, 200, json_pack("{s:s}", "message", "Ok")); }

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not found";
    case 405: return "Method not allowed";
    case 409: return "Conflict";
    case 413: return "Request entity too large";
    case 416: return "Requested Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

void reply_error(req_t *r, int status, const char *reason)
{
    json_t *o = json_pack("{s:s}", "error", status_text(status));
    if (o && reason)
        json_object_set_new(o, "reason", json_string(reason));
    reply(r, status, o);
}

static void reply_errorv(req_t *r, int status, const char *fmt, va_list ap)
{
    char reason[512];
    vsnprintf(reason, sizeof reason, fmt, ap);
    reply_error(r, status, reason);
}

void reply_bad_request(req_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(r, 400, fmt, ap);
    va_end(ap);
}

void reply_conflict(req_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(r, 409, fmt, ap);
    va_end(ap);
}

void reply_internal(req_t *r, const err_t *e)
{
    log_error("%s %s: %s", r->method, r->path, e && e->msg[0] ? e->msg : "internal error");
    reply_error(r, 500, NULL);
}

void reply_err(req_t *r, const err_t *e)
{
    switch (e->kind) {
    case ERR_INPUT: reply_error(r, 400, e->msg); break;
    case ERR_FORBIDDEN: reply_error(r, 403, e->msg[0] ? e->msg : NULL); break;
    case ERR_NOTFOUND: reply_error(r, 404, NULL); break;
    case ERR_CONFLICT:
    case ERR_CONSTRAINT: reply_error(r, 409, e->msg); break;
    default: reply_internal(r, e);
    }
}

const char *req_arg(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *req_header(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int req_parse_object(req_t *r)
{
    if (r->json)
        return 0;
    if (r->body_len == 0) {
        reply_bad_request(r, "the body must be a JSON object");
        return -1;
    }
    json_error_t je;
    r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!r->json) {
        reply_bad_request(r, "invalid JSON at line %d column %d: %s", je.line, je.column,
                          je.text);
        return -1;
    }
    if (!json_is_object(r->json)) {
        json_decref(r->json);
        r->json = NULL;
        reply_bad_request(r, "the body must be a JSON object");
        return -1;
    }
    return 0;
}

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

/* A GET of a cacheable route without query arguments: key it by what the
 * answer depends on besides the data, and answer it from the cache when
 * nothing was written since the cached answer was built.  The version is
 * read before the request's snapshot begins (dispatch), so an answer can
 * only ever be tagged older than its data, never newer. */
static bool cache_lookup(req_t *r, const route_t *rt)
{
    if (rt->cache != CACHE_UNTIL_WRITE || strcmp(r->method, "GET") != 0 ||
        !resp_cache_enabled(r->api->responses) ||
        MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
        return false;
    const char *parts[] = {
        r->path,
        client_is_curl(r) ? "curl" : "", /* send_json's newline */
        req_header(r, "Authorization"),
        req_header(r, "X-uwsgi-it-username"),
        req_header(r, "X-uwsgi-it-password"),
    };
    resp_cache_key(r->api->responses, parts, (int)(sizeof parts / sizeof parts[0]),
                   r->cache_key);
    r->cache_keyed = true;
    r->cache_version = atomic_load(&r->api->pool.commits);
    r->cache_hit = resp_cache_get(r->api->responses, r->cache_key, r->cache_version);
    return r->cache_hit != NULL;
}

/* Authenticate and run the handler, with a database connection. */
static void run_route(req_t *r, const route_t *rt)
{
    r->db = db_pool_acquire(&r->api->pool);
    /* Reads see one snapshot and take the database's read lock once. */
    bool read_txn = strcmp(r->method, "GET") == 0;
    if (read_txn) {
        err_t e = {0};
        if (db_read_begin(r->db, &e) < 0) {
            log_error("%s %s: %s", r->method, r->path, e.msg);
            reply_error(r, 500, NULL);
            goto out;
        }
    }
    switch (rt->auth) {
    case AUTH_NODE:
        if (auth_node(r) < 0)
            goto out;
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
    /* A successful write may change what some node must run: wake the
     * nodes' long polls.  Their own reports and raised alarms change
     * nothing they follow. */
    if (rt->auth != AUTH_NODE && rt->auth != AUTH_ALARM && strcmp(r->method, "GET") != 0 &&
        !r->suspended &&
        r->status >= 200 && r->status < 300)
        changes_bump(r->api->changes);
out:
    if (read_txn)
        db_read_end(r->db);
    db_pool_release(&r->api->pool, r->db);
    r->db = NULL;
}

static void dispatch(req_t *r, const route_t *const *tables)
{
    bool known;
    const route_t *rt = route_find(tables, r->method, r->segs, r->nsegs, &known);
    if (!rt) {
        reply_error(r, known ? 405 : 404, NULL);
        return;
    }
    /* Before the response cache: a cached answer to the right password
     * must not tell a throttled guesser that it is right (auth.c). */
    if ((rt->auth == AUTH_CUSTOMER || rt->auth == AUTH_OPTIONAL || rt->auth == AUTH_ALARM) &&
        auth_throttled(r))
        return;
    if (cache_lookup(r, rt)) {
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
    r->route = rt; /* answer() hands it to a worker */
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
    } apis[] = {
        {api->cfg.admin_prefix, admin_tables},
        {api->cfg.node_prefix, node_tables},
        {api->cfg.prefix, customer_tables},
    };
    for (size_t i = 0; i < sizeof apis / sizeof apis[0]; i++) {
        if (split_path(r, r->path, apis[i].prefix) == 0) {
            dispatch(r, apis[i].tables);
            return;
        }
        free(r->segbuf);
        r->segbuf = NULL;
        r->nsegs = 0;
    }
    reply_error(r, 404, NULL);
}

static enum MHD_Result send_json(struct MHD_Connection *c, req_t *r)
{
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
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    if (r->cache_keyed && r->status == 200)
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

static void log_request(req_t *r, conn_ctx_t *ctx)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - ctx->start.tv_sec) * 1e3 +
                (double)(now.tv_nsec - ctx->start.tv_nsec) / 1e6;
    log_info("%s %s %d %.2fms %s", r->method, r->path, r->status, ms,
             r->authed ? r->me.username : "-");
}

static void req_free(req_t *r)
{
    json_decref(r->out);
    json_decref(r->json);
    free(r->segbuf);
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
 * from then on the HTTP thread owns it again (answer() sends it). */
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

static enum MHD_Result answer(struct MHD_Connection *c, api_t *api, conn_ctx_t *ctx,
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    api_t *api = cls;
    conn_ctx_t *ctx = *con_cls;
    if (!ctx) {
        ctx = calloc(1, sizeof *ctx);
        if (!ctx)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &ctx->start);
        *con_cls = ctx;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        long long n;
        if (cl && str_to_ll(cl, &n) && n > API_MAX_BODY) {
            /* Answer before the body is sent: no 100-continue, no upload. */
            ctx->too_large = true;
            return answer(c, api, ctx, url, method);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        ctx->received += *upload_data_size;
        if (ctx->received > API_MAX_BODY) {
            ctx->too_large = true;
            buf_free(&ctx->body);
        } else if (buf_append(&ctx->body, upload_data, *upload_data_size) < 0) {
            return MHD_NO;
        }
        *upload_data_size = 0;
        return ctx->received > DRAIN_LIMIT ? MHD_NO : MHD_YES;
    }
    return answer(c, api, ctx, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    conn_ctx_t *ctx = *con_cls;
    if (!ctx)
        return;
    if (ctx->job) { /* answered by a worker, but the client has gone */
        req_free(ctx->job);
        free(ctx->job);
    }
    buf_free(&ctx->body);
    free(ctx);
    *con_cls = NULL;
}

http_server_t *http_start(api_t *api, err_t *e)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api->cfg.port)};
    if (inet_pton(AF_INET, api->cfg.listen_addr, &sa.sin_addr) != 1) {
        err_set(e, ERR_INPUT, "invalid listen address '%s' (an IPv4 address)",
                api->cfg.listen_addr);
        return NULL;
    }
    http_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->api = api;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    s->d = MHD_start_daemon(flags, (uint16_t)api->cfg.port, NULL, NULL, on_request, api,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)api->cfg.threads,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
                            MHD_OPTION_CONNECTION_TIMEOUT, 120u,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!s->d) {
        err_set(e, ERR_INTERNAL, "cannot listen on %s:%d (address in use or not permitted)",
                api->cfg.listen_addr, api->cfg.port);
        free(s);
        return NULL;
    }
    return s;
}

void http_stop(http_server_t *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    free(s);
}
