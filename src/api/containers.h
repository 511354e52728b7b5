/* containers.h - the container model, shared by the customer and admin APIs. */
#ifndef IMP_CONTAINERS_H
#define IMP_CONTAINERS_H

#include "api.h"
#include "container_model.h"

/* The container's JSON object as API.md lists it: the short form of lists,
 * or the full form of GET /containers/<uid>.  NULL with e set, or with
 * e->kind ERR_NOTFOUND when there is no such container. */
json_t *container_json(db_t *db, err_t *e, long long id, bool full);

/* Create a container; checks name and sizes (ERR_INPUT) and capacity
 * (ERR_CONFLICT).  Runs in its own transaction. */
int container_create(db_t *db, err_t *e, long long customer_id, long long server_id,
                     const char *name, long long memory, long long storage, long long *id);

/* Inside a transaction: containers booting a custom distro about to be
 * deleted - custom distro `id`, or (id 0) every one held by storage
 * container `holder` - lose it, restart (so their node stops them: no root
 * filesystem) and keep the reason for their status.last_error. */
int cdistros_unset(db_t *db, err_t *e, long long id, long long holder);

/* Validate a container name: 1 to 63 characters (it becomes the hostname). */
int container_name_check(const char *name, err_t *e);

#endif
