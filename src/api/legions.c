/* legions.c - the JSON of legions, for the admin API and the nodes'
 * channel (legions.h). */
#include "legions.h"
#include "rows.h"

#include <stdbool.h>

/* What tells the two views apart: the admin's shows the legion's note and
 * names its nodes; a node's addresses them.  Both show the id: a node's
 * legion UDP port is legion_port + id, the same on every member. */
typedef struct {
    bool admin;
    const char *nodes_sql; /* $1 = the legion's id */
} legion_view_t;

static const legion_view_t admin_view = {
    true, "SELECT s.name FROM legion_nodes n JOIN servers s "
          "ON s.id = n.server_id WHERE n.legion_id = $1 ORDER BY s.name"};
static const legion_view_t node_view = {
    false, "SELECT s.address FROM legion_nodes n JOIN servers s "
           "ON s.id = n.server_id WHERE n.legion_id = $1 ORDER BY s.id"};

/* A row of id, name, address, key, quorum[, note] in the view `ctx`, keys in
 * the order each view always had. */
static json_t *legion_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    const legion_view_t *v = ctx;
    long long id = db_get_int(res, row, 0);
    json_t *nodes = rows_str_list(db, e, v->nodes_sql, id);
    if (!nodes)
        return NULL;
    json_t *o = json_pack("{s:I}", "id", (json_int_t)id);
    if (!o ||
        json_object_update_new(o, json_pack("{s:s,s:s,s:s,s:I}", "name", db_get(res, row, 1),
                                            "address", db_get(res, row, 2), "key",
                                            db_get(res, row, 3), "quorum",
                                            (json_int_t)db_get_int(res, row, 4))) < 0 ||
        (v->admin && json_object_set_new(o, "note", json_string(db_get(res, row, 5))) < 0)) {
        json_decref(o);
        json_decref(nodes);
        return NULL; /* out of memory: rows_query_json fails the list */
    }
    if (json_object_set_new(o, "nodes", nodes) < 0) { /* it took nodes */
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *legions_admin_json(db_t *db, err_t *e)
{
    return rows_query_json(db, e, legion_row, (void *)&admin_view,
                           "SELECT id, name, address, key, quorum, note FROM legions "
                           "ORDER BY name",
                           DB_NOARGS);
}

json_t *legions_of_server_json(db_t *db, err_t *e, long long server_id)
{
    return rows_query_json(db, e, legion_row, (void *)&node_view,
                           "SELECT l.id, l.name, l.address, l.key, l.quorum FROM legions l "
                           "JOIN legion_nodes n ON n.legion_id = l.id WHERE n.server_id = $1 "
                           "ORDER BY l.id",
                           DB_ARGS(DB_INT(server_id)));
}
