/* distros.c - /distros/: the supplier's pool of root filesystems. */
#include "routes.h"
#include "rows.h"

static json_t *distro_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1));
}

static void h_distros_list(req_t *r)
{
    reply_rows(r, distro_row, "SELECT id, name FROM distros ORDER BY id", DB_NOARGS);
}

const route_t distro_routes[] = {
    {"GET", "distros", h_distros_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
