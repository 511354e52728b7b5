/* owned.c - "is this object the caller's?", the check every customer
 * endpoint starts with. */
#include "../common/validate.h"
#include "req.h"

long long req_owned(req_t *r, const char *sql, long long id, int missing)
{
    err_t e = {0};
    long long found = id < 0 ? 0
                             : db_scalar_int(r->db, &e, 0, sql,
                                             DB_ARGS(DB_INT(id), DB_INT(r->me.id)));
    if (found < 0)
        reply_internal(r, &e);
    else if (found == 0)
        reply_error(r, missing, NULL);
    return found > 0 ? found : -1;
}

long long req_own_container(req_t *r, const char *uid_seg)
{
    return req_owned(r, "SELECT id FROM containers WHERE id = $1 AND customer_id = $2",
                     container_id_from_uid(uid_seg), 403);
}
