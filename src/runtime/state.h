/* state.h - the per-container state directory: <state_dir>/<uid>/.
 *
 * state.json says which init runs the container (pid plus its start time
 * from /proc/<pid>/stat, so a recycled pid is never mistaken for it), the
 * generations it runs, when it last changed, how often it was restarted and
 * why it last failed.  rootfs/ is the empty mountpoint pivot_root goes
 * through, inside the container's own mount namespace only. */
#ifndef IMP_RUNTIME_STATE_H
#define IMP_RUNTIME_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"

#define STATE_PATH_MAX 4096

typedef struct {
    int uid;
    pid_t pid;                    /* init in the host pid namespace; 0: none */
    unsigned long long starttime; /* field 22 of /proc/<pid>/stat, clock ticks */
    long long since;              /* unix time of the last start or stop */
    long long restarts;           /* starts after the previous init died */
    long long generation, ssh_generation;
    char last_error[512];        /* why the last start failed; "" when it did not */
    char cgroup[STATE_PATH_MAX]; /* the container's cgroup directory */
} state_t;

/* <state_dir>/<uid>[/name] into out; -1 if it does not fit. */
int state_path(const char *state_dir, int uid, const char *name, char *out, size_t len, err_t *e);
/* Create <state_dir>/<uid>/ and its rootfs/ mountpoint (root only, 0700). */
int state_prepare(const char *state_dir, int uid, err_t *e);
/* 1: loaded; 0: no state yet (st zeroed, uid set); -1: unreadable. */
int state_load(const char *state_dir, int uid, state_t *st, err_t *e);
/* Write state.json atomically (temporary file + rename). */
int state_save(const char *state_dir, const state_t *st, err_t *e);

/* Start time (field 22) and state letter (field 3) of a process; -1 when
 * it does not exist. */
int proc_stat(pid_t pid, unsigned long long *starttime, char *state);
/* The real uid of a process; -1 when it does not exist. */
long long proc_uid(pid_t pid);
/* The recorded init still runs: alive, not a zombie, same start time, and
 * running as the container's uid. */
bool state_init_alive(const state_t *st);

#endif
