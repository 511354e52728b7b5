/* admin_metrics.h - GET <admin_prefix>/metrics (Prometheus text format). */
#ifndef IMP_ADMIN_METRICS_H
#define IMP_ADMIN_METRICS_H

#include "../common/db.h"
#include "../common/strutil.h"
#include "api.h"

/* Append the whole exposition: stats.c's request counters and latencies
 * (`stats` NULL: none), then the gauges read from `db` (containers by
 * state, each server's node last seen, alarms stored); -1 with e set. */
int admin_metrics_render(api_stats_t *stats, db_t *db, err_t *e, buf_t *out);

#endif
