/* loopboxes.c - the node's loopboxes, mounted in their containers by a
 * thread of their own (loopboxes.h, docs/NODE.md "Loopboxes").
 *
 * The main loop only hands states over (loopboxes_set_state) and pokes;
 * everything else is the thread's: the per-container records (ctr_t), the
 * image watch, the log lines.  The wanted table is the one thing shared,
 * under the mutex, and is copied out at the start of every pass. */
#include "loopboxes.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "../runtime/home.h"
#include "../runtime/loopbox.h"
#include "../runtime/loopdev.h"
#include "../runtime/state.h"

#define EMPEROR_LOG "logs/emperor.log"

/* One loopbox the API lists (a copy of spec_loopbox_t). */
typedef struct {
    long long id;
    char *filename, *mountpoint;
    bool ro;
} want_box_t;

typedef struct {
    int uid;
    want_box_t *boxes; /* sorted by mountpoint: a parent is mounted before its child */
    size_t n;
} want_t;

/* What the image looked like at the last look: a change (or an
 * appearance) starts the remount delay again. */
typedef struct {
    bool exists;
    dev_t dev;
    ino_t ino;
    mode_t mode;
    long long size, mtime_ns;
} ident_t;

/* The thread's record of one loopbox of a running container. */
typedef struct {
    long long id;
    char *filename, *mountpoint;
    bool ro;
    bool listed;       /* in the current wanted table (this pass) */
    bool mounted;      /* m is in the container's namespace */
    loopbox_mnt_t m;
    bool watched;      /* last is meaningful */
    bool looked;       /* last is of this pass (the home could be looked at) */
    ident_t last;      /* the image at the last look */
    long long due_ms;  /* not mounted before this (the remount delay) */
    bool refused;      /* refused_at is the image a refusal was logged for */
    ident_t refused_at;
    char said[sizeof(((err_t *)0)->msg)]; /* the last wait or mount failure logged */
    char fsck_said[512]; /* the last "could not run e2fsck" in the node's log */
    bool missing_logged;
} box_t;

/* One container the thread knows. */
typedef struct {
    int uid;
    loopbox_init_t init; /* the init the records are of; pid 0: none yet */
    bool alive;          /* that init runs (this pass) */
    char *cgroup;        /* its state's cgroup directory (e2fsck runs in it); NULL: none */
    box_t *boxes;
    size_t n, cap;
} ctr_t;

struct loopboxes {
    node_cfg_t node; /* a copy (the strings are the agent's config's, which outlives us) */
    int delay_ms, check_ms, max_devices;
    pthread_t thread;
    volatile int cancel; /* set once by loopboxes_free: an e2fsck running is killed, the pass
                            ends at the next box (read without the lock: loopbox_fsck polls it) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool poked, quit, have_state, dirty; /* under lock */
    want_t *wanted;                       /* under lock */
    size_t n_wanted;
    /* the thread's own */
    ctr_t *ctrs;
    size_t n_ctrs, cap_ctrs;
    size_t rr; /* the mounts of the next pass start with this container of the wanted table */
};

static bool quitting(loopboxes_t *l)
{
    return __atomic_load_n(&l->cancel, __ATOMIC_ACQUIRE) != 0;
}

/* ---- the wanted table ---------------------------------------------------------- */

static void wanted_free(want_t *w, size_t n)
{
    for (size_t i = 0; w && i < n; i++) {
        for (size_t j = 0; j < w[i].n; j++) {
            free(w[i].boxes[j].filename);
            free(w[i].boxes[j].mountpoint);
        }
        free(w[i].boxes);
    }
    free(w);
}

static int box_cmp(const void *a, const void *b)
{
    const want_box_t *x = a, *y = b;
    return strcmp(x->mountpoint, y->mountpoint);
}

/* The loopboxes of one container of the state; -1 when out of memory. */
static int want_copy(want_t *w, const spec_container_t *c)
{
    w->uid = (int)c->uid;
    w->boxes = calloc(c->n_loopboxes ? c->n_loopboxes : 1, sizeof *w->boxes);
    if (!w->boxes)
        return -1;
    for (size_t j = 0; j < c->n_loopboxes; j++) {
        const spec_loopbox_t *s = &c->loopboxes[j];
        if (!s->filename || !s->mountpoint)
            continue; /* the API always sends both; a broken element is skipped */
        want_box_t *b = &w->boxes[w->n++];
        b->id = s->id;
        b->ro = s->ro;
        b->filename = strdup(s->filename);
        b->mountpoint = strdup(s->mountpoint);
        if (!b->filename || !b->mountpoint)
            return -1;
    }
    qsort(w->boxes, w->n, sizeof *w->boxes, box_cmp);
    return 0;
}

static want_t *wanted_copy(const spec_state_t *state, size_t *n)
{
    *n = 0;
    want_t *w = calloc(state->n_containers ? state->n_containers : 1, sizeof *w);
    for (size_t i = 0; w && i < state->n_containers; i++) {
        const spec_container_t *c = &state->containers[i];
        if (c->uid <= UID_BASE || c->uid > INT_MAX || c->error)
            continue; /* the supervisor does not run it either (nor is its state dir its own) */
        if (want_copy(&w[(*n)++], c) < 0) {
            wanted_free(w, *n);
            return NULL;
        }
    }
    return w;
}

/* ---- the thread's records ------------------------------------------------------ */

static void box_clear(box_t *b)
{
    free(b->filename);
    free(b->mountpoint);
    memset(b, 0, sizeof *b);
}

static ctr_t *ctr_find(loopboxes_t *l, int uid)
{
    for (size_t i = 0; i < l->n_ctrs; i++)
        if (l->ctrs[i].uid == uid)
            return &l->ctrs[i];
    return NULL;
}

static ctr_t *ctr_get(loopboxes_t *l, int uid)
{
    ctr_t *found = ctr_find(l, uid);
    if (found)
        return found;
    ctr_t *v = array_room(l->ctrs, l->n_ctrs, &l->cap_ctrs, sizeof *v);
    if (!v)
        return NULL;
    l->ctrs = v;
    ctr_t *c = &l->ctrs[l->n_ctrs++];
    memset(c, 0, sizeof *c);
    c->uid = uid;
    return c;
}

static void ctr_free(ctr_t *c)
{
    for (size_t j = 0; j < c->n; j++)
        box_clear(&c->boxes[j]);
    free(c->boxes);
    free(c->cgroup);
}

static box_t *box_find(ctr_t *c, long long id)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->boxes[i].id == id)
            return &c->boxes[i];
    return NULL;
}

static box_t *box_get(ctr_t *c, const want_box_t *w)
{
    box_t *found = box_find(c, w->id);
    if (found)
        return found;
    box_t *v = array_room(c->boxes, c->n, &c->cap, sizeof *v);
    if (!v)
        return NULL;
    c->boxes = v;
    box_t *b = &c->boxes[c->n];
    memset(b, 0, sizeof *b);
    b->id = w->id;
    b->ro = w->ro;
    b->filename = strdup(w->filename);
    b->mountpoint = strdup(w->mountpoint);
    if (!b->filename || !b->mountpoint) {
        box_clear(b);
        return NULL;
    }
    c->n++;
    return b;
}

/* Drops the boxes that are neither listed nor mounted. */
static void ctr_compact(ctr_t *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->boxes[i].listed || c->boxes[i].mounted)
            c->boxes[k++] = c->boxes[i];
        else
            box_clear(&c->boxes[i]);
    }
    c->n = k;
}

/* ---- log lines ----------------------------------------------------------------- */

/* One event: a line in the container's logs/emperor.log and in the node's log. */
static void event(loopboxes_t *l, const ctr_t *c, const box_t *b, bool warn, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));
static void event(loopboxes_t *l, const ctr_t *c, const box_t *b, bool warn, const char *fmt, ...)
{
    char line[1024], who[64], home[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    snprintf(who, sizeof who, "loopbox %lld", b->id);
    snprintf(home, sizeof home, "%s/%d", l->node.containers_dir, c->uid);
    if (home_append_log(home, c->uid, EMPEROR_LOG, who, line, 0) < 0)
        log_warn("container %d: %s: cannot write to its %s: %s", c->uid, who, EMPEROR_LOG,
                 strerror(errno));
    log_msg(warn ? LOG_WARN : LOG_INFO, "container %d: %s: %s", c->uid, who, line);
}

/* ---- the records file ---------------------------------------------------------- */

static int records_path(const loopboxes_t *l, int uid, char *out, size_t len)
{
    err_t e;
    err_clear(&e);
    return state_path(l->node.state_dir, uid, LOOPBOXES_FILE, out, len, &e);
}

static json_t *box_json(const box_t *b)
{
    return json_pack("{s:I,s:s,s:s,s:b,s:I,s:s,s:I,s:I,s:I}", "id", (json_int_t)b->id,
                     "filename", b->filename, "mountpoint", b->mountpoint, "ro", b->ro,
                     "mnt_id", (json_int_t)b->m.mnt_id, "dev", b->m.dev, "img_dev",
                     (json_int_t)b->m.img_dev, "img_ino", (json_int_t)b->m.img_ino, "img_size",
                     (json_int_t)b->m.img_size);
}

/* What is mounted now, for the next daemon; no file when nothing is. */
static void records_save(loopboxes_t *l, const ctr_t *c)
{
    char path[4096];
    if (records_path(l, c->uid, path, sizeof path) < 0)
        return;
    json_t *list = json_array(), *all = NULL;
    size_t n = 0;
    for (size_t i = 0; list && i < c->n; i++) {
        if (!c->boxes[i].mounted)
            continue;
        n++;
        if (json_array_append_new(list, box_json(&c->boxes[i])) < 0) {
            json_decref(list); /* a partial record would lose a mount: the old one stays */
            list = NULL;
        }
    }
    if (n == 0) {
        json_decref(list);
        if (unlink(path) < 0 && errno != ENOENT)
            log_warn("container %d: remove %s: %s", c->uid, path, strerror(errno));
        return;
    }
    all = list ? json_pack("{s:i,s:I,s:o}", "pid", (int)c->init.pid, "starttime",
                           (json_int_t)c->init.starttime, "loopboxes", list)
               : NULL;
    char *text = all ? json_dumps(all, JSON_COMPACT) : NULL;
    err_t e;
    err_clear(&e);
    if (!text)
        log_error("container %d: record its loopboxes: out of memory", c->uid);
    else if (fs_write_atomic(path, text, strlen(text), 0600, &e) < 0)
        log_error("container %d: record its loopboxes: %s", c->uid, e.msg);
    free(text);
    json_decref(all);
}

/* One recorded mount, adopted when it is still in the init's namespace. */
static void adopt_one(ctr_t *c, const json_t *r)
{
    const char *fn = json_string_value(json_object_get(r, "filename"));
    const char *mp = json_string_value(json_object_get(r, "mountpoint"));
    const char *dev = json_string_value(json_object_get(r, "dev"));
    loopbox_mnt_t m = {
        .mnt_id = (unsigned long long)json_integer_value(json_object_get(r, "mnt_id")),
        .img_dev = (dev_t)json_integer_value(json_object_get(r, "img_dev")),
        .img_ino = (ino_t)json_integer_value(json_object_get(r, "img_ino")),
        .img_size = json_integer_value(json_object_get(r, "img_size"))};
    if (!fn || !mp || !dev || !m.mnt_id ||
        snprintf(m.dev, sizeof m.dev, "%s", dev) >= (int)sizeof m.dev ||
        loopbox_present(&c->init, &m) != 1)
        return;
    want_box_t w = {.id = json_integer_value(json_object_get(r, "id")),
                    .filename = (char *)fn,
                    .mountpoint = (char *)mp,
                    .ro = json_is_true(json_object_get(r, "ro"))};
    box_t *b = box_get(c, &w);
    if (!b)
        return;
    b->mounted = true;
    b->m = m;
    log_info("container %d: loopbox %lld: %s on %s (%s, mount %llu) adopted", c->uid, b->id, fn,
             mp, b->m.dev, m.mnt_id);
}

/* The first look at a running container: the mounts an earlier daemon
 * made for this same init are adopted; records of another init (the
 * container restarted: its namespace is gone) are dropped. */
static void adopt(loopboxes_t *l, ctr_t *c)
{
    char path[4096];
    if (records_path(l, c->uid, path, sizeof path) < 0)
        return;
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (access(path, F_OK) == 0)
            log_warn("container %d: %s is unreadable (%s): its loopboxes are mounted afresh",
                     c->uid, path, je.text);
        return;
    }
    long long pid = json_integer_value(json_object_get(j, "pid"));
    unsigned long long st = (unsigned long long)json_integer_value(json_object_get(j, "starttime"));
    const json_t *list = json_object_get(j, "loopboxes");
    size_t i;
    const json_t *r;
    if (pid == c->init.pid && st == c->init.starttime)
        json_array_foreach(list, i, r) adopt_one(c, r);
    json_decref(j);
    records_save(l, c);
}

/* ---- the image watch ----------------------------------------------------------- */

static ident_t ident_of(const struct stat *sb)
{
    return (ident_t){.exists = true,
                     .dev = sb->st_dev,
                     .ino = sb->st_ino,
                     .mode = sb->st_mode,
                     .size = sb->st_size,
                     .mtime_ns = sb->st_mtim.tv_sec * 1000000000LL + sb->st_mtim.tv_nsec};
}

/* The image's identity as the host's home shows it, never following a
 * symlink (a link is seen as itself).  false only when the home cannot be
 * looked at (the container stopped meanwhile). */
static bool image_look(const loopboxes_t *l, const ctr_t *c, const box_t *b, ident_t *out)
{
    memset(out, 0, sizeof *out);
    char home[4096];
    snprintf(home, sizeof home, "%s/%d", l->node.containers_dir, c->uid);
    int dir = open(home, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return false;
    int fd = beneath_open(dir, b->filename, O_PATH | O_NOFOLLOW, 0, 0);
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0)
        *out = ident_of(&sb);
    if (fd >= 0)
        close(fd);
    close(dir);
    return true;
}

static bool ident_eq(const ident_t *a, const ident_t *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->mode == b->mode &&
           a->size == b->size && a->mtime_ns == b->mtime_ns;
}

static void unmount_box(loopboxes_t *l, ctr_t *c, box_t *b, const char *why, long long delay_s)
{
    err_t e;
    err_clear(&e);
    if (loopbox_unmount(&c->init, c->uid, b->mountpoint, &b->m, &e) < 0) {
        log_warn("container %d: loopbox %lld: unmount %s: %s (trying again)", c->uid, b->id,
                 b->mountpoint, e.msg);
        return;
    }
    b->mounted = false;
    records_save(l, c);
    if (delay_s > 0)
        event(l, c, b, false,
              "%s unmounted: %s; mounted again in %lld s if its filesystem is sound",
              b->filename, why, delay_s);
    else
        event(l, c, b, false, "%s unmounted: %s", b->filename, why);
}

/* A mounted loopbox: its image deleted or replaced, or resized. */
static void watch_mounted(loopboxes_t *l, ctr_t *c, box_t *b, const ident_t *now)
{
    bool same = now->exists && S_ISREG(now->mode) && now->dev == b->m.img_dev &&
                now->ino == b->m.img_ino;
    if (same && now->size == b->m.img_size)
        return;
    b->due_ms = now_ms() + l->delay_ms;
    if (same) {
        unmount_box(l, c, b, "the image was resized", l->delay_ms / 1000);
    } else {
        unmount_box(l, c, b, "the image was deleted", 0);
        b->missing_logged = !now->exists; /* that line said it: no "not mounted yet" */
    }
}

/* The image changed: what was said of the earlier one may be said again. */
static void forget_said(box_t *b)
{
    b->said[0] = '\0';
    b->fsck_said[0] = '\0';
}

/* A refusal, logged once per image (identity, size, mtime). */
static void refuse(loopboxes_t *l, ctr_t *c, box_t *b, const ident_t *at, const char *why)
{
    if (b->refused && ident_eq(&b->refused_at, at))
        return;
    b->refused = true;
    b->refused_at = *at;
    event(l, c, b, true, "%s not mounted: %s", b->filename, why);
}

/* Not mounted for now (a wait, or the mountpoint or the kernel refused):
 * one line per reason, until it is mounted or the image changes. */
static void say_once(loopboxes_t *l, ctr_t *c, box_t *b, const char *why)
{
    if (strcmp(b->said, why) == 0)
        return;
    snprintf(b->said, sizeof b->said, "%s", why);
    event(l, c, b, true, "%s not mounted: %s", b->filename, why);
}

/* Whether something outside the image keeps it from being mounted now: a
 * loop device still backing it (a lazily detached mount a process uses, or
 * the old namespace of a restarted container, going), or the container at
 * loopbox_max devices.  Checked before e2fsck, so a wait costs no e2fsck
 * per second; said once, tried again at every pass. */
static bool must_wait(loopboxes_t *l, ctr_t *c, box_t *b, const struct stat *sb)
{
    char dev[64], why[256];
    int n;
    if (loopdev_find(sb->st_dev, sb->st_ino, dev, sizeof dev) == 0)
        snprintf(why, sizeof why,
                 "the image is still in use (%s backs it: an earlier mount a process keeps "
                 "busy); it is mounted once that is free",
                 dev);
    else if (l->max_devices > 0 && (n = loopbox_devices_of(c->uid)) >= l->max_devices)
        snprintf(why, sizeof why,
                 "the container has %d loopboxes on loop devices already, this node's limit "
                 "(loopbox_max); it is mounted once one goes",
                 n);
    else
        return false;
    say_once(l, c, b, why);
    return true;
}

/* e2fsck could not run (or was cancelled): no verdict on the image, so it
 * is tried again after the remount delay; said once in the node's log. */
static void fsck_not_run(loopboxes_t *l, ctr_t *c, box_t *b, const char *msg)
{
    if (quitting(l))
        return;
    b->due_ms = now_ms() + l->delay_ms;
    if (strcmp(b->fsck_said, msg) == 0)
        return;
    snprintf(b->fsck_said, sizeof b->fsck_said, "%s", msg);
    log_warn("container %d: loopbox %lld: e2fsck on %s could not run: %s (trying again in %d s)",
             c->uid, b->id, b->filename, msg, l->delay_ms / 1000);
}

/* The image is open and is the one looked at: fsck, then mount.  true
 * when e2fsck ran (the container's turn of this pass is over). */
static bool mount_open(loopboxes_t *l, ctr_t *c, box_t *b, int img, const struct stat *sb)
{
    if (must_wait(l, c, b, sb))
        return false;
    char msg[512], why[640];
    int rc = loopbox_fsck(img, c->uid, c->cgroup, LOOPBOX_FSCK_TIMEOUT_MS, &l->cancel, msg,
                          sizeof msg);
    if (rc < 0) {
        fsck_not_run(l, c, b, msg);
        return true;
    }
    if (rc > 0) {
        snprintf(why, sizeof why, "e2fsck -n found errors: %s", msg);
        refuse(l, c, b, &b->last, why);
        return true;
    }
    err_t e;
    err_clear(&e);
    if (loopbox_mount(&c->init, c->uid, b->id, img, sb, b->mountpoint, b->ro, l->max_devices,
                      &b->m, &e) < 0) {
        /* Its cause may lie outside the image (a symlink on the mountpoint's
         * path, a device still labelled for this loopbox), and e2fsck ran:
         * tried again after the remount delay.  The attempt wrote the
         * superblock (its mtime): that is no change of the customer's. */
        b->due_ms = now_ms() + l->delay_ms;
        say_once(l, c, b, e.msg);
        ident_t after;
        if (image_look(l, c, b, &after))
            b->last = after;
        return true;
    }
    b->mounted = true;
    b->refused = false;
    forget_said(b);
    records_save(l, c);
    event(l, c, b, false, "%s mounted on %s (%s)", b->filename, b->mountpoint,
          b->ro ? "read-only" : "read-write");
    return true;
}

/* Whether a listed loopbox is to be tried in this pass. */
static bool box_ready(const box_t *b, long long t)
{
    return b->listed && !b->mounted && b->looked && t >= b->due_ms &&
           (b->last.exists || !b->missing_logged) &&
           !(b->refused && ident_eq(&b->refused_at, &b->last));
}

/* true when e2fsck ran. */
static bool try_mount(loopboxes_t *l, ctr_t *c, box_t *b)
{
    char home[4096];
    snprintf(home, sizeof home, "%s/%d", l->node.containers_dir, c->uid);
    struct stat sb;
    err_t e;
    err_clear(&e);
    int img = loopbox_open_image(home, c->uid, b->filename, b->ro, &sb, &e);
    if (img < 0) {
        if (e.kind != ERR_NOTFOUND)
            refuse(l, c, b, &b->last, e.msg);
        else if (!b->missing_logged)
            event(l, c, b, false, "%s not mounted yet: %s (it is mounted when it appears)",
                  b->filename, e.msg);
        b->missing_logged = e.kind == ERR_NOTFOUND;
        return false;
    }
    b->missing_logged = false;
    /* Changed since the look (an e2fsck of another container took a while):
     * the remount delay starts again, so a copy in progress is never mounted. */
    ident_t now = ident_of(&sb);
    bool ran = false;
    if (!ident_eq(&b->last, &now)) {
        b->last = now;
        b->due_ms = now_ms() + l->delay_ms;
        forget_said(b);
    } else {
        ran = mount_open(l, c, b, img, &sb);
    }
    close(img);
    return ran;
}

/* A listed loopbox's image looked at; a mounted one whose image went or
 * changed size is unmounted. */
static void look(loopboxes_t *l, ctr_t *c, box_t *b)
{
    ident_t now;
    b->looked = image_look(l, c, b, &now);
    if (!b->looked)
        return;
    bool changed = b->watched && !ident_eq(&b->last, &now);
    b->watched = true;
    b->last = now;
    if (changed)
        forget_said(b);
    if (b->mounted)
        watch_mounted(l, c, b, &now);
    else if (changed) /* wait for it to settle; the first look mounts at once */
        b->due_ms = now_ms() + l->delay_ms;
}

/* ---- one pass ------------------------------------------------------------------ */

/* Which init runs the container now; false when none does. */
static bool init_of(const loopboxes_t *l, int uid, state_t *st)
{
    return state_load(l->node.state_dir, uid, st, NULL) > 0 && state_init_alive(st);
}

static bool box_is(const box_t *b, const want_box_t *w)
{
    return b->id == w->id && b->ro == w->ro && strcmp(b->filename, w->filename) == 0 &&
           strcmp(b->mountpoint, w->mountpoint) == 0;
}

/* The container's init changed (or it stopped): its namespace took its
 * mounts along; autoclear frees their loop devices. */
static void init_changed(loopboxes_t *l, ctr_t *c, const state_t *st)
{
    bool first = c->init.pid == 0;
    for (size_t i = 0; i < c->n; i++) {
        c->boxes[i].mounted = false;
        c->boxes[i].due_ms = 0; /* a fresh namespace: mount at once */
        forget_said(&c->boxes[i]);
    }
    c->init.pid = st ? st->pid : 0;
    c->init.starttime = st ? st->starttime : 0;
    if (st && first)
        adopt(l, c);
    else
        records_save(l, c);
}

/* The state's cgroup directory, for e2fsck (kept when out of memory: the
 * cgroup only adds a limit). */
static void keep_cgroup(ctr_t *c, const state_t *st)
{
    if (c->cgroup && strcmp(c->cgroup, st->cgroup) == 0)
        return;
    char *g = strdup(st->cgroup);
    if (!g)
        return;
    free(c->cgroup);
    c->cgroup = g;
}

/* The first half of a pass, for one container: whether it runs, what must
 * be unmounted (no longer listed, image deleted or resized), the images
 * looked at.  Cheap: no e2fsck. */
static void look_container(loopboxes_t *l, const want_t *w)
{
    ctr_t *c = ctr_get(l, w->uid);
    if (!c) {
        log_error("loopboxes: out of memory");
        return;
    }
    state_t st;
    c->alive = init_of(l, w->uid, &st);
    if (!c->alive) {
        if (c->init.pid)
            init_changed(l, c, NULL);
        return;
    }
    keep_cgroup(c, &st);
    if (c->init.pid != st.pid || c->init.starttime != st.starttime)
        init_changed(l, c, &st);
    /* Unlisted (or changed: the API never changes one, but a recreated id
     * could) mounts go first, children before parents. */
    for (size_t i = c->n; i-- > 0;) {
        box_t *b = &c->boxes[i];
        b->listed = false;
        for (size_t j = 0; j < w->n && !b->listed; j++)
            b->listed = box_is(b, &w->boxes[j]);
        if (!b->listed && b->mounted)
            unmount_box(l, c, b, "the loopbox was deleted (the image is untouched)", 0);
    }
    ctr_compact(c);
    for (size_t j = 0; j < w->n && !quitting(l); j++) {
        box_t *b = box_get(c, &w->boxes[j]);
        if (!b) {
            log_error("loopboxes: out of memory");
            return;
        }
        b->listed = true;
        look(l, c, b);
    }
}

/* The second half, for one container: its loopboxes not mounted, in the
 * order of their mountpoints (a parent before its child), with at most one
 * e2fsck.  true when one ran; *more when another loopbox was ready. */
static bool mount_container(loopboxes_t *l, ctr_t *c, const want_t *w, bool *more)
{
    bool ran = false;
    for (size_t j = 0; j < w->n && !quitting(l); j++) {
        box_t *b = box_find(c, w->boxes[j].id);
        if (!b || !box_ready(b, now_ms()))
            continue;
        if (ran) {
            *more = true;
            break;
        }
        ran = try_mount(l, c, b);
    }
    return ran;
}

/* Containers no longer in the state: forgotten once they stopped (the
 * supervisor stops them; their mounts go with their namespace). */
static void forget_gone(loopboxes_t *l, const want_t *w, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < l->n_ctrs; i++) {
        ctr_t *c = &l->ctrs[i];
        bool wanted = false;
        for (size_t j = 0; j < n && !wanted; j++)
            wanted = w[j].uid == c->uid;
        state_t st;
        if (!wanted && !init_of(l, c->uid, &st)) {
            ctr_free(c);
            continue;
        }
        l->ctrs[k++] = *c;
    }
    l->n_ctrs = k;
}

/* The mounts, containers taken round robin from where the last pass
 * stopped.  Once e2fsck took longer than the watch's period the pass ends
 * after that container, so the unmounts due meanwhile (of any container)
 * come before the next one's e2fsck.  true: more to do at once. */
static bool mount_all(loopboxes_t *l, const want_t *w, size_t n)
{
    long long start = now_ms();
    bool more = false;
    size_t first = n ? l->rr % n : 0;
    for (size_t k = 0; k < n && !quitting(l); k++) {
        size_t i = (first + k) % n;
        ctr_t *c = ctr_find(l, w[i].uid);
        if (!c || !c->alive)
            continue;
        if (mount_container(l, c, &w[i], &more) && now_ms() - start >= l->check_ms) {
            l->rr = (i + 1) % n;
            return true;
        }
    }
    return more;
}

/* One pass: every unmount due, for all containers, then the mounts.
 * true when it stopped with more to do (the next one starts at once). */
static bool pass(loopboxes_t *l, const want_t *w, size_t n)
{
    for (size_t i = 0; i < n && !quitting(l); i++)
        look_container(l, &w[i]);
    if (quitting(l))
        return false;
    forget_gone(l, w, n);
    return mount_all(l, w, n);
}

/* ---- the thread ---------------------------------------------------------------- */

/* Waits for a poke, a new state or the watch's period (not when now:
 * the first turn, or a pass left more to do); false to quit.  *w is replaced by a copy of the wanted
 * table when it changed; *ready: a state came (before the first one,
 * nothing is done: a listed loopbox cannot be told from a deleted one). */
static bool wait_turn(loopboxes_t *l, want_t **w, size_t *n, bool now, bool *ready)
{
    pthread_mutex_lock(&l->lock);
    struct timespec until = clock_after_ms(l->check_ms);
    while (!now && !l->quit && !l->poked && !l->dirty)
        if (pthread_cond_timedwait(&l->cond, &l->lock, &until) == ETIMEDOUT)
            break;
    l->poked = false;
    want_t *take = l->dirty ? l->wanted : NULL;
    size_t nt = l->n_wanted;
    if (l->dirty) {
        l->wanted = NULL;
        l->n_wanted = 0;
        l->dirty = false;
    }
    bool quit = l->quit;
    *ready = l->have_state;
    pthread_mutex_unlock(&l->lock);
    if (take) {
        wanted_free(*w, *n);
        *w = take;
        *n = nt;
    }
    return !quit;
}

static void *thread_main(void *arg)
{
    loopboxes_t *l = arg;
    want_t *w = NULL;
    size_t n = 0;
    bool ready, now = true;
    while (wait_turn(l, &w, &n, now, &ready))
        now = ready && pass(l, w, n);
    wanted_free(w, n);
    return NULL;
}

/* ---- the main loop's side ------------------------------------------------------ */

loopboxes_t *loopboxes_new(const loopboxes_opts_t *o, err_t *e)
{
    loopboxes_t *l = calloc(1, sizeof *l);
    if (!l) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    l->node = *o->node;
    l->delay_ms = (o->remount_delay_s > 0 ? o->remount_delay_s
                                          : LOOPBOXES_DEFAULT_REMOUNT_DELAY_S) * 1000;
    l->check_ms = o->check_ms > 0 ? o->check_ms : LOOPBOXES_CHECK_MS;
    l->max_devices = o->max_devices > 0 ? o->max_devices : LOOPBOXES_DEFAULT_MAX;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0)
        rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0 && (rc = pthread_mutex_init(&l->lock, NULL)) != 0)
        pthread_cond_destroy(&l->cond);
    if (rc != 0) {
        free(l);
        err_set(e, ERR_INTERNAL, "loopboxes: a condition variable: %s", strerror(rc));
        return NULL;
    }
    if ((rc = pthread_create(&l->thread, NULL, thread_main, l)) != 0) {
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->cond);
        free(l);
        err_set(e, ERR_INTERNAL, "loopboxes: start the thread: %s", strerror(rc));
        return NULL;
    }
    return l;
}

void loopboxes_free(loopboxes_t *l)
{
    if (!l)
        return;
    __atomic_store_n(&l->cancel, 1, __ATOMIC_RELEASE); /* an e2fsck running is killed */
    pthread_mutex_lock(&l->lock);
    l->quit = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    wanted_free(l->wanted, l->n_wanted);
    for (size_t i = 0; i < l->n_ctrs; i++)
        ctr_free(&l->ctrs[i]);
    free(l->ctrs);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    free(l);
}

void loopboxes_set_state(loopboxes_t *l, const spec_state_t *state)
{
    if (!l || !state)
        return;
    size_t n;
    want_t *w = wanted_copy(state, &n);
    if (!w) {
        log_error("loopboxes: out of memory: the new state's loopboxes are not followed");
        return;
    }
    pthread_mutex_lock(&l->lock);
    want_t *old = l->wanted;
    size_t n_old = l->n_wanted;
    l->wanted = w;
    l->n_wanted = n;
    l->dirty = true;
    l->have_state = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    wanted_free(old, n_old);
}

void loopboxes_poke(loopboxes_t *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->poked = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
}
