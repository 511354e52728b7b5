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

/* How far ahead of the API's clock a node's sample or alarm may be dated
 * (the nodes' reports refuse later ones): a node's clock a little off is
 * taken, a date years ahead would stay the newest sample until then. */
#define REPORT_AHEAD_MAX_S 86400

/* Lowering container `id`'s storage from `current` to `storage` MB below
 * what its node last reported it uses (the newest `quota` sample, bytes):
 * ERR_CONFLICT "storage N MB is below what the container uses (U MB)".
 * The node never shrinks a home.  No sample yet, or no lowering: allowed. */
int storage_check_usage(db_t *db, err_t *e, long long id, long long current,
                        long long storage);

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

/* A container as its node runs it (the columns that restart it, and its
 * ssh keys), read in the writing transaction before a change: posting the
 * values a container already has restarts nothing (the public platform
 * compared with the stored object too). */
typedef struct container_snap container_snap_t;
container_snap_t *container_snap(db_t *db, err_t *e, long long id);
/* After the change, in the same transaction: bump `generation` when a
 * restart column differs from `before` or `restart` (link, unlink, reboot:
 * asked for explicitly), and `ssh_generation` when the keys differ.
 * The caller still frees `before`. */
int container_touch_changed(db_t *db, err_t *e, container_snap_t *before, bool restart);
void container_snap_free(container_snap_t *snap);

#endif
