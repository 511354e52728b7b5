/* legions.h - legions (a Lord address shared by a quorum of nodes) as the
 * supplier's admin API and the nodes' channel show them: one row builder,
 * two views. */
#ifndef IMP_LEGIONS_H
#define IMP_LEGIONS_H

#include "../common/db.h"
#include "../common/err.h"

#include <jansson.h>

/* Every legion by name, as /admin/legions lists them: id, name, address,
 * key, quorum, note, nodes (server names, by name).  NULL with e set. */
json_t *legions_admin_json(db_t *db, err_t *e);
/* The legions server `server_id` belongs to, in id order, as its node's
 * state shows them: id, name, address, key, quorum, nodes (server addresses, in
 * server id order).  NULL with e set. */
json_t *legions_of_server_json(db_t *db, err_t *e, long long server_id);

#endif
