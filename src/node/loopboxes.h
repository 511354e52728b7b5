/* loopboxes.h - the node's loopboxes (docs/NODE.md "Loopboxes"; issue 17):
 * what the API lists for each container, mounted in that container while it
 * runs, by a thread of its own (an e2fsck of a large image never holds the
 * main loop).
 *
 * The thread wakes at every new state and every change of the running set
 * (loopboxes_poke), and every LOOPBOXES_CHECK_MS otherwise.  A pass first
 * does every unmount that is due, for all containers, then the mounts: at
 * most one e2fsck per container, containers taken round robin from where
 * the last pass stopped (a pass whose e2fsck took longer than the period
 * ends there, and the next starts at once with the unmounts).  For each
 * container that runs (state.json: init pid and start time):
 *   - a listed loopbox not mounted: its image opened (loopbox_open_image),
 *     checked (loopbox_fsck) and mounted (loopbox_mount); refused images are
 *     logged once per (image, size, mtime) and tried again when the image
 *     changes; an image that changed (or appeared) waits remount_delay_s
 *     seconds of no change before it is mounted, so a copy in progress is
 *     never mounted;
 *   - a mounted loopbox whose image was deleted or replaced (st_dev/st_ino)
 *     is unmounted; resized (st_size): unmounted, and mounted again after
 *     remount_delay_s if the filesystem is sound; removed from the API's
 *     list: unmounted, the image untouched;
 *   - a loopbox whose image a loop device still backs (a lazily detached
 *     mount a process still uses), or of a container with max_devices
 *     loopboxes on loop devices, waits (said once) until that is over.
 * Every event is one line in the container's logs/emperor.log
 * (home_append_log) and in the node's log.
 * What is mounted is recorded in <state_dir>/<uid>/LOOPBOXES_FILE with the
 * init's pid and start time: a node restart adopts those mounts (checked
 * with loopbox_present), never mounts them twice; records of an earlier
 * init (the container restarted: its namespace and mounts are gone) are
 * dropped and the loopboxes mounted afresh.  A container that stops takes
 * its mounts with its namespace; autoclear frees the loop devices. */
#ifndef IMP_NODE_LOOPBOXES_H
#define IMP_NODE_LOOPBOXES_H

#include "../common/err.h"
#include "../runtime/container.h"
#include "spec.h"

typedef struct loopboxes loopboxes_t;

typedef struct {
    const node_cfg_t *node;  /* state_dir, containers_dir (homes at <containers_dir>/<uid>) */
    int remount_delay_s;     /* loopbox_remount_delay: 30 (the public platform's) */
    int check_ms;            /* the image watch's period; 0: LOOPBOXES_CHECK_MS */
    int max_devices;         /* loopbox_max: loopboxes on loop devices per container; 0: the
                                default */
} loopboxes_opts_t;

#define LOOPBOXES_CHECK_MS 1000
#define LOOPBOXES_DEFAULT_REMOUNT_DELAY_S 30
#define LOOPBOXES_DEFAULT_MAX 16
#define LOOPBOXES_FILE "loopboxes.json"

/* Starts the thread (it adopts what the records say at its first pass). */
loopboxes_t *loopboxes_new(const loopboxes_opts_t *o, err_t *e);
/* Stops and joins the thread (an e2fsck running is killed: it returns
 * within about a second); mounts stay (the next daemon adopts them). */
void loopboxes_free(loopboxes_t *l);

/* The loopboxes every container of a new state wants (copied). */
void loopboxes_set_state(loopboxes_t *l, const spec_state_t *state);
/* Something may have started or stopped: look now.  Never blocks. */
void loopboxes_poke(loopboxes_t *l);

#endif
