/* admin_servers.c - /admin/servers and /admin/distros. */
#include "../common/validate.h"
#include "admin.h"
#include "auth.h"
#include "containers.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long long admin_server_id(db_t *db, err_t *e, const char *name_or_address)
{
    return db_scalar_int(db, e, 0, "SELECT id FROM servers WHERE name = $1 OR address = $1",
                         DB_ARGS(DB_TEXT(name_or_address)));
}

char *admin_lines(json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (!json_is_array(v))
        return NULL;
    size_t total = 1, i;
    json_t *it;
    json_array_foreach(v, i, it)
    {
        if (!json_is_string(it)) /* a 400 for the caller, not a NULL to strcat */
            return NULL;
        total += json_string_length(it) + 1;
    }
    char *out = calloc(1, total);
    if (!out)
        return NULL;
    json_array_foreach(v, i, it)
    {
        strcat(out, json_string_value(it));
        strcat(out, "\n");
    }
    return out;
}

static json_t *server_json(db_res_t *res, int i)
{
    return json_pack("{s:I,s:s,s:s,s:I,s:I,s:s,s:o,s:I,s:s,s:s,s:s,s:s,s:I,s:I}", "id",
                     (json_int_t)db_get_int(res, i, 0), "name", db_get(res, i, 1), "address",
                     db_get(res, i, 2), "memory", (json_int_t)db_get_int(res, i, 3), "storage",
                     (json_int_t)db_get_int(res, i, 4), "disk", db_get(res, i, 5), "owner",
                     db_is_null(res, i, 6) ? json_null() : json_string(db_get(res, i, 6)),
                     "weight", (json_int_t)db_get_int(res, i, 7), "datacenter",
                     db_get(res, i, 8), "etc_hosts", db_get(res, i, 9), "etc_resolv_conf",
                     db_get(res, i, 10), "note", db_get(res, i, 11), "used_memory",
                     (json_int_t)db_get_int(res, i, 12), "used_storage",
                     (json_int_t)db_get_int(res, i, 13));
}

#define SERVER_SELECT                                                                      \
    "SELECT s.id, s.name, s.address, s.memory, s.storage, s.disk, c.username, s.weight, "  \
    "s.datacenter, s.etc_hosts, s.etc_resolv_conf, s.note, "                              \
    "(SELECT COALESCE(SUM(memory), 0) FROM containers WHERE server_id = s.id), "         \
    "(SELECT COALESCE(SUM(storage), 0) FROM containers WHERE server_id = s.id) "         \
    "FROM servers s LEFT JOIN customers c ON c.id = s.owner_id "

static void reply_servers(req_t *r, int status, long long id)
{
    if (!id)
        return reply_rows(r, server_json, SERVER_SELECT "ORDER BY s.id", DB_NOARGS);
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, SERVER_SELECT "WHERE s.id = $1", DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    json_t *o = res->nrows == 0 ? NULL : server_json(res, 0);
    bool found = res->nrows > 0;
    db_res_free(res);
    if (!found)
        return reply_error(r, 404, "no such server");
    if (!o)
        return reply_internal(r, &(err_t){ERR_INTERNAL, "out of memory"});
    reply(r, status, o);
}

static void h_admin_servers_list(req_t *r) { reply_servers(r, 200, 0); }

static const field_spec server_spec[] = {
    {"name", FT_STRING},       {"address", FT_STRING}, {"memory", FT_INT},
    {"storage", FT_INT},       {"disk", FT_STRING},    {"owner", FT_STRING},
    {"weight", FT_INT},        {"datacenter", FT_STRING}, {"note", FT_STRING},
    {NULL, 0},
};

/* Checks of the server fields that need no database; 400 on failure. */
static int server_check_values(req_t *r)
{
    const char *addr = field_str(r, "address"), *name = field_str(r, "name");
    struct in_addr a;
    if (addr && inet_pton(AF_INET, addr, &a) != 1)
        return reply_bad_request(r, "'address' must be an IPv4 address"), -1;
    if (name && (!*name || strlen(name) > 64))
        return reply_bad_request(r, "'name' must be 1 to 64 characters"), -1;
    err_t e = {0};
    if (sizes_check(&e, field_has(r, "memory"), field_int(r, "memory"),
                    field_has(r, "storage"), field_int(r, "storage")) < 0)
        return reply_bad_request(r, "%s", e.msg), -1;
    static const char *const lines[] = {"etc_hosts", "etc_resolv_conf"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(r->json, lines[i]);
        char *joined = v ? admin_lines(v) : NULL;
        bool ok = !v || joined;
        size_t k;
        json_t *it;
        if (json_is_array(v))
            json_array_foreach(v, k, it) ok &= json_is_string(it);
        free(joined);
        if (!ok)
            return reply_bad_request(r, "'%s' must be a string or a list of lines", lines[i]),
                   -1;
    }
    return 0;
}

/* Apply the optional server fields of the request to server `id`. */
static int server_apply(req_t *r, long long id, err_t *e)
{
    static const char *const strs[] = {"name", "address", "disk", "datacenter", "note"};
    static const char *const ints[] = {"memory", "storage", "weight"};
    char sql[128];
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *v = field_str(r, strs[i]);
        snprintf(sql, sizeof sql, "UPDATE servers SET %s = $1 WHERE id = $2", strs[i]);
        if (v && db_exec(r->db, e, sql, DB_ARGS(DB_TEXT(v), DB_INT(id))) < 0)
            return -1;
    }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (!field_has(r, ints[i]))
            continue;
        snprintf(sql, sizeof sql, "UPDATE servers SET %s = $1 WHERE id = $2", ints[i]);
        if (db_exec(r->db, e, sql, DB_ARGS(DB_INT(field_int(r, ints[i])), DB_INT(id))) < 0)
            return -1;
    }
    static const char *const lines[] = {"etc_hosts", "etc_resolv_conf"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(r->json, lines[i]);
        if (!v)
            continue;
        char *joined = admin_lines(v);
        snprintf(sql, sizeof sql, "UPDATE servers SET %s = $1 WHERE id = $2", lines[i]);
        long long rc = joined ? db_exec(r->db, e, sql, DB_ARGS(DB_TEXT(joined), DB_INT(id)))
                              : err_set(e, ERR_INTERNAL, "out of memory");
        free(joined);
        if (rc < 0)
            return -1;
    }
    if (field_has(r, "owner")) {
        const char *owner = field_str(r, "owner");
        long long oid = 0;
        if (owner && *owner) {
            oid = admin_customer_id(r->db, e, owner);
            if (oid < 0)
                return -1;
            if (oid == 0)
                return err_set(e, ERR_INPUT, "'owner': no customer '%s'", owner);
        }
        if (db_exec(r->db, e, "UPDATE servers SET owner_id = $1 WHERE id = $2",
                    DB_ARGS(oid ? DB_INT(oid) : DB_NULL, DB_INT(id))) < 0)
            return -1;
    }
    /* Shrinking a server below what its containers use would oversell it. */
    if (server_check_capacity(r->db, e, id, 0, 0, 0) < 0)
        return e->kind != ERR_CONFLICT
                   ? -1
                   : err_set(e, ERR_CONFLICT,
                             "the server's containers need more memory or storage");
    return 0;
}

static void server_write(req_t *r, long long id)
{
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    db_res_t *res = NULL;
    bool created = !id;
    char secret[65], hash[65];
    if (created) {
        node_secret_new(secret, hash);
        res = db_query(r->db, &e,
                       "INSERT INTO servers (name, address, memory, storage, node_secret_hash) "
                       "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                       DB_ARGS(DB_TEXT(field_str(r, "name")), DB_TEXT(field_str(r, "address")),
                               DB_INT(field_int(r, "memory")), DB_INT(field_int(r, "storage")),
                               DB_TEXT(hash)));
        if (res)
            id = db_get_int(res, 0, 0);
        db_res_free(res);
        if (!res)
            goto fail;
    }
    if (server_apply(r, id, &e) < 0 || db_commit(r->db, &e) < 0)
        goto fail;
    reply_servers(r, created ? 201 : 200, id);
    /* Shown once: only its hash is stored.  The node connects with it. */
    if (created && r->status == 201)
        json_object_set_new(r->out, "node_secret", json_string(secret));
    return;
fail:
    db_rollback(r->db);
    if (e.kind == ERR_CONSTRAINT)
        return reply_conflict(r, "a server with that name or address already exists");
    reply_err(r, &e);
}

static void h_admin_server_create(req_t *r)
{
    static const char *const required[] = {"name", "address", "memory", "storage", NULL};
    if (fields_check(r, server_spec) < 0 || fields_require(r, required) < 0 ||
        server_check_values(r) < 0)
        return;
    server_write(r, 0);
}

static long long path_server(req_t *r)
{
    err_t e = {0};
    long long id = admin_server_id(r->db, &e, r->segs[1]);
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 404, "no such server");
    return id > 0 ? id : -1;
}

static void h_admin_server_get(req_t *r)
{
    long long id = path_server(r);
    if (id > 0)
        reply_servers(r, 200, id);
}

static void h_admin_server_modify(req_t *r)
{
    long long id = path_server(r);
    if (id < 0 || fields_check(r, server_spec) < 0 || server_check_values(r) < 0)
        return;
    server_write(r, id);
}

/* POST /admin/servers/<name>/secret: a new node secret, the old one stops
 * working at once. */
static void h_admin_server_secret(req_t *r)
{
    long long id = path_server(r);
    if (id < 0)
        return;
    char secret[65], hash[65];
    node_secret_new(secret, hash);
    err_t e = {0};
    if (db_exec(r->db, &e, "UPDATE servers SET node_secret_hash = $1 WHERE id = $2",
                DB_ARGS(DB_TEXT(hash), DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply(r, 200, json_pack("{s:s,s:s}", "message", "Ok", "node_secret", secret));
}

/* POST /admin/servers/<name>/purge_deleted {"older_than": SECONDS}: the
 * server's node may remove the homes of containers deleted at least SECONDS
 * ago (default 0: all deleted until now), which it keeps out of reach in
 * <containers_dir>/.deleted/<uid>-<unix time>.  The node learns the time
 * from its state (server.purge_deleted_before). */
static void h_admin_server_purge(req_t *r)
{
    static const field_spec spec[] = {{"older_than", FT_INT}, {NULL, 0}};
    long long id = path_server(r);
    if (id < 0 || (r->body_len > 0 && fields_check(r, spec) < 0))
        return;
    long long older = r->json ? field_int(r, "older_than") : 0;
    if (older < 0)
        return reply_bad_request(r, "'older_than' must be 0 or more seconds");
    long long now = (long long)time(NULL);
    long long before = older < now ? now - older : 0; /* 0: nothing */
    err_t e = {0};
    if (db_exec(r->db, &e, "UPDATE servers SET purge_deleted_before = $1 WHERE id = $2",
                DB_ARGS(DB_INT(before), DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply(r, 200, json_pack("{s:s,s:I}", "message", "Ok", "purge_deleted_before",
                            (json_int_t)before));
}

static void h_admin_server_delete(req_t *r)
{
    long long id = path_server(r);
    if (id < 0)
        return;
    err_t e = {0};
    long long n = db_scalar_int(r->db, &e, 0,
                                "SELECT COUNT(*) FROM containers WHERE server_id = $1",
                                DB_ARGS(DB_INT(id)));
    if (n < 0)
        return reply_internal(r, &e);
    if (n > 0)
        return reply_conflict(r, "the server still has %lld container(s)", n);
    if (db_exec(r->db, &e, "DELETE FROM servers WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_err(r, &e);
    reply_ok(r);
}

/* ---- distros ---- */

static const field_spec distro_spec[] = {{"name", FT_STRING}, {"path", FT_STRING}, {NULL, 0}};

static json_t *distro_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1), "path", db_get(res, row, 2));
}

static json_t *distros_json(db_t *db, err_t *e, long long id)
{
    return rows_json(db, e, distro_row,
                     "SELECT id, name, path FROM distros WHERE $1 = 0 OR id = $1 ORDER BY id",
                     DB_ARGS(DB_INT(id)));
}

static void h_admin_distros_list(req_t *r)
{
    err_t e = {0};
    reply_list(r, distros_json(r->db, &e, 0), &e);
}

static int distro_check(req_t *r)
{
    const char *name = field_str(r, "name"), *path = field_str(r, "path");
    if (name && !*name)
        return reply_bad_request(r, "'name' must not be empty"), -1;
    if (path && path[0] != '/')
        return reply_bad_request(r, "'path' must be an absolute directory path"), -1;
    return 0;
}

static void reply_distro(req_t *r, int status, long long id)
{
    err_t e = {0};
    json_t *list = distros_json(r->db, &e, id);
    if (!list)
        return reply_internal(r, &e);
    reply(r, status, json_incref(json_array_get(list, 0)));
    json_decref(list);
}

static void h_admin_distro_create(req_t *r)
{
    static const char *const required[] = {"name", "path", NULL};
    if (fields_check(r, distro_spec) < 0 || fields_require(r, required) < 0 ||
        distro_check(r) < 0)
        return;
    err_t e = {0};
    long long id = db_scalar_int(r->db, &e, 0,
                                 "INSERT INTO distros (name, path) VALUES ($1, $2) RETURNING id",
                                 DB_ARGS(DB_TEXT(field_str(r, "name")),
                                         DB_TEXT(field_str(r, "path"))));
    if (id <= 0)
        return reply_internal(r, &e);
    reply_distro(r, 201, id);
}

static long long path_distro(req_t *r)
{
    long long id = parse_id(r->segs[1]);
    err_t e = {0};
    long long found = id < 0 ? 0
                             : db_scalar_int(r->db, &e, 0, "SELECT id FROM distros WHERE id = $1",
                                             DB_ARGS(DB_INT(id)));
    if (found < 0)
        reply_internal(r, &e);
    else if (found == 0)
        reply_error(r, 404, "no such distro");
    return found > 0 ? found : -1;
}

static void h_admin_distro_modify(req_t *r)
{
    long long id = path_distro(r);
    if (id < 0 || fields_check(r, distro_spec) < 0 || distro_check(r) < 0)
        return;
    err_t e = {0};
    const char *name = field_str(r, "name"), *path = field_str(r, "path");
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if ((name && db_exec(r->db, &e, "UPDATE distros SET name = $1 WHERE id = $2",
                         DB_ARGS(DB_TEXT(name), DB_INT(id))) < 0) ||
        (path && db_exec(r->db, &e, "UPDATE distros SET path = $1 WHERE id = $2",
                         DB_ARGS(DB_TEXT(path), DB_INT(id))) < 0) ||
        /* Containers booting this distro must restart onto the new root. */
        (path && container_touch(r->db, &e, TOUCH_DISTRO, id) < 0) ||
        db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_internal(r, &e);
    }
    reply_distro(r, 200, id);
}

static void h_admin_distro_delete(req_t *r)
{
    long long id = path_distro(r);
    if (id < 0)
        return;
    err_t e = {0};
    long long n = db_scalar_int(r->db, &e, 0,
                                "SELECT COUNT(*) FROM containers WHERE distro_id = $1",
                                DB_ARGS(DB_INT(id)));
    if (n < 0)
        return reply_internal(r, &e);
    if (n > 0)
        return reply_conflict(r, "%lld container(s) use this distro", n);
    if (db_exec(r->db, &e, "DELETE FROM distros WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

const route_t admin_server_routes[] = {
    {"GET", "servers", h_admin_servers_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "servers", h_admin_server_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "servers/*", h_admin_server_get, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "servers/*", h_admin_server_modify, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "servers/*", h_admin_server_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"POST", "servers/*/secret", h_admin_server_secret, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"POST", "servers/*/purge_deleted", h_admin_server_purge, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "distros", h_admin_distros_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "distros", h_admin_distro_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"POST", "distros/*", h_admin_distro_modify, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "distros/*", h_admin_distro_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
