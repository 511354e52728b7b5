/* loopbox.h - a customer's loopbox: an ext4 image in the container's home,
 * on a loop device, mounted on a directory of that container only
 * (API.md "Loopboxes", docs/NODE.md "Loopboxes"; issue 17).
 *
 * The steps, for src/node/loopboxes.c (which decides when: the API's list,
 * the image watch, the remount delay, the records, the log lines):
 *   loopbox_open_image  the image from the home on the host, never following
 *                       a symlink (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS),
 *                       a regular file owned by the container, >= 1 MB;
 *   loopbox_fsck        e2fsck -n -f on it, run as the container's uid with no
 *                       privilege (a crafted image attacks e2fsck, not root);
 *   loopbox_mount       a loop device (autoclear, read-only with ro), ext4
 *                       mounted by descriptor (fsopen/fsmount: nosuid, nodev,
 *                       acl, user_xattr, errors=remount-ro, ro with ro), the fs
 *                       root given to the container and lost+found to root,
 *                       then attached (move_mount) on the mountpoint inside
 *                       the container's mount namespace only, from a thread
 *                       that unshared CLONE_FS and setns'd into it;
 *   loopbox_unmount     in that namespace, the mount found by its mount id and
 *                       detached (MNT_DETACH: a busy filesystem goes too; the
 *                       loop device frees itself when the last user closes);
 *   loopbox_present     whether a mount id is still in the container's
 *                       /proc/<init>/mountinfo (adoption after a node restart).
 * Nothing here prints or exits; each step returns -1 with e set to a
 * sentence the customer can read in logs/emperor.log. */
#ifndef IMP_RUNTIME_LOOPBOX_H
#define IMP_RUNTIME_LOOPBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../common/err.h"

#define LOOPBOX_MIN_BYTES (1024LL * 1024LL) /* "image files lower than 1MB are not mounted" */
#define LOOPBOX_NAME_FMT "imperium-loopbox:%d:%lld" /* lo_file_name: uid, loopbox id */
#define LOOPBOX_FSCK_TIMEOUT_MS 60000 /* e2fsck past this is killed: "not sound" */

/* What is mounted: recorded by the node (loopboxes.c) to find it again. */
typedef struct {
    unsigned long long mnt_id; /* statx STATX_MNT_ID of the mount (mountinfo's 1st field) */
    char dev[32];              /* "/dev/loop7" */
    dev_t img_dev;             /* the image file: st_dev, st_ino, st_size when mounted */
    ino_t img_ino;
    long long img_size;
} loopbox_mnt_t;

/* The container's init, as the state directory records it: its pid and
 * start time (/proc/<pid>/stat field 22).  Every step pins it with a
 * pidfd and checks the start time before it uses /proc/<pid>: a pid
 * reused by another process (the container stopped meanwhile) is refused,
 * never entered. */
typedef struct {
    pid_t pid;
    unsigned long long starttime;
} loopbox_init_t;

/* Open <home>/<filename> (home: the host path of the container's home,
 * filename relative to it, checked with loopbox_path_valid) without
 * following any symlink: O_RDONLY when ro, else O_RDWR; *sb its fstat.
 * Refused with ERR_INPUT and a reason when it is a symlink, not a regular
 * file, not owned by uid, or under LOOPBOX_MIN_BYTES; ERR_NOTFOUND when
 * missing (the node waits for it). */
int loopbox_open_image(const char *home, int uid, const char *filename, bool ro, struct stat *sb,
                       err_t *e);

/* e2fsck -n -f on the open image, as uid:uid with no capabilities, in a
 * sandbox of its own: new mount, network, IPC and UTS namespaces, a procfs
 * showing only its own processes (hidepid=invisible,subset=pid), the
 * container's cgroups (cgroup_dir: the state's `cgroup`, its memory limit
 * applies; NULL or "": none), RLIMIT_CPU of the timeout; stdin/stdout on
 * /dev/null, killed after timeout_ms or as soon as *cancel is non-zero
 * (cancel may be NULL).  0: clean; 1: not clean (msg: e2fsck's first lines
 * of complaint, or "timed out"); -1: could not run it, or cancelled (msg
 * says why: not a verdict on the image). */
int loopbox_fsck(int img, int uid, const char *cgroup_dir, int timeout_ms,
                 const volatile int *cancel, char *msg, size_t len);

/* Mount the open image img (from loopbox_open_image) for container uid,
 * whose init is `init`, on <home inside>/<mountpoint> in that init's mount
 * namespace (home inside: /containers/<uid>).  Missing directories of the
 * mountpoint are created (0755, owned by uid:uid), resolved inside the
 * container's root without following symlinks; a mountpoint that is not a
 * directory, or has a mount on it already, is refused; after the attach the
 * expected path is resolved again and must lead to the new mount (else it
 * is detached and refused: the customer moved a directory meanwhile).  On a
 * read-write mount the filesystem's root becomes uid:uid's and lost+found
 * root's (0700).  Refused (ERR_CONFLICT) when a loop device backs the image
 * already, or one labelled for this loopbox (LOOPBOX_NAME_FMT) still exists
 * (a lazily detached mount a process keeps: the message names it), or uid
 * has max_devices loopbox devices already (0: no limit).  Fills *out. */
int loopbox_mount(const loopbox_init_t *init, int uid, long long id, int img,
                  const struct stat *sb, const char *mountpoint, bool ro, int max_devices,
                  loopbox_mnt_t *out, err_t *e);

/* Detach mount m from init's mount namespace (looked up at <home
 * inside>/<mountpoint> first, then by its mountinfo line if the customer
 * moved a parent; both must be m's mount id on m's device).  1: unmounted;
 * 0: it was not there any more. */
int loopbox_unmount(const loopbox_init_t *init, int uid, const char *mountpoint,
                    const loopbox_mnt_t *m, err_t *e);

/* 1 when mount m (its mount id on its loop device: ids are reused once
 * freed) is in init's /proc/<pid>/mountinfo, 0 when not, -1 when that
 * cannot be read (the init is gone, or its pid is another process now). */
int loopbox_present(const loopbox_init_t *init, const loopbox_mnt_t *m);

/* How many loop devices carry a loopbox label (LOOPBOX_NAME_FMT) of uid. */
int loopbox_devices_of(int uid);

#endif
