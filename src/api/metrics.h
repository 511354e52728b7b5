/* metrics.h - samples the nodes report (container and domain metrics) and
 * the day of samples GET /metrics/ answers with. */
#ifndef IMP_METRICS_H
#define IMP_METRICS_H

#include "../common/db.h"

#include <jansson.h>
#include <stdbool.h>

/* io.read io.write net.rx net.tx cpu mem mem.rss mem.cache quota */
bool metric_container_known(const char *metric);
/* net.rx net.tx hits */
bool metric_domain_known(const char *metric);

/* Store one sample (`at` in unix seconds, `value` >= 0).  A sample at the
 * same second for the same object and metric replaces the old one, so a
 * node may resend after an outage.  ERR_INPUT for an unknown metric or a
 * bad time or value, ERR_NOTFOUND for a missing container or domain. */
int metrics_store_container(db_t *db, err_t *e, long long container_id, const char *metric,
                            long long at, long long value);
/* `container_id` 0: the sample belongs to no container in particular. */
int metrics_store_domain(db_t *db, err_t *e, long long domain_id, long long container_id,
                         const char *metric, long long at, long long value);

/* The unix second a UTC day starts at; ERR_INPUT naming the bad part. */
int metrics_day_start(long long year, long long month, long long day, long long *start,
                      err_t *e);

/* The longest ?from=&to= range: 31 days, in seconds. */
#define METRICS_MAX_RANGE (31 * 86400)
/* Expires of an answer (seconds): a range ending in the last 5 minutes or
 * later may still get samples; an older one is final. */
#define METRICS_EXPIRES_RECENT 300
#define METRICS_EXPIRES_PAST 86400

/* ERR_INPUT naming 'from' or 'to' unless 0 <= from < to <= from + 31 days. */
int metrics_range_check(long long from, long long to, err_t *e);

/* The samples of [from, to), oldest first: [[unix, value], ...]. */
json_t *metrics_container_range(db_t *db, err_t *e, long long container_id,
                                const char *metric, long long from, long long to);
/* One entry per container that served the domain (by uid; samples of no
 * container in particular last, as "container": null):
 * [{"container": <uid>, "metrics": [[unix, value], ...]}, ...]. */
json_t *metrics_domain_range(db_t *db, err_t *e, long long domain_id, const char *metric,
                             long long from, long long to);

#endif
