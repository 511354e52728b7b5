/* domains.c - /domains/ and /containers/<uid>/domains (see API.md).
 *
 * A domain belongs to one customer (names are unique across customers);
 * adding one needs the DNS ownership check of dns_check.c.  Which containers
 * served a domain "today" comes from the nodes' 'hits' samples in
 * domain_metrics (UTC day). */
#include "../common/strutil.h"
#include "../common/validate.h"
#include "dns_check.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"
#include "tags.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define DOMAIN_NAME_LEN 256
#define DOMAIN_SELECT "SELECT id, name, uuid, note FROM domains "

enum { D_ID, D_NAME, D_UUID, D_NOTE };

/* The object of one row of DOMAIN_SELECT: the list form, or with the note. */
static json_t *domain_json(db_t *db, err_t *e, db_res_t *res, int row, bool full)
{
    json_t *tags = tags_of(db, e, TAGGED_DOMAIN, db_get_int(res, row, D_ID));
    if (!tags)
        return NULL;
    json_t *o = json_pack("{s:I,s:s,s:s,s:o}", "id", (json_int_t)db_get_int(res, row, D_ID),
                          "name", db_get(res, row, D_NAME), "uuid", db_get(res, row, D_UUID),
                          "tags", tags);
    if (o && full && json_object_set_new(o, "note", json_string(db_get(res, row, D_NOTE))) < 0) {
        json_decref(o);
        o = NULL;
    }
    if (!o)
        err_set(e, ERR_INTERNAL, "out of memory");
    return o;
}

/* Answer with the full object of domain `id`, plus "message" when given. */
static void reply_domain(req_t *r, int status, long long id, const char *message)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, DOMAIN_SELECT "WHERE id = $1", DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    if (res->nrows == 0) {
        db_res_free(res);
        return reply_error(r, 404, NULL);
    }
    json_t *o = domain_json(r->db, &e, res, 0, true);
    db_res_free(res);
    if (!o)
        return reply_internal(r, &e);
    if (message) { /* first, as in every "Created" answer */
        json_t *m = json_pack("{s:s}", "message", message);
        if (!m || json_object_update(m, o) < 0) {
            json_decref(m);
            json_decref(o);
            return reply_internal(r, &(err_t){ERR_INTERNAL, "out of memory"});
        }
        json_decref(o);
        o = m;
    }
    reply(r, status, o);
}

static json_t *domain_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)ctx;
    return domain_json(db, e, res, row, false);
}

static void h_domains_list(req_t *r)
{
    err_t e = {0};
    json_t *out = rows_query_json(r->db, &e, domain_row, NULL,
                                  DOMAIN_SELECT "WHERE customer_id = $1 ORDER BY id",
                                  DB_ARGS(DB_INT(r->me.id)));
    reply_list(r, tags_filter(out, req_arg(r, "tags")), &e);
}

static const field_spec name_fields[] = {{"name", FT_STRING}, {NULL, 0}};

/* The body's "name", checked and normalised into `out`; answers 400
 * itself and returns -1 when it is missing or not a domain name. */
static int body_domain_name(req_t *r, char out[DOMAIN_NAME_LEN])
{
    static const char *const required[] = {"name", NULL};
    if (fields_check(r, name_fields) < 0 || fields_require(r, required) < 0)
        return -1;
    char why[512];
    if (!domain_name_normalize(field_str(r, "name"), out, DOMAIN_NAME_LEN, why, sizeof why)) {
        reply_bad_request(r, "'name': %s", why);
        return -1;
    }
    return 0;
}

/* 409 when `name` already belongs to anyone; 0 when it is free. */
static int check_name_free(req_t *r, const char *name)
{
    err_t e = {0};
    long long owner = db_scalar_int(r->db, &e, 0,
                                    "SELECT customer_id FROM domains WHERE name = $1",
                                    DB_ARGS(DB_TEXT(name)));
    if (owner < 0)
        reply_internal(r, &e);
    else if (owner == r->me.id)
        reply_conflict(r, "the domain '%s' is already yours", name);
    else if (owner > 0)
        reply_conflict(r, "the domain '%s' already belongs to another customer", name);
    return owner == 0 ? 0 : -1;
}

/* The DNS ownership check.  A missing record is the customer's to fix:
 * 403 naming it.  A lookup that failed (timeout, SERVFAIL, resolver down)
 * proves nothing either way, so it answers 503 "try again later" rather
 * than a 403 that would send the customer hunting for a record that may
 * well be right. */
static int check_dns(req_t *r, const char *name)
{
    char want[64], where[DOMAIN_NAME_LEN], why[1024];
    snprintf(want, sizeof want, "uwsgi:%s", r->me.uuid);
    dns_check_cfg_t cfg = {.resolver = r->api->cfg.dns_resolver,
                           .timeout_ms = r->api->cfg.dns_timeout_ms};
    switch (dns_check_txt(&cfg, name, want, where, sizeof where, why, sizeof why)) {
    case DNS_CHECK_FOUND: return 0;
    case DNS_CHECK_MISSING: reply_error(r, 403, why); break;
    case DNS_CHECK_FAILED: reply_error(r, 503, why); break;
    }
    return -1;
}

static void h_domain_create(req_t *r)
{
    char name[DOMAIN_NAME_LEN];
    if (body_domain_name(r, name) < 0 || check_name_free(r, name) < 0 ||
        check_dns(r, name) < 0)
        return;
    char uuid[37];
    uuid_v4(uuid);
    err_t e = {0};
    long long id = db_scalar_int(r->db, &e, 0,
                                 "INSERT INTO domains (customer_id, name, uuid, created) "
                                 "VALUES ($1, $2, $3, $4) RETURNING id",
                                 DB_ARGS(DB_INT(r->me.id), DB_TEXT(name), DB_TEXT(uuid),
                                         DB_INT(time(NULL))));
    if (id <= 0) {
        /* Someone added it while the DNS check ran. */
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "the domain '%s' already belongs to a customer", name);
        return reply_internal(r, &e);
    }
    reply_domain(r, 201, id, "Created");
}

/* The quickstart's `curl -X DELETE -d '{"name": ...}' .../domains/`. */
static void h_domain_delete_by_name(req_t *r)
{
    char name[DOMAIN_NAME_LEN];
    if (body_domain_name(r, name) < 0)
        return;
    err_t e = {0};
    long long n = db_exec(r->db, &e, "DELETE FROM domains WHERE name = $1 AND customer_id = $2",
                          DB_ARGS(DB_TEXT(name), DB_INT(r->me.id)));
    if (n < 0)
        return reply_internal(r, &e);
    if (n == 0)
        return reply_error(r, 404, NULL);
    reply_ok(r);
}

/* The id of the caller's domain named by the path, or -1 after answering
 * 404 (missing and someone else's look alike). */
static long long own_domain(req_t *r)
{
    return req_owned(r, "SELECT id FROM domains WHERE id = $1 AND customer_id = $2",
                     parse_id(r->segs[1]), 404);
}

static void h_domain_get(req_t *r)
{
    long long id = own_domain(r);
    if (id > 0)
        reply_domain(r, 200, id, NULL);
}

/* note and tags in one transaction: a failure changes neither. */
static int domain_update(req_t *r, long long id, err_t *e)
{
    const char *note = field_str(r, "note");
    json_t *tags = field_list(r, "tags");
    if (db_begin(r->db, e) < 0)
        return -1;
    if ((note && db_exec(r->db, e, "UPDATE domains SET note = $1 WHERE id = $2",
                         DB_ARGS(DB_TEXT(note), DB_INT(id))) < 0) ||
        (json_is_array(tags) && tags_set(r->db, e, TAGGED_DOMAIN, id, r->me.id, tags) < 0) ||
        db_commit(r->db, e) < 0) {
        db_rollback(r->db);
        return -1;
    }
    return 0;
}

static void h_domain_post(req_t *r)
{
    static const field_spec spec[] = {{"note", FT_STRING}, {"tags", FT_STRING_LIST},
                                      {NULL, 0}};
    long long id = own_domain(r);
    if (id < 0 || fields_check(r, spec) < 0)
        return;
    err_t e = {0};
    if (domain_update(r, id, &e) < 0)
        return reply_internal(r, &e);
    reply_domain(r, 200, id, NULL);
}

static void h_domain_delete(req_t *r)
{
    long long id = own_domain(r);
    if (id < 0)
        return;
    err_t e = {0};
    /* ON DELETE CASCADE drops its tags and metrics. */
    if (db_exec(r->db, &e, "DELETE FROM domains WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

/* ---- who served what today ---- */

/* [start, end) of the current UTC day in unix seconds. */
static void today_utc(long long *start, long long *end)
{
    long long now = (long long)time(NULL);
    *start = now - now % 86400;
    *end = *start + 86400;
}

static json_t *hit_container_row(db_res_t *res, int row)
{
    long long cid = db_get_int(res, row, 0);
    return json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)cid, "uuid", db_get(res, row, 1),
                     "name", db_get(res, row, 2), "uid", (json_int_t)container_uid(cid));
}

/* Containers of the caller that reported hits for the domain today. */
static void h_domain_containers(req_t *r)
{
    long long id = own_domain(r), start, end;
    if (id < 0)
        return;
    today_utc(&start, &end);
    reply_rows(r, hit_container_row,
               "SELECT DISTINCT c.id, c.uuid, c.name FROM domain_metrics m "
               "JOIN containers c ON c.id = m.container_id "
               "WHERE m.domain_id = $1 AND m.metric = 'hits' AND m.unix >= $2 AND m.unix < $3 "
               "AND c.customer_id = $4 ORDER BY c.id",
               DB_ARGS(DB_INT(id), DB_INT(start), DB_INT(end), DB_INT(r->me.id)));
}

/* The caller's container named by the path (uid), or -1 after answering
 * 403 as every container endpoint does. */
static long long own_container(req_t *r)
{
    return req_own_container(r, r->segs[1]);
}

static json_t *hit_domain_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "uuid",
                     db_get(res, row, 1), "name", db_get(res, row, 2));
}

/* The caller's domains this container reported hits for today. */
static void h_container_domains(req_t *r)
{
    long long cid = own_container(r), start, end;
    if (cid < 0)
        return;
    today_utc(&start, &end);
    reply_rows(r, hit_domain_row,
               "SELECT DISTINCT d.id, d.uuid, d.name FROM domain_metrics m "
               "JOIN domains d ON d.id = m.domain_id "
               "WHERE m.container_id = $1 AND m.metric = 'hits' AND m.unix >= $2 AND m.unix < $3 "
               "AND d.customer_id = $4 ORDER BY d.id",
               DB_ARGS(DB_INT(cid), DB_INT(start), DB_INT(end), DB_INT(r->me.id)));
}

const route_t domain_routes[] = {
    {"GET", "domains", h_domains_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "domains", h_domain_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "domains", h_domain_delete_by_name, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "domains/*", h_domain_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "domains/*", h_domain_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "domains/*", h_domain_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "domains/*/containers", h_domain_containers, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"GET", "containers/*/domains", h_container_domains, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
