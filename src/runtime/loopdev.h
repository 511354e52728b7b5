/* loopdev.h - loop block devices: the one owner of LOOP_CTL_GET_FREE,
 * LOOP_CONFIGURE and the sysfs lookups, for the homes' images (quota.c)
 * and the customers' loopboxes (loopbox.c).
 *
 * A device is configured with LO_FLAGS_AUTOCLEAR: it frees itself once the
 * descriptor loopdev_attach returned is closed and no mount (superblock)
 * holds it any more, so nothing has to detach it by hand. */
#ifndef IMP_RUNTIME_LOOPDEV_H
#define IMP_RUNTIME_LOOPDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"

/* Attach a free loop device to the open file img (read-only when ro: the
 * device refuses writes, LO_FLAGS_READ_ONLY), its lo_file_name set to
 * `name` (at most LO_NAME_SIZE - 1 characters: who it belongs to, shown by
 * losetup), direct I/O when the file's filesystem allows it.  Returns the
 * device's descriptor and its path in dev ("/dev/loop7"); -1 with e set. */
int loopdev_attach(int img, const char *name, bool ro, char *dev, size_t len, err_t *e);

/* The device name ("loop7") of loop minor `minor`, from sysfs (minors and
 * names need not match when partitions are on); -1 when there is none. */
int loopdev_name(int minor, char *dev, size_t size);

/* The loop device currently backed by the file (st_dev, st_ino) of an
 * image, if any: 0 and its path in dev ("/dev/loop7"), -1 when none is.
 * (LOOP_GET_STATUS64's lo_device/lo_inode of every /sys/block/loop*.) */
int loopdev_find(dev_t file_dev, ino_t file_ino, char *dev, size_t len);

/* Whether some loop device is backed by a file on the filesystem fs_dev
 * (a loopbox image in a home: the home cannot be unmounted before it is
 * released). */
bool loopdev_backs_fs(dev_t fs_dev);

/* lo_file_name of a device ("/dev/loop7"), into name; -1 when it is not
 * configured. */
int loopdev_label(const char *dev, char *name, size_t len);

/* How many configured loop devices have lo_file_name `label` (prefix:
 * starting with it); the first one's path ("/dev/loop7") in first when
 * first is not NULL and one does. */
int loopdev_count_labelled(const char *label, bool prefix, char *first, size_t len);

#endif
