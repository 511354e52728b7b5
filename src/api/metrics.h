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

/* One day from `day_start`: [[unix, value], ...] oldest first.  A domain's
 * samples at the same second from several containers are summed. */
json_t *metrics_container_day(db_t *db, err_t *e, long long container_id, const char *metric,
                              long long day_start);
json_t *metrics_domain_day(db_t *db, err_t *e, long long domain_id, const char *metric,
                           long long day_start);

#endif
