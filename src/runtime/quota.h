/* quota.h - a container's disk quota: its home holds at most `storage` MB
 * (docs/NODE.md, "Disk quota"; issue 16).
 *
 * Backends behind one interface, chosen by the node setting `quota`:
 *   loop     (default) the home is an ext4 image <containers_dir>/.images/<uid>.ext4
 *            attached to a loop device (autoclear) and mounted nosuid,nodev on
 *            <containers_dir>/<uid> in the host's mount namespace; works on any
 *            kernel with loop devices and ext4, needs no kernel quota support;
 *   project  ext4/XFS project quota (project id = uid) on the filesystem of
 *            containers_dir, for kernels with a quota format (not testable on
 *            a kernel without QFMT_V2: said in the docs);
 *   off      no limit (the home is a plain directory, as before issue 16).
 *
 * Everything acts on descriptors under containers_dir (openat2, RESOLVE_BENEATH
 * | RESOLVE_NO_SYMLINKS): the home is a tree the customer controls. */
#ifndef IMP_RUNTIME_QUOTA_H
#define IMP_RUNTIME_QUOTA_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

typedef enum { QUOTA_LOOP = 0, QUOTA_PROJECT, QUOTA_OFF } quota_kind_t;

/* "loop" | "project" | "off" -> kind; -1 for anything else. */
int quota_kind_parse(const char *s);
const char *quota_kind_name(quota_kind_t k);

/* Give the home of uid its limit of storage_mb MB before the container
 * starts (the container is not running): create the image on first use,
 * convert an existing plain home into it (nothing lost; the old tree moves
 * to a root-only place), grow it when storage_mb is larger than the image,
 * and mount it.  A home already mounted by us is left as it is. */
int quota_prepare(quota_kind_t k, const char *containers_dir, int uid, long long storage_mb,
                  err_t *e);

/* Mount the existing home image of uid (never created, grown or converted
 * here) on the directory target (an O_PATH descriptor of a node-owned
 * directory), with the home's own mount options, reusing the loop device
 * that backs the image already if one does (one superblock, whoever
 * mounted it first): for a container that boots a custom distro held in
 * that home (container.c).  1: mounted; 0: the home has no image (a plain
 * home, quota = off or project: use it in place); -1 with e set. */
int quota_mount_home_at(const char *containers_dir, int uid, int target, err_t *e);

/* After the container stopped: unmount the home (the loop device frees
 * itself).  1 when it was unmounted, 0 when nothing of ours was mounted
 * (whatever k is now: a home mounted under an earlier setting goes too). */
int quota_release(quota_kind_t k, const char *containers_dir, int uid, err_t *e);

/* Bytes used and the limit of a home (statfs of the mounted image, or the
 * project's quota); *limit 0 when the home has no limit. */
int quota_usage(quota_kind_t k, const char *containers_dir, int uid, uint64_t *used,
                uint64_t *limit, err_t *e);

/* The loop device ("loop7") backing the home of uid, for its I/O counters
 * (/sys/block/<dev>/stat); -1 when the home is not a loop mount. */
int quota_loop_device(const char *containers_dir, int uid, char *dev, size_t size);

/* Node start, before any container is started or adopted.  loop: make
 * containers_dir a shared mount (bound on itself first when it is not a
 * mount point; <state_dir>/QUOTA_BIND_MARK records that we did), so mount
 * namespaces made before a home is mounted (an sshd's) see it; project:
 * check that the kernel keeps project quotas on containers_dir's filesystem
 * (a clear error otherwise); off: nothing. */
int quota_setup(quota_kind_t k, const char *containers_dir, const char *state_dir, err_t *e);
/* stop-all, once nothing runs: undo quota_setup's bind (if it made one and
 * no home is mounted below it any more). */
int quota_teardown(const char *containers_dir, const char *state_dir, err_t *e);

/* The text of the `quota` command the node puts on every container's
 * PATH (QUOTA_CMD_DIR/quota; kernel quotas being absent, quota(1) would
 * find nothing): quota(1)'s report, -s for human sizes, of the filesystem
 * of `home` (a path inside the container) with limit_mb as the limit (0:
 * "none").  Its length, or -1 when buf is too small. */
int quota_script(char *buf, size_t len, const char *home, long long limit_mb);
#define QUOTA_CMD_DIR "/run/imperium/bin" /* first on the Emperor's and ssh's PATH */

#define QUOTA_IMAGES_DIR ".images"         /* <containers_dir>/.images/<uid>.ext4, root 0700 */
#define QUOTA_BIND_MARK "containers_dir.bind" /* in the state directory */
#define QUOTA_MKFS "/sbin/mkfs.ext4"
#define QUOTA_E2FSCK "/sbin/e2fsck"
#define QUOTA_RESIZE2FS "/sbin/resize2fs"

#endif
