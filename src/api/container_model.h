/* container_model.h - the rules every API file applies to containers:
 * sizes, a server's capacity, and telling the nodes what changed. */
#ifndef IMP_CONTAINER_MODEL_H
#define IMP_CONTAINER_MODEL_H

#include "../common/db.h"
#include "../common/err.h"

#include <stdbool.h>

/* The largest memory and storage (MB) of a container or a server: 1 TiB
 * and 1 PiB (docs/API-NOTES.md).  Bounded, sums over a server's containers
 * cannot overflow (2^33 containers would be needed). */
#define MEMORY_MAX_MB (1LL << 20)
#define STORAGE_MAX_MB (1LL << 30)

/* ERR_INPUT naming the field unless each given size is 1 to its maximum. */
int sizes_check(err_t *e, bool has_memory, long long memory, bool has_storage,
                long long storage);

/* Check that a server can hold `memory` and `storage` more MB beside its
 * other containers (excluding `exclude_id`); ERR_CONFLICT "not enough ...".
 * With 0 and 0: do its containers still fit (after it shrank)? */
int server_check_capacity(db_t *db, err_t *e, long long server_id, long long exclude_id,
                          long long memory, long long storage);

/* What changed, and so which containers a node must act on. */
typedef enum {
    TOUCH_RESTART,         /* container `id`: restart it */
    TOUCH_SSH_KEYS,        /* container `id`: rewrite its keys, no restart */
    TOUCH_DISTRO,          /* distro `id` moved: restart those booting it */
    TOUCH_CUSTOM_DISTRO,   /* custom distro `id` moved or goes */
    TOUCH_HELD_CDISTROS,   /* storage container `id`: those booting its distros */
    TOUCH_LEGION,          /* legion `id`: containers on its nodes (legion_address) */
} touch_what;

/* Bump the generation (or ssh_generation) the nodes compare: the one place
 * that says "this container must restart".  Runs in the caller's
 * transaction. */
int container_touch(db_t *db, err_t *e, touch_what what, long long id);

#endif
