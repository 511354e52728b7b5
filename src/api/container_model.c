/* container_model.c - see container_model.h. */
#include "container_model.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int sizes_check(err_t *e, bool has_memory, long long memory, bool has_storage,
                long long storage)
{
    if (has_memory && (memory <= 0 || memory > MEMORY_MAX_MB))
        return err_set(e, ERR_INPUT, "'memory' must be 1 to %lld (MB, at most 1 TiB)",
                       MEMORY_MAX_MB);
    if (has_storage && (storage <= 0 || storage > STORAGE_MAX_MB))
        return err_set(e, ERR_INPUT, "'storage' must be 1 to %lld (MB, at most 1 PiB)",
                       STORAGE_MAX_MB);
    return 0;
}

/* Is there room for `want` more beside `used` of `total`?  Without the
 * overflow of used + want (rows written before the bounds existed). */
static bool fits(long long used, long long want, long long total)
{
    long long sum;
    return !__builtin_add_overflow(used, want, &sum) && sum <= total;
}

int server_check_capacity(db_t *db, err_t *e, long long server_id, long long exclude_id,
                          long long memory, long long storage)
{
    db_res_t *res = db_query(
        db, e,
        "SELECT s.memory, s.storage, "
        "(SELECT COALESCE(SUM(memory), 0) FROM containers WHERE server_id = s.id AND id != $2),"
        "(SELECT COALESCE(SUM(storage), 0) FROM containers WHERE server_id = s.id AND id != $2)"
        " FROM servers s WHERE s.id = $1",
        DB_ARGS(DB_INT(server_id), DB_INT(exclude_id)));
    if (!res)
        return -1;
    int rc = 0;
    if (res->nrows == 0)
        rc = err_set(e, ERR_NOTFOUND, "no such server");
    else if (!fits(db_get_int(res, 0, 2), memory, db_get_int(res, 0, 0)))
        rc = err_set(e, ERR_CONFLICT, "not enough memory");
    else if (!fits(db_get_int(res, 0, 3), storage, db_get_int(res, 0, 1)))
        rc = err_set(e, ERR_CONFLICT, "not enough storage");
    db_res_free(res);
    return rc;
}

int storage_check_usage(db_t *db, err_t *e, long long id, long long current,
                        long long storage)
{
    if (storage >= current)
        return 0;
    /* -2: no sample (values are never negative, -1 is a failure).  The
     * newest by the node's clock, the larger of one second's (the safe
     * side); a sample dated past the intake's bound (a day ahead: stored
     * before it existed) would stay the newest until its date, so it is
     * passed over. */
    long long used = db_scalar_int(db, e, -2,
                                   "SELECT value FROM container_metrics WHERE container_id = $1 "
                                   "AND metric = 'quota' AND unix <= $2 "
                                   "ORDER BY unix DESC, value DESC LIMIT 1",
                                   DB_ARGS(DB_INT(id), DB_INT(time(NULL) + REPORT_AHEAD_MAX_S)));
    if (used == -1)
        return -1;
    const long long mb = 1024 * 1024;
    if (used == -2 || used <= storage * mb)
        return 0;
    /* Rounded up: "uses 10 MB" must never read as fitting in 10 MB.  Not
     * as (used + mb - 1) / mb: a stored value near LLONG_MAX overflows. */
    return err_set(e, ERR_CONFLICT, "storage %lld MB is below what the container uses (%lld MB)",
                   storage, used / mb + (used % mb != 0));
}

#define RESTART "UPDATE containers SET generation = generation + 1 WHERE "

static const char *const touch_sql[] = {
    [TOUCH_RESTART] = RESTART "id = $1",
    [TOUCH_SSH_KEYS] = "UPDATE containers SET ssh_generation = ssh_generation + 1 "
                       "WHERE id = $1",
    [TOUCH_DISTRO] = RESTART "distro_id = $1",
    [TOUCH_CUSTOM_DISTRO] = RESTART "custom_distro_id = $1",
    [TOUCH_HELD_CDISTROS] = RESTART "custom_distro_id IN "
                                    "(SELECT id FROM custom_distros WHERE container_id = $1)",
    [TOUCH_LEGION] = RESTART "server_id IN "
                             "(SELECT server_id FROM legion_nodes WHERE legion_id = $1)",
};

int container_touch(db_t *db, err_t *e, touch_what what, long long id)
{
    if ((unsigned)what >= sizeof touch_sql / sizeof touch_sql[0])
        return err_set(e, ERR_INTERNAL, "container_touch: unknown change %d", (int)what);
    return db_exec(db, e, touch_sql[what], DB_ARGS(DB_INT(id))) < 0 ? -1 : 0;
}

/* What a node runs a container from, as far as a POST can change it
 * (`note` and tags are not sent to it; links are applied live, no restart). */
static const char *const snap_sql[] = {
    "SELECT name, memory, storage, distro_id, custom_distro_id, server_id, customer_id, "
    "alarm_freq, jid, jid_secret, jid_destinations, pushover_user, pushover_token, "
    "pushover_sound, pushbullet_token, slack_webhook, quota_threshold, "
    "custom_distros_storage, nofollow FROM containers WHERE id = $1",
    "SELECT key FROM ssh_keys WHERE container_id = $1 ORDER BY pos",
};
enum { SNAP_RESTART, SNAP_KEYS, SNAP_PARTS };

struct container_snap {
    long long id;
    db_res_t *part[SNAP_PARTS];
};

void container_snap_free(container_snap_t *snap)
{
    if (!snap)
        return;
    for (int i = 0; i < SNAP_PARTS; i++)
        db_res_free(snap->part[i]);
    free(snap);
}

container_snap_t *container_snap(db_t *db, err_t *e, long long id)
{
    container_snap_t *snap = calloc(1, sizeof *snap);
    if (!snap) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snap->id = id;
    for (int i = 0; i < SNAP_PARTS; i++) {
        if (!(snap->part[i] = db_query(db, e, snap_sql[i], DB_ARGS(DB_INT(id))))) {
            container_snap_free(snap);
            return NULL;
        }
    }
    return snap;
}

/* Same rows, same cells (NULL only equal to NULL). */
static bool res_equal(const db_res_t *a, const db_res_t *b)
{
    if (a->nrows != b->nrows || a->ncols != b->ncols)
        return false;
    for (long long i = 0; i < (long long)a->nrows * a->ncols; i++) {
        const char *x = a->cells[i], *y = b->cells[i];
        if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0))
            return false;
    }
    return true;
}

int container_touch_changed(db_t *db, err_t *e, container_snap_t *before, bool restart)
{
    container_snap_t *after = container_snap(db, e, before->id);
    int rc = after ? 0 : -1;
    if (rc == 0 && (restart || !res_equal(before->part[SNAP_RESTART],
                                          after->part[SNAP_RESTART])))
        rc = container_touch(db, e, TOUCH_RESTART, before->id);
    if (rc == 0 && !res_equal(before->part[SNAP_KEYS], after->part[SNAP_KEYS]))
        rc = container_touch(db, e, TOUCH_SSH_KEYS, before->id);
    container_snap_free(after);
    return rc;
}
