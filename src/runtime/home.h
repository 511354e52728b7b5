/* home.h - the customer's home: the layout of PLATFORM.md, created as root
 * but owned by the container uid.
 *
 * The customer owns the home, so everything is done relative to directory
 * file descriptors opened with O_NOFOLLOW: a symlink planted by the
 * customer (etc/uwsgi.key -> /etc/shadow) is replaced, never followed.
 * Existing customer files are never removed. */
#ifndef IMP_RUNTIME_HOME_H
#define IMP_RUNTIME_HOME_H

#include <stdbool.h>

#include "../common/err.h"
#include "container.h"

/* Directories of the layout, in creation order. */
extern const char *const home_dirs[];

/* Create the home and its layout, write etc/ (hosts, resolv.conf, hostname,
 * uwsgi.key, uwsgi.pubkey) and .ssh/uwsgi_authorized_keys. */
int home_prepare(const container_spec_t *spec, err_t *e);
/* Rewrite .ssh/uwsgi_authorized_keys only (atomically). */
int home_write_keys(const container_spec_t *spec, err_t *e);

/* Homes are never handed from one container to another (a deleted
 * container's uid could come back, or a home be left behind by hand):
 * <containers_dir>/.owners/<uid> (root-only) records the uuid of the
 * container a home belongs to, and a home nobody may have any more moves to
 * <containers_dir>/.deleted/<uid>-<unix time> (root-only, 0700: out of the
 * customers' reach, kept for the supplier to purge). */
#define HOME_OWNERS_DIR ".owners"
#define HOME_DELETED_DIR ".deleted"
#define HOME_CLAIM_ADOPTED 1 /* an unrecorded home adopted (known: true) */
#define HOME_CLAIM_MOVED 2   /* another's home moved to .deleted first */

/* Make the home of uid container `uuid`'s before it is created or used:
 * a home recorded for another uuid, or unrecorded unless `known` (the node
 * ran this uid before records existed), is retired first, so the container
 * starts with a fresh home.  0, HOME_CLAIM_ADOPTED or HOME_CLAIM_MOVED; -1
 * on error (nothing started then). */
int home_claim(const char *containers_dir, int uid, const char *uuid, bool known, err_t *e);
/* Move the home of uid (if any) to .deleted and forget its owner: 1 moved,
 * 0 no home, -1 error.  The container must not run. */
int home_retire(const char *containers_dir, int uid, err_t *e);
/* Remove the .deleted entries retired before `before` (unix seconds), with
 * unlinkat/openat(O_NOFOLLOW) only; the number removed or -1. */
int home_purge(const char *containers_dir, long long before, err_t *e);

/* Append "<YYYY-mm-dd HH:MM:SS> UTC imperium <who>: <line>\n" to
 * <home>/<rel> (rel: "logs/emperor.log", "logs/router.log"), a file the
 * customer owns: resolved beneath home without following any symlink,
 * opened O_APPEND|O_NONBLOCK|O_NOCTTY (when missing: created 0644 with
 * O_EXCL and given to uid), written only when it is a regular file with one
 * link owned by uid (never one of root's: it is not given away) and smaller
 * than max_bytes (0: no cap).  Best
 * effort for log lines: 0, or -1 with errno set. */
int home_append_log(const char *home, int uid, const char *rel, const char *who,
                    const char *line, long long max_bytes);

#endif
