/* loopboxes.c - /loopboxes/ (see API.md).
 *
 * A loopbox is an ext4 image in a container's home that the node attaches
 * to a loop device and mounts inside that container.  Mounting does not
 * restart the container, so nothing here bumps `containers.generation`:
 * the node reads the loopbox list of its containers and mounts or unmounts
 * to follow it. */
#include "../common/validate.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"
#include "tags.h"

#include <string.h>

#define LOOPBOX_FILENAME_MAX 64
#define LOOPBOX_MOUNTPOINT_MAX 255

#define LOOPBOX_SELECT                                                                     \
    "SELECT l.id, l.container_id, l.filename, l.mountpoint, l.ro FROM loopboxes l "       \
    "JOIN containers c ON c.id = l.container_id "

static json_t *loopbox_json(db_t *db, err_t *e, db_res_t *res, int row)
{
    long long id = db_get_int(res, row, 0);
    json_t *tags = tags_of(db, e, TAGGED_LOOPBOX, id);
    if (!tags)
        return NULL;
    json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:b,s:o}", "id", (json_int_t)id, "container",
                          (json_int_t)container_uid(db_get_int(res, row, 1)), "filename",
                          db_get(res, row, 2), "mountpoint", db_get(res, row, 3), "ro",
                          (int)db_get_int(res, row, 4), "tags", tags);
    if (!o)
        err_set(e, ERR_INTERNAL, "out of memory");
    return o;
}

/* The internal id of the caller's container `uid`, 0 when it is not one
 * (missing, someone else's, not a uid), -1 on a storage failure. */
static long long own_container_id(req_t *r, err_t *e, long long uid)
{
    long long id = container_id_of_uid(uid);
    if (id < 0)
        return 0;
    return db_scalar_int(r->db, e, 0,
                         "SELECT id FROM containers WHERE id = $1 AND customer_id = $2",
                         DB_ARGS(DB_INT(id), DB_INT(r->me.id)));
}

/* The ?container=<uid> filter: 0 when absent, the container id, or -1
 * after answering (403 when it is not the caller's). */
static long long container_filter(req_t *r)
{
    const char *arg = req_arg(r, "container");
    if (!arg)
        return 0;
    err_t e = {0};
    long long uid = parse_id(arg);
    long long id = own_container_id(r, &e, uid < 0 ? 0 : uid);
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 403, "'container' is not one of your containers");
    return id > 0 ? id : -1;
}

static json_t *loopbox_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)ctx;
    return loopbox_json(db, e, res, row);
}

static void h_loopboxes_list(req_t *r)
{
    long long cid = container_filter(r);
    if (cid < 0)
        return;
    err_t e = {0};
    json_t *out = rows_query_json(r->db, &e, loopbox_row, NULL,
                                  LOOPBOX_SELECT "WHERE c.customer_id = $1 AND "
                                                 "($2 = 0 OR l.container_id = $2) ORDER BY l.id",
                                  DB_ARGS(DB_INT(r->me.id), DB_INT(cid)));
    reply_list(r, tags_filter(out, req_arg(r, "tags")), &e);
}

/* Check filename and mountpoint; answers 400 naming the field. */
static int check_paths(req_t *r)
{
    static const struct {
        const char *field;
        size_t max;
    } paths[] = {{"filename", LOOPBOX_FILENAME_MAX}, {"mountpoint", LOOPBOX_MOUNTPOINT_MAX}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char why[256];
        if (!loopbox_path_valid(field_str(r, paths[i].field), paths[i].max, why,
                                sizeof why)) {
            reply_bad_request(r, "'%s' %s", paths[i].field, why);
            return -1;
        }
    }
    return 0;
}

/* 409 with a reason when the container already uses filename or mountpoint;
 * returns 1 after answering, 0 when free, -1 after a 500. */
static int check_duplicates(req_t *r, long long cid)
{
    static const char *const cols[] = {"filename", "mountpoint"};
    static const char *const sql[] = {
        "SELECT COUNT(*) FROM loopboxes WHERE container_id = $1 AND filename = $2",
        "SELECT COUNT(*) FROM loopboxes WHERE container_id = $1 AND mountpoint = $2",
    };
    for (int i = 0; i < 2; i++) {
        err_t e = {0};
        const char *v = field_str(r, cols[i]);
        long long n = db_scalar_int(r->db, &e, 0, sql[i], DB_ARGS(DB_INT(cid), DB_TEXT(v)));
        if (n < 0) {
            reply_internal(r, &e);
            return -1;
        }
        if (n > 0) {
            reply_conflict(r, "container %lld already has a loopbox with %s '%s'",
                           container_uid(cid), cols[i], v);
            return 1;
        }
    }
    return 0;
}

static void h_loopbox_create(req_t *r)
{
    static const field_spec spec[] = {{"container", FT_INT},   {"filename", FT_STRING},
                                      {"mountpoint", FT_STRING}, {"ro", FT_BOOL},
                                      {NULL, 0}};
    static const char *const required[] = {"container", "filename", "mountpoint", NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0 || check_paths(r) < 0)
        return;
    err_t e = {0};
    long long cid = own_container_id(r, &e, field_int(r, "container"));
    if (cid < 0)
        return reply_internal(r, &e);
    if (cid == 0)
        return reply_error(r, 403, "'container' is not one of your containers");
    if (check_duplicates(r, cid) != 0)
        return;
    db_res_t *res = db_query(
        r->db, &e,
        "INSERT INTO loopboxes (container_id, filename, mountpoint, ro) VALUES ($1, $2, $3, $4) "
        "RETURNING id",
        DB_ARGS(DB_INT(cid), DB_TEXT(field_str(r, "filename")),
                DB_TEXT(field_str(r, "mountpoint")), DB_INT(field_bool(r, "ro"))));
    if (!res) {
        /* A concurrent twin won the race past check_duplicates. */
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "that filename or mountpoint is already in use in "
                                     "container %lld",
                                  container_uid(cid));
        return reply_internal(r, &e);
    }
    long long id = db_get_int(res, 0, 0);
    db_res_free(res);
    reply(r, 201, json_pack("{s:s,s:I}", "message", "Created", "id", (json_int_t)id));
}

/* The id of the caller's loopbox named by the path, or -1 after answering
 * (403 for someone else's or a missing one, as API.md says). */
static long long own_loopbox(req_t *r)
{
    return req_owned(r,
                     "SELECT l.id FROM loopboxes l JOIN containers c ON c.id = l.container_id "
                     "WHERE l.id = $1 AND c.customer_id = $2",
                     parse_id(r->segs[1]), 403);
}

static void reply_loopbox(req_t *r, long long id)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, LOOPBOX_SELECT "WHERE l.id = $1", DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    json_t *o = res->nrows == 1 ? loopbox_json(r->db, &e, res, 0) : NULL;
    db_res_free(res);
    if (!o)
        return reply_internal(r, &e);
    reply(r, 200, o);
}

static void h_loopbox_get(req_t *r)
{
    long long id = own_loopbox(r);
    if (id > 0)
        reply_loopbox(r, id);
}

/* Only the tags of a loopbox change: remounting under the container's feet
 * races with its mount namespace, so every other field is refused. */
static int check_only_tags(req_t *r)
{
    const char *key;
    json_t *v;
    json_object_foreach(r->json, key, v)
    {
        if (strcmp(key, "tags") != 0) {
            reply_bad_request(r,
                              "'%s' is immutable (only 'tags' can change): delete the "
                              "loopbox and create it again",
                              key);
            return -1;
        }
    }
    return 0;
}

static void h_loopbox_post(req_t *r)
{
    static const field_spec spec[] = {{"tags", FT_STRING_LIST}, {NULL, 0}};
    long long id = own_loopbox(r);
    if (id < 0 || fields_check(r, spec) < 0 || check_only_tags(r) < 0)
        return;
    json_t *tags = field_list(r, "tags");
    err_t e = {0};
    if (tags) {
        /* Clearing and re-adding is one change: a failure keeps the old tags. */
        if (db_begin(r->db, &e) < 0)
            return reply_internal(r, &e);
        if (tags_set(r->db, &e, TAGGED_LOOPBOX, id, r->me.id, tags) < 0 ||
            db_commit(r->db, &e) < 0) {
            db_rollback(r->db);
            return reply_internal(r, &e);
        }
    }
    reply_loopbox(r, id);
}

static void h_loopbox_delete(req_t *r)
{
    long long id = own_loopbox(r);
    if (id < 0)
        return;
    err_t e = {0};
    /* The node unmounts it when it disappears from the list; the image file
     * in the home stays.  Its tags go with it (ON DELETE CASCADE). */
    if (db_exec(r->db, &e, "DELETE FROM loopboxes WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

const route_t loopbox_routes[] = {
    {"GET", "loopboxes", h_loopboxes_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "loopboxes", h_loopbox_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "loopboxes/*", h_loopbox_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "loopboxes/*", h_loopbox_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "loopboxes/*", h_loopbox_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
