/* admin_metrics.c - GET <admin_prefix>/metrics: the API's own health in
 * the Prometheus text format 0.0.4 (docs/OPERATING.md, "Monitoring").
 * The request counters and latencies come from stats.c; the gauges are
 * read from the database at each scrape. */
#include "admin_metrics.h"
#include "routes.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The states a node reports (node_channel.c), then "unknown": never reported. */
static const char *const container_states[] = {"running", "starting", "stopped", "failed",
                                               "unknown", NULL};

static int render_containers(db_t *db, err_t *e, buf_t *out)
{
    db_res_t *res = db_query(db, e,
                             "SELECT COALESCE(s.state, 'unknown'), COUNT(*) FROM containers c "
                             "LEFT JOIN container_status s ON s.container_id = c.id "
                             "GROUP BY COALESCE(s.state, 'unknown')",
                             DB_NOARGS);
    if (!res)
        return -1;
    int bad = buf_appends(out, "# HELP imperium_api_containers Containers by the state their "
                               "node last reported (unknown: never reported).\n"
                               "# TYPE imperium_api_containers gauge\n");
    for (const char *const *st = container_states; *st; st++) {
        long long n = 0;
        for (int i = 0; i < res->nrows; i++)
            if (strcmp(db_get(res, i, 0), *st) == 0)
                n = db_get_int(res, i, 1);
        bad |= buf_printf(out, "imperium_api_containers{state=\"%s\"} %lld\n", *st, n);
    }
    db_res_free(res);
    return bad;
}

static int render_nodes(api_stats_t *stats, db_t *db, err_t *e, buf_t *out)
{
    db_res_t *res = db_query(db, e, "SELECT id, name FROM servers ORDER BY id", DB_NOARGS);
    if (!res)
        return -1;
    int bad = buf_appends(out,
                          "# HELP imperium_api_node_last_seen_seconds When each server's node "
                          "last called the nodes' channel (unix time; 0: not since this API "
                          "process started).\n"
                          "# TYPE imperium_api_node_last_seen_seconds gauge\n");
    for (int i = 0; i < res->nrows; i++) {
        bad |= buf_appends(out, "imperium_api_node_last_seen_seconds{server=");
        bad |= prom_label_value(out, db_get(res, i, 1));
        bad |= buf_printf(out, "} %lld\n",
                          api_stats_node_last_seen(stats, db_get_int(res, i, 0)));
    }
    db_res_free(res);
    return bad;
}

static int render_alarms(db_t *db, err_t *e, buf_t *out)
{
    db_res_t *res = db_query(db, e,
                             "SELECT (SELECT COUNT(*) FROM alarms WHERE node_ref IS NOT NULL), "
                             "(SELECT COUNT(*) FROM alarms WHERE node_ref IS NULL)",
                             DB_NOARGS);
    if (!res)
        return -1;
    int bad = buf_printf(out,
                         "# HELP imperium_api_alarms Alarms stored, raised by the nodes "
                         "(system alarms) or with the API.\n"
                         "# TYPE imperium_api_alarms gauge\n"
                         "imperium_api_alarms{source=\"node\"} %lld\n"
                         "imperium_api_alarms{source=\"api\"} %lld\n",
                         db_get_int(res, 0, 0), db_get_int(res, 0, 1));
    db_res_free(res);
    return bad;
}

int admin_metrics_render(api_stats_t *stats, db_t *db, err_t *e, buf_t *out)
{
    if (api_stats_render(stats, out) < 0)
        return err_set(e, ERR_INTERNAL, "out of memory rendering the metrics");
    int rc = render_containers(db, e, out);
    if (rc == 0)
        rc = render_nodes(stats, db, e, out);
    if (rc == 0)
        rc = render_alarms(db, e, out);
    if (rc < 0 && e->kind == ERR_NONE)
        err_set(e, ERR_INTERNAL, "out of memory rendering the metrics");
    return rc < 0 ? -1 : 0;
}

static void h_admin_metrics(req_t *r)
{
    buf_t out = {0};
    err_t e = {0};
    if (admin_metrics_render(r->api->stats, r->db, &e, &out) < 0) {
        buf_free(&out);
        return reply_internal(r, &e);
    }
    /* An empty buffer has no data yet: still a valid (empty) answer. */
    reply_text(r, 200, out.data ? out.data : strdup(""), PROM_CONTENT_TYPE);
}

const route_t admin_metrics_routes[] = {
    {"GET", "metrics", h_admin_metrics, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
