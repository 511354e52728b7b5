/* admin_other.c - /admin/domains, /admin/legions, /admin/news. */
#include "../common/strutil.h"
#include "../common/validate.h"
#include "admin.h"
#include "container_model.h"
#include "fields.h"
#include "legions.h"
#include "routes.h"
#include "rows.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

/* ---- domains: mapped to a customer without the DNS check ---- */

static json_t *domain_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1), "uuid", db_get(res, row, 2), "customer",
                     db_get(res, row, 3));
}

static void h_admin_domains_list(req_t *r)
{
    reply_rows(r, domain_row,
               "SELECT d.id, d.name, d.uuid, c.username FROM domains d "
               "JOIN customers c ON c.id = d.customer_id ORDER BY d.name",
               DB_NOARGS);
}

static void h_admin_domain_create(req_t *r)
{
    static const field_spec spec[] = {{"name", FT_STRING}, {"customer", FT_STRING}, {NULL, 0}};
    static const char *const required[] = {"name", "customer", NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    char name[256], why[256];
    if (!domain_name_normalize(field_str(r, "name"), name, sizeof name, why, sizeof why))
        return reply_bad_request(r, "%s", why);
    err_t e = {0};
    long long cid = admin_customer_id(r->db, &e, field_str(r, "customer"));
    if (cid < 0)
        return reply_internal(r, &e);
    if (cid == 0)
        return reply_bad_request(r, "'customer': no customer '%s'", field_str(r, "customer"));
    char uuid[37];
    uuid_v4(uuid);
    long long id = db_scalar_int(r->db, &e, 0,
                                 "INSERT INTO domains (customer_id, name, uuid, created) "
                                 "VALUES ($1, $2, $3, $4) RETURNING id",
                                 DB_ARGS(DB_INT(cid), DB_TEXT(name), DB_TEXT(uuid),
                                         DB_INT(time(NULL))));
    if (id <= 0) {
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "the domain '%s' already belongs to a customer", name);
        return reply_internal(r, &e);
    }
    reply(r, 201, json_pack("{s:s,s:I,s:s,s:s}", "message", "Created", "id", (json_int_t)id,
                            "name", name, "uuid", uuid));
}

static void h_admin_domain_delete(req_t *r)
{
    err_t e = {0};
    long long n = db_exec(r->db, &e, "DELETE FROM domains WHERE name = $1",
                          DB_ARGS(DB_TEXT(r->segs[1])));
    if (n < 0)
        return reply_internal(r, &e);
    if (n == 0)
        return reply_error(r, 404, "no such domain");
    reply_ok(r);
}

/* ---- legions ---- */

static void h_admin_legions_list(req_t *r)
{
    err_t e = {0};
    reply_list(r, legions_admin_json(r->db, &e), &e);
}

static const field_spec legion_spec[] = {
    {"name", FT_STRING}, {"address", FT_STRING}, {"key", FT_STRING},
    {"quorum", FT_INT},  {"nodes", FT_STRING_LIST}, {"note", FT_STRING},
    {NULL, 0},
};

/* Containers show their server's legion_address: they need a restart to
 * pick up a new Lord address, or to drop it. */
static int legion_restart(db_t *db, err_t *e, long long id)
{
    return container_touch(db, e, TOUCH_LEGION, id);
}

static int legion_apply(req_t *r, long long id, err_t *e)
{
    static const char *const strs[] = {"name", "address", "key", "note"};
    char sql[96];
    for (int i = 0; i < 4; i++) {
        const char *v = field_str(r, strs[i]);
        snprintf(sql, sizeof sql, "UPDATE legions SET %s = $1 WHERE id = $2", strs[i]);
        if (v && db_exec(r->db, e, sql, DB_ARGS(DB_TEXT(v), DB_INT(id))) < 0)
            return -1;
    }
    if (field_has(r, "quorum") &&
        db_exec(r->db, e, "UPDATE legions SET quorum = $1 WHERE id = $2",
                DB_ARGS(DB_INT(field_int(r, "quorum")), DB_INT(id))) < 0)
        return -1;
    json_t *nodes = field_list(r, "nodes");
    if (!nodes) /* the containers show the address, not the key or note */
        return field_has(r, "address") ? legion_restart(r->db, e, id) : 0;
    /* Containers of servers leaving the legion lose its address: restart them too. */
    if (legion_restart(r->db, e, id) < 0 ||
        db_exec(r->db, e, "DELETE FROM legion_nodes WHERE legion_id = $1",
                DB_ARGS(DB_INT(id))) < 0)
        return -1;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        long long sid = admin_server_id(r->db, e, json_string_value(n));
        if (sid < 0)
            return -1;
        if (sid == 0)
            return err_set(e, ERR_INPUT, "'nodes': no server '%s'", json_string_value(n));
        if (db_exec(r->db, e,
                    "INSERT INTO legion_nodes (legion_id, server_id) VALUES ($1, $2) "
                    "ON CONFLICT DO NOTHING",
                    DB_ARGS(DB_INT(id), DB_INT(sid))) < 0)
            return -1;
    }
    return legion_restart(r->db, e, id);
}

static int legion_check(req_t *r)
{
    struct in_addr a;
    const char *addr = field_str(r, "address"), *name = field_str(r, "name");
    if (addr && inet_pton(AF_INET, addr, &a) != 1)
        return reply_bad_request(r, "'address' must be an IPv4 address"), -1;
    if (name && !*name)
        return reply_bad_request(r, "'name' must not be empty"), -1;
    if (field_has(r, "quorum") && field_int(r, "quorum") < 1)
        return reply_bad_request(r, "'quorum' must be at least 1"), -1;
    return 0;
}

static void legion_write(req_t *r, long long id)
{
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (!id) {
        /* Without a key of the supplier's, a random one: the members seal
         * what they send each other with it (an empty key is never joined,
         * and a short one can be guessed offline from a captured packet). */
        unsigned char raw[32];
        char hex[2 * sizeof raw + 1];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        id = db_scalar_int(r->db, &e, 0,
                           "INSERT INTO legions (name, address, key) VALUES ($1, $2, $3) "
                           "RETURNING id",
                           DB_ARGS(DB_TEXT(field_str(r, "name")),
                                   DB_TEXT(field_str(r, "address")), DB_TEXT(hex)));
        sodium_memzero(raw, sizeof raw);
        if (id <= 0)
            goto fail;
    }
    if (legion_apply(r, id, &e) < 0 || db_commit(r->db, &e) < 0)
        goto fail;
    json_t *all = legions_admin_json(r->db, &e);
    if (!all)
        return reply_internal(r, &e);
    size_t i;
    json_t *l;
    json_array_foreach(all, i, l) if (json_integer_value(json_object_get(l, "id")) == id)
        reply(r, r->nsegs == 1 ? 201 : 200, json_incref(l));
    json_decref(all);
    return;
fail:
    db_rollback(r->db);
    if (e.kind == ERR_CONSTRAINT)
        return reply_conflict(r, "a legion with that name already exists");
    reply_err(r, &e);
}

static void h_admin_legion_create(req_t *r)
{
    static const char *const required[] = {"name", "address", NULL};
    if (fields_check(r, legion_spec) < 0 || fields_require(r, required) < 0 ||
        legion_check(r) < 0)
        return;
    legion_write(r, 0);
}

static long long path_legion(req_t *r)
{
    err_t e = {0};
    long long id = db_scalar_int(r->db, &e, 0, "SELECT id FROM legions WHERE name = $1",
                                 DB_ARGS(DB_TEXT(r->segs[1])));
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 404, "no such legion");
    return id > 0 ? id : -1;
}

static void h_admin_legion_modify(req_t *r)
{
    long long id = path_legion(r);
    if (id < 0 || fields_check(r, legion_spec) < 0 || legion_check(r) < 0)
        return;
    legion_write(r, id);
}

static void h_admin_legion_delete(req_t *r)
{
    long long id = path_legion(r);
    if (id < 0)
        return;
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (legion_restart(r->db, &e, id) < 0 ||
        db_exec(r->db, &e, "DELETE FROM legions WHERE id = $1", DB_ARGS(DB_INT(id))) < 0 ||
        db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_internal(r, &e);
    }
    reply_ok(r);
}

/* ---- news ---- */

static json_t *news_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:I,s:b}", "id", (json_int_t)db_get_int(res, row, 0), "content",
                     db_get(res, row, 1), "date", (json_int_t)db_get_int(res, row, 2), "public",
                     (int)db_get_int(res, row, 3));
}

static void h_admin_news_list(req_t *r)
{
    reply_rows(r, news_row,
               "SELECT id, content, date, public FROM news ORDER BY date DESC, id DESC",
               DB_NOARGS);
}

static void h_admin_news_create(req_t *r)
{
    static const field_spec spec[] = {{"content", FT_STRING}, {"public", FT_BOOL}, {NULL, 0}};
    static const char *const required[] = {"content", NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    if (!*field_str(r, "content"))
        return reply_bad_request(r, "'content' must not be empty");
    err_t e = {0};
    long long id = db_scalar_int(r->db, &e, 0,
                                 "INSERT INTO news (content, public, date) VALUES ($1, $2, $3) "
                                 "RETURNING id",
                                 DB_ARGS(DB_TEXT(field_str(r, "content")),
                                         DB_INT(field_bool(r, "public")), DB_INT(time(NULL))));
    if (id <= 0)
        return reply_internal(r, &e);
    reply(r, 201, json_pack("{s:s,s:I}", "message", "Created", "id", (json_int_t)id));
}

static void h_admin_news_delete(req_t *r)
{
    long long id = parse_id(r->segs[1]);
    err_t e = {0};
    long long n = id < 0 ? 0
                         : db_exec(r->db, &e, "DELETE FROM news WHERE id = $1",
                                   DB_ARGS(DB_INT(id)));
    if (n < 0)
        return reply_internal(r, &e);
    if (n == 0)
        return reply_error(r, 404, "no such news");
    reply_ok(r);
}

const route_t admin_other_routes[] = {
    {"GET", "domains", h_admin_domains_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "domains", h_admin_domain_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "domains/*", h_admin_domain_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "legions", h_admin_legions_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "legions", h_admin_legion_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"POST", "legions/*", h_admin_legion_modify, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "legions/*", h_admin_legion_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "news", h_admin_news_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "news", h_admin_news_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "news/*", h_admin_news_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
