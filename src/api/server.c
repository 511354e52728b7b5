/* server.c - the HTTP server's lifecycle: libmicrohttpd started on the
 * configured address with its threads, connection timeout and listen
 * backlog, and stopped.  (TLS and IPv6 listening go here.)
 *
 * libmicrohttpd calls on_request several times per request: once with the
 * headers, once per body chunk, once more when the body is complete.  The
 * body is kept up to API_MAX_BODY; anything larger is answered 413 without
 * being handled.  A complete request goes to dispatch.c. */
#include "server.h"
#include "../common/strutil.h"
#include "dispatch.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <time.h>

/* Past this much discarded body the client is cut off instead of drained. */
#define DRAIN_LIMIT (16 * 1024 * 1024)

struct server {
    struct MHD_Daemon *d;
    api_t *api;
};

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
            return dispatch_request(c, api, ctx, url, method);
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
    return dispatch_request(c, api, ctx, url, method);
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
    dispatch_conn_free(ctx);
    *con_cls = NULL;
}

server_t *server_start(api_t *api, err_t *e)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api->cfg.port)};
    if (inet_pton(AF_INET, api->cfg.listen_addr, &sa.sin_addr) != 1) {
        err_set(e, ERR_INPUT, "invalid listen address '%s' (an IPv4 address)",
                api->cfg.listen_addr);
        return NULL;
    }
    server_t *s = calloc(1, sizeof *s);
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

void server_stop(server_t *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    free(s);
}
