/* distros.c - /distros/: the supplier's pool of root filesystems. */
#include "routes.h"

static void h_distros_list(req_t *r)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, "SELECT id, name FROM distros ORDER BY id", DB_NOARGS);
    if (!res)
        return reply_internal(r, &e);
    json_t *out = json_array();
    for (int i = 0; i < res->nrows; i++)
        json_array_append_new(out, json_pack("{s:I,s:s}", "id",
                                             (json_int_t)db_get_int(res, i, 0), "name",
                                             db_get(res, i, 1)));
    db_res_free(res);
    reply(r, 200, out);
}

const route_t distro_routes[] = {
    {"GET", "distros", h_distros_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE},
    {NULL, NULL, NULL, 0, 0},
};
