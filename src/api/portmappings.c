/* portmappings.c - /portmappings/<server address> (see API.md).
 *
 * Customers owning a whole server forward its public TCP/UDP ports to
 * private ports of their containers there.  Every change bumps
 * servers.portmap_generation in the same transaction: the node compares it
 * with the generation it applied and rewrites its firewall rules. */
#include "../common/validate.h"
#include "fields.h"
#include "portmappings.h"
#include "routes.h"
#include "rows.h"

#include <string.h>

/* The id of the caller's server named by the path, or -1 after answering
 * 403 (missing or someone else's: API.md, "403 for all three"). */
static long long owned_server(req_t *r)
{
    err_t e = {0};
    long long id = db_scalar_int(r->db, &e, 0,
                                 "SELECT id FROM servers WHERE address = $1 AND owner_id = $2",
                                 DB_ARGS(DB_TEXT(r->segs[1]), DB_INT(r->me.id)));
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 403, "you do not own that server");
    return id > 0 ? id : -1;
}

json_t *portmapping_json(db_res_t *res, int row)
{
    long long cid = db_get_int(res, row, 3);
    char ip[32] = "";
    container_ip(cid, ip, sizeof ip);
    return json_pack("{s:I,s:s,s:I,s:I,s:s,s:I}", "id", (json_int_t)db_get_int(res, row, 0),
                     "proto", db_get(res, row, 1), "public_port",
                     (json_int_t)db_get_int(res, row, 2), "container",
                     (json_int_t)container_uid(cid), "container_ip", ip, "private_port",
                     (json_int_t)db_get_int(res, row, 4));
}

static void h_portmappings_list(req_t *r)
{
    long long sid = owned_server(r);
    if (sid < 0)
        return;
    reply_rows(r, portmapping_json, PORTMAPPING_SELECT "WHERE server_id = $1 ORDER BY id",
               DB_ARGS(DB_INT(sid)));
}

/* proto and ports; 400 with the reason. */
static int check_values(req_t *r)
{
    const char *proto = field_str(r, "proto");
    char why[128];
    if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) {
        reply_bad_request(r, "'proto' must be \"tcp\" or \"udp\"");
        return -1;
    }
    if (!portmap_public_port_valid(field_int(r, "public_port"), why, sizeof why) ||
        !portmap_private_port_valid(field_int(r, "private_port"), why, sizeof why)) {
        reply_bad_request(r, "%s", why);
        return -1;
    }
    return 0;
}

/* The container of the mapping: the caller's, on this server.  Anything
 * else answers 403 as the public platform did; like a container of another
 * customer, a container elsewhere is simply not the caller's to map here. */
static long long mapped_container(req_t *r, long long sid)
{
    long long cid = container_id_of_uid(field_int(r, "container"));
    err_t e = {0};
    long long id = cid < 0 ? 0
                           : db_scalar_int(r->db, &e, 0,
                                           "SELECT id FROM containers WHERE id = $1 AND "
                                           "server_id = $2 AND customer_id = $3",
                                           DB_ARGS(DB_INT(cid), DB_INT(sid), DB_INT(r->me.id)));
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 403, "'container' is not one of your containers on this server");
    return id > 0 ? id : -1;
}

static int bump_generation(db_t *db, err_t *e, long long sid)
{
    return db_exec(db, e,
                   "UPDATE servers SET portmap_generation = portmap_generation + 1 "
                   "WHERE id = $1",
                   DB_ARGS(DB_INT(sid))) < 0
               ? -1
               : 0;
}

/* Insert the mapping and bump the generation; ERR_CONFLICT when the public
 * port is taken for that proto. */
static long long insert_mapping(req_t *r, err_t *e, long long sid, long long cid)
{
    const char *proto = field_str(r, "proto");
    long long pub = field_int(r, "public_port");
    long long taken = db_scalar_int(r->db, e, 0,
                                    "SELECT COUNT(*) FROM portmappings WHERE server_id = $1 "
                                    "AND proto = $2 AND public_port = $3",
                                    DB_ARGS(DB_INT(sid), DB_TEXT(proto), DB_INT(pub)));
    if (taken < 0)
        return -1;
    if (taken > 0)
        return err_set(e, ERR_CONFLICT, "public %s port %lld is already mapped on this server",
                       proto, pub);
    db_res_t *res = db_query(r->db, e,
                             "INSERT INTO portmappings (server_id, container_id, proto, "
                             "public_port, private_port) VALUES ($1, $2, $3, $4, $5) "
                             "RETURNING id",
                             DB_ARGS(DB_INT(sid), DB_INT(cid), DB_TEXT(proto), DB_INT(pub),
                                     DB_INT(field_int(r, "private_port"))));
    if (!res)
        return -1;
    long long id = db_get_int(res, 0, 0);
    db_res_free(res);
    return bump_generation(r->db, e, sid) < 0 ? -1 : id;
}

static void h_portmapping_create(req_t *r)
{
    static const field_spec spec[] = {{"container", FT_INT},  {"proto", FT_STRING},
                                      {"public_port", FT_INT}, {"private_port", FT_INT},
                                      {NULL, 0}};
    static const char *const required[] = {"container", "proto", "public_port",
                                           "private_port", NULL};
    long long sid = owned_server(r);
    if (sid < 0 || fields_check(r, spec) < 0 || fields_require(r, required) < 0 ||
        check_values(r) < 0)
        return;
    long long cid = mapped_container(r, sid);
    if (cid < 0)
        return;
    err_t e = {0};
    /* IMMEDIATE transaction: the port check and the insert cannot race. */
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    long long id = insert_mapping(r, &e, sid, cid);
    if (id < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply(r, 201, json_pack("{s:s,s:I}", "message", "Created", "id", (json_int_t)id));
}

static void h_portmapping_delete(req_t *r)
{
    static const field_spec spec[] = {{"id", FT_INT}, {NULL, 0}};
    static const char *const required[] = {"id", NULL};
    long long sid = owned_server(r);
    if (sid < 0 || fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    long long n = db_exec(r->db, &e, "DELETE FROM portmappings WHERE id = $1 AND server_id = $2",
                          DB_ARGS(DB_INT(field_int(r, "id")), DB_INT(sid)));
    if (n == 0)
        err_set(&e, ERR_NOTFOUND, "no such mapping");
    if (n <= 0 || bump_generation(r->db, &e, sid) < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply_ok(r);
}

const route_t portmapping_routes[] = {
    {"GET", "portmappings/*", h_portmappings_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "portmappings/*", h_portmapping_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "portmappings/*", h_portmapping_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
