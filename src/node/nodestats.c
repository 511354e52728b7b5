/* nodestats.c - the node daemon's own health counters and their Prometheus
 * text (format 0.0.4).  Every value is a relaxed atomic: modules bump them
 * from the main loop, the delivery thread or the channel thread, and the
 * metrics server's thread reads them, with no lock to order against the
 * node's other work (a scrape sees each number whole, not a snapshot of all). */
#include "nodestats.h"

#include "../common/strutil.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* A scraper is one client every few seconds: a few connections, short
 * timeouts, so that a stuck or hostile client costs the node nothing. */
#define SERVE_MAX_CONNECTIONS 16u
#define SERVE_TIMEOUT_S 10u

static unsigned long long stats[NS__COUNT];
static unsigned long long deliveries[DC__COUNT][2]; /* [channel][ok] */

void nodestats_add(nodestat_t s, unsigned long long n)
{
    if ((unsigned)s < NS__COUNT)
        __atomic_fetch_add(&stats[s], n, __ATOMIC_RELAXED);
}

void nodestats_set(nodestat_t s, unsigned long long v)
{
    if ((unsigned)s < NS__COUNT)
        __atomic_store_n(&stats[s], v, __ATOMIC_RELAXED);
}

unsigned long long nodestats_get(nodestat_t s)
{
    return (unsigned)s < NS__COUNT ? __atomic_load_n(&stats[s], __ATOMIC_RELAXED) : 0;
}

void nodestats_delivery(delivery_channel_t c, int ok)
{
    if ((unsigned)c < DC__COUNT)
        __atomic_fetch_add(&deliveries[c][ok != 0], 1, __ATOMIC_RELAXED);
}

/* One family per counter; the gauges of containers by state share one. */
static const struct {
    nodestat_t stat;
    const char *name, *help;
} counters[] = {
    {NS_STARTS, "imperium_node_container_starts_total", "Container starts that succeeded."},
    {NS_START_FAILURES, "imperium_node_container_start_failures_total",
     "Container starts that failed."},
    {NS_RESTARTS, "imperium_node_container_restarts_total",
     "Container inits that ended on their own and were started again."},
    {NS_OOM_KILLS, "imperium_node_oom_kills_total", "OOM kills seen in containers."},
    {NS_ALARMS_RAISED, "imperium_node_alarms_raised_total", "System alarms raised by this node."},
    {NS_CHANNEL_ERRORS, "imperium_node_channel_errors_total", "Failed requests to the API."},
    {NS_SAMPLES, "imperium_node_sample_rounds_total", "Metric sampling rounds."},
    {NS_METRICS_DROPPED, "imperium_node_metrics_dropped_total",
     "Metric batches dropped from a full outbox."},
};

static const struct {
    nodestat_t stat;
    const char *state;
} by_state[] = {
    {NS_CONTAINERS_RUNNING, "running"},
    {NS_CONTAINERS_STARTING, "starting"},
    {NS_CONTAINERS_FAILED, "failed"},
};

static const char *const channel_names[DC__COUNT] = {
    [DC_SHELL] = "shell",           [DC_XMPP] = "xmpp",   [DC_PUSHOVER] = "pushover",
    [DC_PUSHBULLET] = "pushbullet", [DC_SLACK] = "slack",
};

static int render_family(buf_t *b, const char *name, const char *type, const char *help)
{
    return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int render_counters(buf_t *b)
{
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        if (render_family(b, counters[i].name, "counter", counters[i].help) < 0 ||
            buf_printf(b, "%s %llu\n", counters[i].name, nodestats_get(counters[i].stat)) < 0)
            return -1;
    /* Prometheus wants seconds; the sampler counts microseconds so that a
     * round of a few hundred of them is not rounded away. */
    unsigned long long us = nodestats_get(NS_SAMPLE_USEC);
    if (render_family(b, "imperium_node_sample_seconds_total", "counter",
                      "Time spent sampling containers' metrics.") < 0 ||
        buf_printf(b, "imperium_node_sample_seconds_total %llu.%06llu\n", us / 1000000,
                   us % 1000000) < 0)
        return -1;
    return 0;
}

static int render_gauges(buf_t *b)
{
    if (render_family(b, "imperium_node_containers", "gauge",
                      "Containers of this node by state.") < 0)
        return -1;
    for (size_t i = 0; i < sizeof by_state / sizeof by_state[0]; i++)
        if (buf_printf(b, "imperium_node_containers{state=\"%s\"} %llu\n", by_state[i].state,
                       nodestats_get(by_state[i].stat)) < 0)
            return -1;
    if (render_family(b, "imperium_node_outbox_length", "gauge",
                      "Batches of metrics and alarms waiting for the API.") < 0 ||
        buf_printf(b, "imperium_node_outbox_length %llu\n", nodestats_get(NS_OUTBOX_LENGTH)) < 0)
        return -1;
    return 0;
}

static int render_deliveries(buf_t *b)
{
    if (render_family(b, "imperium_node_alarm_deliveries_total", "counter",
                      "Alarm deliveries by channel and result.") < 0)
        return -1;
    for (int c = 0; c < DC__COUNT; c++)
        for (int ok = 1; ok >= 0; ok--)
            if (buf_printf(b,
                           "imperium_node_alarm_deliveries_total{channel=\"%s\",result=\"%s\"} "
                           "%llu\n",
                           channel_names[c], ok ? "sent" : "failed",
                           __atomic_load_n(&deliveries[c][ok], __ATOMIC_RELAXED)) < 0)
                return -1;
    return 0;
}

char *nodestats_render(void)
{
    buf_t b = {0};
    if (render_counters(&b) < 0 || render_gauges(&b) < 0 || render_deliveries(&b) < 0) {
        buf_free(&b);
        return NULL;
    }
    if (!b.data) /* nothing appended: cannot happen, but never return NULL as success */
        return calloc(1, 1);
    return b.data;
}

/* ---- the metrics_listen server ----------------------------------------------- */

struct nodestats_server {
    struct MHD_Daemon *d;
};

/* "ADDR:PORT" into sa; -1 with e naming the setting. */
static int parse_listen(const char *name, const char *listen, struct sockaddr_in *sa, err_t *e)
{
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    char ip[INET_ADDRSTRLEN];
    long long port;
    if (!colon || (size_t)(colon - listen) >= sizeof ip || !str_to_ll(colon + 1, &port) ||
        port < 1 || port > 65535)
        return err_set(e, ERR_INPUT, "%s must be IPV4:PORT (e.g. 127.0.0.1:9101), not '%s'",
                       name, listen ? listen : "");
    memcpy(ip, listen, (size_t)(colon - listen));
    ip[colon - listen] = '\0';
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1)
        return err_set(e, ERR_INPUT, "%s: '%s' is not an IPv4 address (e.g. 127.0.0.1:9101)",
                       name, ip);
    return 0;
}

int nodestats_check_listen(const char *name, const char *listen, err_t *e)
{
    struct sockaddr_in sa;
    return parse_listen(name, listen, &sa, e);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, char *text,
                              const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    /* Answer on the first call: a body, if any, is never read (MHD
     * discards it once the answer is queued). */
    (void)con_cls;
    *upload_data_size = 0;
    const char *plain = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") != 0)
        return answer(c, MHD_HTTP_NOT_FOUND, strdup("not found: the node serves /metrics\n"),
                      plain);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("only GET /metrics\n"), plain);
    char *text = nodestats_render();
    if (!text)
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strdup("out of memory\n"), plain);
    return answer(c, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8");
}

nodestats_server_t *nodestats_serve(const char *listen, err_t *e)
{
    struct sockaddr_in sa;
    if (parse_listen("metrics_listen", listen, &sa, e) < 0)
        return NULL;
    nodestats_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
                            ntohs(sa.sin_port), NULL, NULL, on_request, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, SERVE_MAX_CONNECTIONS,
                            MHD_OPTION_CONNECTION_TIMEOUT, SERVE_TIMEOUT_S, MHD_OPTION_END);
    if (!s->d) {
        err_set(e, ERR_INTERNAL,
                "metrics_listen: cannot listen on %s (address in use or not this host's)",
                listen);
        free(s);
        return NULL;
    }
    return s;
}

void nodestats_serve_stop(nodestats_server_t *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    free(s);
}
