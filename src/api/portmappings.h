/* portmappings.h - a server's port mappings, as the customer API and the
 * nodes' channel show them. */
#ifndef IMP_PORTMAPPINGS_H
#define IMP_PORTMAPPINGS_H

#include "../common/db.h"

#include <jansson.h>

/* The columns portmapping_json reads; add "WHERE ... ORDER BY ...". */
#define PORTMAPPING_SELECT                                                                 \
    "SELECT id, proto, public_port, container_id, private_port FROM portmappings "

/* One mapping of a PORTMAPPING_SELECT row: id, proto, public_port,
 * container (uid), container_ip, private_port; NULL when out of memory. */
json_t *portmapping_json(db_res_t *res, int row);

#endif
