/* node_channel.h - the nodes' side of the API (node_channel.c). */
#ifndef IMP_API_NODE_CHANNEL_H
#define IMP_API_NODE_CHANNEL_H

#include <jansson.h>

#include "../common/db.h"
#include "../common/err.h"

/* The whole desired state of one server, without its version: what
 * GET <node_prefix>/state answers (plus "version"), and what the node's
 * spec module (src/node/spec.h) parses; tests/unit/test_spec.c feeds one
 * to the other. */
json_t *node_state_json(db_t *db, err_t *e, long long server_id);

#endif
