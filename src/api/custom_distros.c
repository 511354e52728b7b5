/* custom_distros.c - /custom_distros/ and /custom_distro/ (see API.md).
 *
 * A container with custom_distros_storage keeps distro trees in its
 * distros/<path>; other containers of the same customer on the same server
 * may boot from them (POST /containers/<uid> {"custom_distro": id}, checked
 * in containers.c with the same rule as the list below).
 *
 * Someone else's or a missing custom distro answers 403, as the public
 * platform did (API.md is silent; its other per-object endpoints of this
 * kind - loopboxes, alarms - answer 403 too). */
#include "../common/strutil.h"
#include "../common/validate.h"
#include "containers.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <stdio.h>
#include <string.h>


static const field_spec cdistro_fields[] = {
    {"name", FT_STRING}, {"path", FT_STRING}, {"note", FT_STRING}, {NULL, 0}};

/* The caller's container `uid_seg` (0 when not the caller's, -1 on failure),
 * and whether it is a storage container. */
static long long own_container(req_t *r, err_t *e, const char *uid_seg, bool *storage)
{
    long long id = container_id_from_uid(uid_seg);
    *storage = false;
    if (id < 0)
        return 0;
    db_res_t *res = db_query(r->db, e,
                             "SELECT id, custom_distros_storage FROM containers "
                             "WHERE id = $1 AND customer_id = $2",
                             DB_ARGS(DB_INT(id), DB_INT(r->me.id)));
    if (!res)
        return -1;
    long long found = res->nrows == 1 ? db_get_int(res, 0, 0) : 0;
    *storage = found && db_get_int(res, 0, 1) != 0;
    db_res_free(res);
    return found;
}

static json_t *cdistro_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1));
}

/* The same with the uid of the storage container holding it. */
static json_t *cdistro_held_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:I}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1), "container",
                     (json_int_t)container_uid(db_get_int(res, row, 2)));
}

static void h_cdistros_all(req_t *r)
{
    reply_rows(r, cdistro_held_row,
               "SELECT cd.id, cd.name, cd.container_id FROM custom_distros cd "
               "JOIN containers c ON c.id = cd.container_id "
               "WHERE c.customer_id = $1 ORDER BY cd.id",
               DB_ARGS(DB_INT(r->me.id)));
}

static void h_cdistros_usable(req_t *r)
{
    err_t e = {0};
    bool storage;
    long long id = own_container(r, &e, r->segs[1], &storage);
    if (id < 0)
        return reply_internal(r, &e);
    if (id == 0)
        return reply_error(r, 403, NULL);
    /* The same rule containers.c applies to {"custom_distro": id}. */
    reply_rows(r, cdistro_row,
               "SELECT cd.id, cd.name FROM custom_distros cd "
               "JOIN containers s ON s.id = cd.container_id "
               "WHERE s.customer_id = $1 AND s.id != $2 AND "
               "s.custom_distros_storage = 1 AND s.server_id = "
               "(SELECT server_id FROM containers WHERE id = $2) "
               "ORDER BY cd.id",
               DB_ARGS(DB_INT(r->me.id), DB_INT(id)));
}

/* name and path of the body, when present; 400 with the reason. */
static int check_values(req_t *r)
{
    const char *name = field_str(r, "name"), *path = field_str(r, "path");
    char why[128];
    if (name && (!*name || str_chars(name) > FIELD_TEXT_MAX)) {
        reply_bad_request(r, "'name' must be 1 to %d characters", FIELD_TEXT_MAX);
        return -1;
    }
    if (path && !custom_distro_path_valid(path, why, sizeof why)) {
        reply_bad_request(r, "%s", why);
        return -1;
    }
    return 0;
}

/* ERR_CONFLICT when another custom distro of storage container `cid`
 * (other than `self`) has this name or path: the node keeps one tree per
 * path, and a name must tell them apart. */
static int check_unique(req_t *r, err_t *e, long long cid, long long self)
{
    static const char *const cols[] = {"name", "path"};
    static const char *const sql[] = {
        "SELECT COUNT(*) FROM custom_distros WHERE container_id = $1 AND id != $2 AND "
        "name = $3",
        "SELECT COUNT(*) FROM custom_distros WHERE container_id = $1 AND id != $2 AND "
        "path = $3",
    };
    for (int i = 0; i < 2; i++) {
        const char *v = field_str(r, cols[i]);
        long long n = !v ? 0
                         : db_scalar_int(r->db, e, 0, sql[i],
                                         DB_ARGS(DB_INT(cid), DB_INT(self), DB_TEXT(v)));
        if (n < 0)
            return -1;
        if (n > 0)
            return err_set(e, ERR_CONFLICT, "container %lld already has a custom distro with "
                                            "%s '%s'",
                           container_uid(cid), cols[i], v);
    }
    return 0;
}

static long long insert_cdistro(req_t *r, err_t *e, long long cid)
{
    char uuid[37];
    uuid_v4(uuid);
    const char *note = field_str(r, "note");
    if (check_unique(r, e, cid, 0) < 0)
        return -1;
    db_res_t *res = db_query(r->db, e,
                             "INSERT INTO custom_distros (container_id, name, path, note, uuid) "
                             "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                             DB_ARGS(DB_INT(cid), DB_TEXT(field_str(r, "name")),
                                     DB_TEXT(field_str(r, "path")), DB_TEXT(note ? note : ""),
                                     DB_TEXT(uuid)));
    if (!res)
        return -1;
    long long id = db_get_int(res, 0, 0);
    db_res_free(res);
    return id;
}

static void h_cdistro_create(req_t *r)
{
    static const char *const required[] = {"name", "path", NULL};
    err_t e = {0};
    bool storage;
    long long cid = own_container(r, &e, r->segs[1], &storage);
    if (cid < 0)
        return reply_internal(r, &e);
    if (cid == 0 || !storage)
        return reply_error(r, 403, cid ? "that container is not a custom distros storage "
                                         "(set custom_distros_storage first)"
                                       : NULL);
    if (fields_check(r, cdistro_fields) < 0 || fields_require(r, required) < 0 ||
        check_values(r) < 0)
        return;
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    long long id = insert_cdistro(r, &e, cid);
    if (id < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply(r, 201, json_pack("{s:s,s:I}", "message", "Created", "id", (json_int_t)id));
}

/* The caller's custom distro named by the path: its id, or -1 after
 * answering 403.  *cid receives its storage container. */
static long long own_cdistro(req_t *r, long long *cid)
{
    long long id = parse_id(r->segs[1]);
    err_t e = {0};
    db_res_t *res = id < 0 ? NULL
                           : db_query(r->db, &e,
                                      "SELECT cd.id, cd.container_id FROM custom_distros cd "
                                      "JOIN containers c ON c.id = cd.container_id "
                                      "WHERE cd.id = $1 AND c.customer_id = $2",
                                      DB_ARGS(DB_INT(id), DB_INT(r->me.id)));
    if (id >= 0 && !res) {
        reply_internal(r, &e);
        return -1;
    }
    long long found = res && res->nrows == 1 ? db_get_int(res, 0, 0) : 0;
    *cid = found ? db_get_int(res, 0, 1) : 0;
    db_res_free(res);
    if (!found)
        reply_error(r, 403, NULL);
    return found ? found : -1;
}

static void reply_cdistro(req_t *r, long long id)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e,
                             "SELECT id, container_id, name, path, note, uuid "
                             "FROM custom_distros WHERE id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    json_t *o = res->nrows != 1
                    ? NULL
                    : json_pack("{s:I,s:I,s:s,s:s,s:s,s:s}", "id",
                                (json_int_t)db_get_int(res, 0, 0), "container",
                                (json_int_t)container_uid(db_get_int(res, 0, 1)), "name",
                                db_get(res, 0, 2), "path", db_get(res, 0, 3), "note",
                                db_get(res, 0, 4), "uuid", db_get(res, 0, 5));
    db_res_free(res);
    if (!o)
        return reply_internal(r, NULL);
    reply(r, 200, o);
}

static void h_cdistro_get(req_t *r)
{
    long long cid, id = own_cdistro(r, &cid);
    if (id > 0)
        reply_cdistro(r, id);
}

/* Apply name, path and note.  Only a new path changes what the containers
 * booting it run (name and note are labels), so only then do they restart. */
static int update_cdistro(req_t *r, err_t *e, long long id, long long cid)
{
    static const char *const sql[] = {
        "UPDATE custom_distros SET name = $1 WHERE id = $2",
        "UPDATE custom_distros SET path = $1 WHERE id = $2",
        "UPDATE custom_distros SET note = $1 WHERE id = $2",
    };
    static const char *const cols[] = {"name", "path", "note"};
    if (check_unique(r, e, cid, id) < 0)
        return -1;
    const char *path = field_str(r, "path");
    long long moved = !path ? 0
                            : db_scalar_int(r->db, e, 0,
                                            "SELECT COUNT(*) FROM custom_distros "
                                            "WHERE id = $1 AND path != $2",
                                            DB_ARGS(DB_INT(id), DB_TEXT(path)));
    if (moved < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        const char *v = field_str(r, cols[i]);
        if (v && db_exec(r->db, e, sql[i], DB_ARGS(DB_TEXT(v), DB_INT(id))) < 0)
            return -1;
    }
    if (moved && container_touch(r->db, e, TOUCH_CUSTOM_DISTRO, id) < 0)
        return -1;
    return 0;
}

static void h_cdistro_post(req_t *r)
{
    long long cid, id = own_cdistro(r, &cid);
    if (id < 0 || fields_check(r, cdistro_fields) < 0 || check_values(r) < 0)
        return;
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (update_cdistro(r, &e, id, cid) < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply_cdistro(r, id);
}

int cdistros_unset(db_t *db, err_t *e, long long id, long long holder)
{
    /* A custom distro id names nothing once deleted: left on a container,
     * it would boot whichever custom distro is later given that id. */
    char uid[24];
    snprintf(uid, sizeof uid, "%lld", container_uid(holder));
    /* Restart first: the touch finds them by the custom_distro_id unset next. */
    if (container_touch(db, e, id ? TOUCH_CUSTOM_DISTRO : TOUCH_HELD_CDISTROS,
                        id ? id : holder) < 0)
        return -1;
    return db_exec(db, e,
                   "UPDATE containers SET custom_distro_id = NULL, "
                   "stopped_reason = 'stopped: custom distro ' "
                   "|| custom_distro_id || CASE WHEN $1 = 0 THEN ' was deleted with its "
                   "storage container ' || $3 ELSE ' was deleted' END "
                   "WHERE custom_distro_id = $1 OR custom_distro_id IN "
                   "(SELECT id FROM custom_distros WHERE $1 = 0 AND container_id = $2)",
                   DB_ARGS(DB_INT(id), DB_INT(holder), DB_TEXT(uid))) < 0
               ? -1
               : 0;
}

static void h_cdistro_delete(req_t *r)
{
    long long cid, id = own_cdistro(r, &cid);
    if (id < 0)
        return;
    err_t e = {0};
    /* Containers booting it lose their root filesystem: they get none (and
     * stop until given a distro), restarting on the change. */
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (cdistros_unset(r->db, &e, id, 0) < 0 ||
        db_exec(r->db, &e, "DELETE FROM custom_distros WHERE id = $1", DB_ARGS(DB_INT(id))) < 0 ||
        db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_internal(r, &e);
    }
    reply_ok(r);
}

const route_t custom_distro_routes[] = {
    {"GET", "custom_distros", h_cdistros_all, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"GET", "custom_distros/*", h_cdistros_usable, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "custom_distros/*", h_cdistro_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "custom_distro/*", h_cdistro_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "custom_distro/*", h_cdistro_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "custom_distro/*", h_cdistro_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
