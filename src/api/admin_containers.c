/* admin_containers.c - /admin/containers: any customer's, on any server. */
#include "../common/validate.h"
#include "admin.h"
#include "containers.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <string.h>

/* The admin view adds what only the supplier sees. */
static json_t *admin_container_json(db_t *db, err_t *e, long long id)
{
    json_t *o = container_json(db, e, id, true);
    if (!o)
        return NULL;
    db_res_t *res = db_query(db, e,
                             "SELECT cu.username, c.max_alarms, c.generation, c.ssh_generation "
                             "FROM containers c JOIN customers cu ON cu.id = c.customer_id "
                             "WHERE c.id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "customer", json_string(db_get(res, 0, 0)));
    json_object_set_new(o, "max_alarms", json_integer(db_get_int(res, 0, 1)));
    json_object_set_new(o, "generation", json_integer(db_get_int(res, 0, 2)));
    json_object_set_new(o, "ssh_generation", json_integer(db_get_int(res, 0, 3)));
    db_res_free(res);
    return o;
}

static json_t *admin_container_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)ctx;
    return admin_container_json(db, e, db_get_int(res, row, 0));
}

static void h_admin_containers_list(req_t *r)
{
    err_t e = {0};
    const char *customer = req_arg(r, "customer"), *server = req_arg(r, "server");
    /* CAST: a bare `$1 IS NULL` leaves PostgreSQL without the parameter's type. */
    json_t *out = rows_query_json(
        r->db, &e, admin_container_row, NULL,
        "SELECT c.id FROM containers c JOIN customers cu ON cu.id = c.customer_id "
        "JOIN servers s ON s.id = c.server_id WHERE (CAST($1 AS TEXT) IS NULL OR "
        "cu.username = $1) AND (CAST($2 AS TEXT) IS NULL OR s.name = $2 OR s.address = $2) "
        "ORDER BY c.id",
        DB_ARGS(DB_TEXT(customer), DB_TEXT(server)));
    reply_list(r, out, &e);
}

static void reply_admin_container(req_t *r, int status, long long id)
{
    err_t e = {0};
    json_t *o = admin_container_json(r->db, &e, id);
    if (!o)
        return reply_err(r, &e);
    reply(r, status, o);
}

static void h_admin_container_create(req_t *r)
{
    static const field_spec spec[] = {{"customer", FT_STRING}, {"server", FT_STRING},
                                      {"name", FT_STRING},     {"memory", FT_INT},
                                      {"storage", FT_INT},     {NULL, 0}};
    static const char *const required[] = {"customer", "server", "name", "memory", "storage",
                                           NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    err_t e = {0};
    long long cid = admin_customer_id(r->db, &e, field_str(r, "customer"));
    long long sid = cid > 0 ? admin_server_id(r->db, &e, field_str(r, "server")) : 0;
    if (cid < 0 || sid < 0)
        return reply_internal(r, &e);
    if (cid == 0)
        return reply_bad_request(r, "'customer': no customer '%s'", field_str(r, "customer"));
    if (sid == 0)
        return reply_bad_request(r, "'server': no server '%s'", field_str(r, "server"));
    long long id;
    if (container_create(r->db, &e, cid, sid, field_str(r, "name"), field_int(r, "memory"),
                         field_int(r, "storage"), &id) < 0)
        return reply_err(r, &e);
    reply_admin_container(r, 201, id);
}

static long long path_container(req_t *r)
{
    long long id = container_id_from_uid(r->segs[1]);
    err_t e = {0};
    long long found = id < 0 ? 0
                             : db_scalar_int(r->db, &e, 0,
                                             "SELECT id FROM containers WHERE id = $1",
                                             DB_ARGS(DB_INT(id)));
    if (found < 0)
        reply_internal(r, &e);
    else if (found == 0)
        reply_error(r, 404, "no such container");
    return found > 0 ? found : -1;
}

static void h_admin_container_get(req_t *r)
{
    long long id = path_container(r);
    if (id > 0)
        reply_admin_container(r, 200, id);
}

static void h_admin_container_modify(req_t *r)
{
    static const field_spec spec[] = {{"max_alarms", FT_INT}, {"memory", FT_INT},
                                      {"storage", FT_INT},    {"name", FT_STRING},
                                      {NULL, 0}};
    long long id = path_container(r);
    if (id < 0 || fields_check(r, spec) < 0)
        return;
    err_t e = {0};
    if (field_has(r, "max_alarms") && field_int(r, "max_alarms") < 1)
        return reply_bad_request(r, "'max_alarms' must be at least 1");
    if (field_str(r, "name") && container_name_check(field_str(r, "name"), &e) < 0)
        return reply_err(r, &e);
    if (sizes_check(&e, field_has(r, "memory"), field_int(r, "memory"),
                    field_has(r, "storage"), field_int(r, "storage")) < 0)
        return reply_err(r, &e);
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    /* Restart only on a real change, as the customer's POST. */
    container_snap_t *before = container_snap(r->db, &e, id);
    db_res_t *cur = before ? db_query(r->db, &e,
                                      "SELECT memory, storage, server_id FROM containers "
                                      "WHERE id = $1",
                                      DB_ARGS(DB_INT(id)))
                           : NULL;
    if (!cur) {
        container_snap_free(before);
        goto fail;
    }
    long long mem = field_has(r, "memory") ? field_int(r, "memory") : db_get_int(cur, 0, 0);
    long long sto = field_has(r, "storage") ? field_int(r, "storage") : db_get_int(cur, 0, 1);
    long long sid = db_get_int(cur, 0, 2), had = db_get_int(cur, 0, 1);
    db_res_free(cur);
    bool failed =
        storage_check_usage(r->db, &e, id, had, sto) < 0 ||
        server_check_capacity(r->db, &e, sid, id, mem, sto) < 0 ||
        db_exec(r->db, &e, "UPDATE containers SET memory = $1, storage = $2 WHERE id = $3",
                DB_ARGS(DB_INT(mem), DB_INT(sto), DB_INT(id))) < 0 ||
        (field_str(r, "name") &&
         db_exec(r->db, &e, "UPDATE containers SET name = $1 WHERE id = $2",
                 DB_ARGS(DB_TEXT(field_str(r, "name")), DB_INT(id))) < 0) ||
        (field_has(r, "max_alarms") &&
         db_exec(r->db, &e, "UPDATE containers SET max_alarms = $1 WHERE id = $2",
                 DB_ARGS(DB_INT(field_int(r, "max_alarms")), DB_INT(id))) < 0) ||
        container_touch_changed(r->db, &e, before, false) < 0;
    container_snap_free(before);
    if (failed || db_commit(r->db, &e) < 0)
        goto fail;
    reply_admin_container(r, 200, id);
    return;
fail:
    db_rollback(r->db);
    reply_err(r, &e);
}

static void h_admin_container_delete(req_t *r)
{
    long long id = path_container(r);
    if (id < 0)
        return;
    err_t e = {0};
    /* Links, tags and the custom distros it holds go with it (ON DELETE
     * CASCADE), and the containers booting those lose them in the same
     * transaction; the node moves the home out of reach for the supplier
     * to purge (imperium admin server purge-deleted). */
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (cdistros_unset(r->db, &e, 0, id) < 0 ||
        db_exec(r->db, &e, "DELETE FROM containers WHERE id = $1", DB_ARGS(DB_INT(id))) < 0 ||
        db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply_ok(r);
}

const route_t admin_container_routes[] = {
    {"GET", "containers", h_admin_containers_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "containers", h_admin_container_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "containers/*", h_admin_container_get, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "containers/*", h_admin_container_modify, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "containers/*", h_admin_container_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
