/* metrics.c - /metrics/ (see API.md) and the storage of the samples nodes
 * report.  A day is a UTC day; samples are unix seconds. */
#include "metrics.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "routes.h"
#include "rows.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define DAY_SECONDS 86400

static const char *const container_metrics[] = {
    "io.read", "io.write", "net.rx", "net.tx", "cpu", "mem", "mem.rss", "mem.cache", "quota",
    NULL,
};
static const char *const domain_metrics[] = {"net.rx", "net.tx", "hits", NULL};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

bool metric_container_known(const char *metric) { return in_list(container_metrics, metric); }
bool metric_domain_known(const char *metric) { return in_list(domain_metrics, metric); }

/* ---- storage ---- */

static int sample_check(err_t *e, long long at, long long value)
{
    if (at <= 0)
        return err_set(e, ERR_INPUT, "a sample's time must be a positive unix time, not %lld",
                       at);
    if (value < 0)
        return err_set(e, ERR_INPUT, "a sample's value must not be negative (%lld)", value);
    return 0;
}

int metrics_store_container(db_t *db, err_t *e, long long container_id, const char *metric,
                            long long at, long long value)
{
    if (!metric_container_known(metric))
        return err_set(e, ERR_INPUT, "unknown container metric '%s'", metric);
    if (sample_check(e, at, value) < 0)
        return -1;
    /* Update first: a resent sample replaces itself instead of doubling. */
    long long n = db_exec(db, e,
                          "UPDATE container_metrics SET value = $4 WHERE container_id = $1 "
                          "AND metric = $2 AND unix = $3",
                          DB_ARGS(DB_INT(container_id), DB_TEXT(metric), DB_INT(at),
                                  DB_INT(value)));
    if (n == 0)
        n = db_exec(db, e,
                    "INSERT INTO container_metrics (container_id, metric, unix, value) "
                    "VALUES ($1, $2, $3, $4)",
                    DB_ARGS(DB_INT(container_id), DB_TEXT(metric), DB_INT(at), DB_INT(value)));
    if (n < 0 && e && e->kind == ERR_CONSTRAINT)
        return err_set(e, ERR_NOTFOUND, "no container with id %lld", container_id);
    return n < 0 ? -1 : 0;
}

int metrics_store_domain(db_t *db, err_t *e, long long domain_id, long long container_id,
                         const char *metric, long long at, long long value)
{
    if (!metric_domain_known(metric))
        return err_set(e, ERR_INPUT, "unknown domain metric '%s'", metric);
    if (container_id < 0)
        return err_set(e, ERR_INPUT, "a container id must not be negative (%lld)",
                       container_id);
    if (sample_check(e, at, value) < 0)
        return -1;
    /* COALESCE: "no container" (NULL) compares equal to 0 in both SQL dialects. */
    long long n = db_exec(db, e,
                          "UPDATE domain_metrics SET value = $5 WHERE domain_id = $1 AND "
                          "COALESCE(container_id, 0) = $2 AND metric = $3 AND unix = $4",
                          DB_ARGS(DB_INT(domain_id), DB_INT(container_id), DB_TEXT(metric),
                                  DB_INT(at), DB_INT(value)));
    if (n == 0)
        n = db_exec(db, e,
                    "INSERT INTO domain_metrics (domain_id, container_id, metric, unix, value) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    DB_ARGS(DB_INT(domain_id), container_id ? DB_INT(container_id) : DB_NULL,
                            DB_TEXT(metric), DB_INT(at), DB_INT(value)));
    if (n < 0 && e && e->kind == ERR_CONSTRAINT)
        return err_set(e, ERR_NOTFOUND, "no domain with id %lld or no container with id %lld",
                       domain_id, container_id);
    return n < 0 ? -1 : 0;
}

/* ---- reading a day ---- */

static bool leap(long long y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(long long y, long long m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return days[m - 1] + (m == 2 && leap(y));
}

int metrics_day_start(long long year, long long month, long long day, long long *start,
                      err_t *e)
{
    if (year < 1970 || year > 9999)
        return err_set(e, ERR_INPUT, "'year' must be from 1970 to 9999, not %lld", year);
    if (month < 1 || month > 12)
        return err_set(e, ERR_INPUT, "'month' must be from 1 to 12, not %lld", month);
    if (day < 1 || day > days_in_month(year, month))
        return err_set(e, ERR_INPUT, "'day' must be from 1 to %d in %04lld-%02lld, not %lld",
                       days_in_month(year, month), year, month, day);
    struct tm tm = {.tm_year = (int)(year - 1900), .tm_mon = (int)(month - 1),
                    .tm_mday = (int)day};
    *start = (long long)timegm(&tm);
    return 0;
}

static json_t *sample_row(db_res_t *res, int row)
{
    return json_pack("[I,I]", (json_int_t)db_get_int(res, row, 0),
                     (json_int_t)db_get_int(res, row, 1));
}

json_t *metrics_container_range(db_t *db, err_t *e, long long container_id,
                                const char *metric, long long from, long long to)
{
    return rows_json(db, e, sample_row,
                     "SELECT unix, value FROM container_metrics WHERE container_id = $1 "
                     "AND metric = $2 AND unix >= $3 AND unix < $4 ORDER BY unix",
                     DB_ARGS(DB_INT(container_id), DB_TEXT(metric), DB_INT(from),
                             DB_INT(to)));
}

/* Append {"container": <uid or null>, "metrics": []} to `out`; its list, or
 * NULL when out of memory. */
static json_t *domain_entry(json_t *out, db_res_t *res, int row)
{
    json_t *samples = json_array();
    json_t *o = json_pack("{s:o,s:o}", "container",
                          db_is_null(res, row, 0)
                              ? json_null()
                              : json_integer(container_uid(db_get_int(res, row, 0))),
                          "metrics", samples);
    if (!o || json_array_append_new(out, o) < 0)
        return NULL;
    return samples;
}

/* Whether rows `a` and `b` name the same container (NULL: none). */
static bool same_container(db_res_t *res, int a, int b)
{
    const char *x = res->cells[a * res->ncols], *y = res->cells[b * res->ncols];
    return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

/* Rows (container_id, unix, value) ordered by container: one entry per
 * container, in the public platform's shape. */
static json_t *domain_entries(db_res_t *res, err_t *e)
{
    json_t *out = json_array(), *samples = NULL;
    for (int i = 0; out && i < res->nrows; i++) {
        if ((i == 0 || !same_container(res, i - 1, i)) &&
            !(samples = domain_entry(out, res, i))) {
            json_decref(out);
            out = NULL;
            break;
        }
        json_t *sample = json_pack("[I,I]", (json_int_t)db_get_int(res, i, 1),
                                   (json_int_t)db_get_int(res, i, 2));
        if (!sample || json_array_append_new(samples, sample) < 0) {
            json_decref(out);
            out = NULL;
        }
    }
    if (!out)
        err_set(e, ERR_INTERNAL, "out of memory");
    return out;
}

json_t *metrics_domain_range(db_t *db, err_t *e, long long domain_id, const char *metric,
                             long long from, long long to)
{
    /* GROUP BY: one sample per container and second, however the rows
     * were stored; entries by container id, "no container" last. */
    db_res_t *res = db_query(db, e,
                             "SELECT container_id, unix, SUM(value) FROM domain_metrics "
                             "WHERE domain_id = $1 AND metric = $2 AND unix >= $3 AND "
                             "unix < $4 GROUP BY container_id, unix "
                             "ORDER BY container_id IS NULL, container_id, unix",
                             DB_ARGS(DB_INT(domain_id), DB_TEXT(metric), DB_INT(from),
                                     DB_INT(to)));
    if (!res)
        return NULL;
    json_t *out = domain_entries(res, e);
    db_res_free(res);
    return out;
}

/* ---- GET /metrics/<kind>.<metric>/<id> ---- */

/* An integer query argument, `*v` unchanged when absent; answers 400
 * itself on a non-integer. */
static int int_arg(req_t *r, const char *name, long long *v)
{
    const char *s = req_arg(r, name);
    if (s && !str_to_ll(s, v)) {
        reply_bad_request(r, "'%s' must be an integer, not '%s'", name, s);
        return -1;
    }
    return 0;
}

/* ?year=&month=&day=: the day (each part defaults to today's, UTC). */
static int requested_day(req_t *r, long long *from, long long *to)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    long long y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
    if (int_arg(r, "year", &y) < 0 || int_arg(r, "month", &m) < 0 || int_arg(r, "day", &d) < 0)
        return -1;
    err_t e = {0};
    if (metrics_day_start(y, m, d, from, &e) < 0) {
        reply_err(r, &e);
        return -1;
    }
    *to = *from + DAY_SECONDS;
    return 0;
}

int metrics_range_check(long long from, long long to, err_t *e)
{
    if (from < 0)
        return err_set(e, ERR_INPUT, "'from' must be a unix time (seconds, not negative), "
                                     "not %lld", from);
    if (to <= from)
        return err_set(e, ERR_INPUT, "'to' (%lld) must be after 'from' (%lld)", to, from);
    if (to - from > METRICS_MAX_RANGE)
        return err_set(e, ERR_INPUT, "'from' to 'to' must span at most 31 days (%d seconds), "
                                     "not %lld", METRICS_MAX_RANGE, to - from);
    return 0;
}

/* The samples the query string asks for: [from, to) by ?from=&to= (unix
 * seconds, beyond the public platform), else one UTC day.  Answers 400
 * itself and returns -1 on a bad or mixed query. */
static int requested_range(req_t *r, long long *from, long long *to)
{
    const char *v;
    bool has_from = req_arg_present(r, "from", &v), has_to = req_arg_present(r, "to", &v);
    if (!has_from && !has_to)
        return requested_day(r, from, to);
    if (!has_from || !has_to) {
        reply_bad_request(r, "'from' and 'to' go together (unix seconds, at most 31 days "
                             "apart)");
        return -1;
    }
    if (req_arg_present(r, "year", &v) || req_arg_present(r, "month", &v) ||
        req_arg_present(r, "day", &v)) {
        reply_bad_request(r, "ask either 'from' and 'to' or 'year', 'month' and 'day', "
                             "not both");
        return -1;
    }
    if (!req_arg(r, "from") || !req_arg(r, "to")) {
        reply_bad_request(r, "'%s' must be an integer (unix seconds)",
                          req_arg(r, "from") ? "to" : "from");
        return -1;
    }
    if (int_arg(r, "from", from) < 0 || int_arg(r, "to", to) < 0)
        return -1;
    err_t e = {0};
    if (metrics_range_check(*from, *to, &e) < 0) {
        reply_err(r, &e);
        return -1;
    }
    return 0;
}

/* Answer a range of samples.  Expires: samples of the last minutes may
 * still come (nodes report every few minutes), so a range reaching into
 * them expires soon; an older one does not change any more. */
static void reply_samples(req_t *r, json_t *out, err_t *e, long long to)
{
    if (!out)
        return reply_internal(r, e);
    bool recent = to > (long long)time(NULL) - METRICS_EXPIRES_RECENT;
    reply_expires(r, recent ? METRICS_EXPIRES_RECENT : METRICS_EXPIRES_PAST);
    reply(r, 200, out);
}

static void container_metric(req_t *r, const char *metric)
{
    long long id = req_own_container(r, r->segs[2]), from, to;
    if (id < 0 || requested_range(r, &from, &to) < 0)
        return;
    err_t e = {0};
    reply_samples(r, metrics_container_range(r->db, &e, id, metric, from, to), &e, to);
}

static void domain_metric(req_t *r, const char *metric)
{
    /* 404 for someone else's domain, as every domain endpoint. */
    long long id = req_owned(r, "SELECT id FROM domains WHERE id = $1 AND customer_id = $2",
                             parse_id(r->segs[2]), 404);
    long long from, to;
    if (id < 0 || requested_range(r, &from, &to) < 0)
        return;
    err_t e = {0};
    reply_samples(r, metrics_domain_range(r->db, &e, id, metric, from, to), &e, to);
}

static void h_metric(req_t *r)
{
    const char *kind = r->segs[1];
    if (str_starts_with(kind, "container.") && metric_container_known(kind + 10))
        return container_metric(r, kind + 10);
    if (str_starts_with(kind, "domain.") && metric_domain_known(kind + 7))
        return domain_metric(r, kind + 7);
    reply_error(r, 404, "unknown metric: container.<m> with <m> one of io.read io.write "
                        "net.rx net.tx cpu mem mem.rss mem.cache quota, or domain.<m> with "
                        "<m> one of net.rx net.tx hits");
}

const route_t metric_routes[] = {
    {"GET", "metrics/*/*", h_metric, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
