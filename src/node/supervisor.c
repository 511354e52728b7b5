/* supervisor.c - the node's containers, one record each (supervisor.h). */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "../runtime/cgroup.h"
#include "../runtime/home.h"
#include "../runtime/state.h"
#include "alarm_burst.h"
#include "nodestats.h"
#include "subgate.h"

/* A start refused by sv_hold_starts is tried again this often. */
#define HOLD_RETRY_MS 1000
/* After SIGKILL, how long before we say the init survives it. */
#define KILL_WAIT_MS 5000
/* Without pidfds (Linux < 5.3) a running init is checked this often. */
#define POLL_ALIVE_MS 1000
/* Consecutive deaths or failed starts that make a crash loop (1+2+4+8 s of
 * backoff between them): one "crashloop" alarm, re-armed by a good run. */
#define CRASHLOOP_AFTER 5
/* The epoll tag of a container's OOM watch (the pidfd's is the bare uid). */
#define OOM_TAG (1ULL << 40)
/* <state_dir>/<uid>/OOM_SEEN_FILE: the cgroup's oom_kill count already
 * alarmed, so kills while no daemon ran are reported after adoption. */
#define OOM_SEEN_FILE "oom_seen"

typedef enum {
    PH_STOPPED,  /* nothing runs */
    PH_RUNNING,  /* init pid runs generation run_gen */
    PH_STOPPING, /* SIGTERM sent; SIGKILL at deadline; then maybe start again */
    PH_WAITING,  /* a (re)start is due at deadline: backoff after a death or a failure */
} phase_t;

typedef struct {
    int uid;

    /* What the API wants. */
    bool wanted;
    bool have_spec;
    container_spec_t spec;
    char spec_error[512]; /* the API's object could not be read */
    char uuid[64];        /* the container's; its home is recorded as this one's */
    char refusal[512];    /* why this spec must not start (a foreign custom distro) */

    /* What runs. */
    phase_t phase;
    pid_t pid;
    int pidfd;  /* -1: none (not running, or no pidfd support) */
    bool child; /* started by this process: we reap it */
    long long run_gen, run_ssh_gen, keys_failed_gen;
    long long started_ms;

    long long deadline_ms; /* STOPPING: SIGKILL; WAITING: the start */
    bool killed;           /* STOPPING: SIGKILL sent */
    bool restart_after;    /* STOPPING: start again once stopped */
    bool needs_cleanup;    /* its init died unseen: cgroup and record to clean */

    int backoff;        /* consecutive deaths and failed starts */
    bool failed;        /* WAITING after a failed start (not a death) */
    bool held;          /* that failure was sv_hold_starts' refusal */
    long long wait_gen; /* the generation that failed or died */
    char last_error[512];
    char logged_error[512]; /* the last error logged, not to repeat it each retry */
    bool crash_alarmed;     /* the crash loop was alarmed: not again until it ran */

    int oomfd;          /* cgroup_oom_watch of the running container; -1: none */
    int oom_version;    /* its cgroup's version and memory directory */
    char *oom_dir;
    long long oom_seen; /* the oom_kill count already seen (alarmed, or in oom_burst) */
    alarm_burst_t oom_burst; /* kills not alarmed yet: one alarm per alarm_freq */
    long long alarm_freq_ms; /* the container's alarm_freq: the OOM alarms' window */
} rec_t;

struct supervisor {
    sv_opts_t o;
    int epfd; /* the pidfds of the inits */
    rec_t **recs;
    size_t n, cap;
    bool have_state; /* the API told us what it wants at least once */
    bool changed;

    /* Every container of this server, startable or not (the state's
     * server.all_containers): a home of any other uid is a deleted
     * container's.  Without the list (an older API) no home is retired. */
    int *existing;
    size_t n_existing;
    bool have_existing;
    long long purge_before; /* server.purge_deleted_before; 0: none */
    char hold[512];         /* sv_hold_starts: why no container may start now */
    bool housekeeping_due;  /* retire deleted homes, purge: after a state, a stop */
};

/* ---- records --------------------------------------------------------------- */

static rec_t *find(const supervisor_t *sv, int uid)
{
    for (size_t i = 0; i < sv->n; i++)
        if (sv->recs[i]->uid == uid)
            return sv->recs[i];
    return NULL;
}

static rec_t *find_pid(const supervisor_t *sv, pid_t pid)
{
    for (size_t i = 0; i < sv->n; i++) {
        rec_t *r = sv->recs[i];
        if (r->pid == pid && (r->phase == PH_RUNNING || r->phase == PH_STOPPING))
            return r;
    }
    return NULL;
}

static rec_t *get(supervisor_t *sv, int uid)
{
    rec_t *r = find(sv, uid);
    if (r)
        return r;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        rec_t **n = realloc(sv->recs, cap * sizeof *n);
        if (!n)
            return NULL;
        sv->recs = n;
        sv->cap = cap;
    }
    if (!(r = calloc(1, sizeof *r)))
        return NULL;
    r->uid = uid;
    r->pidfd = -1;
    r->oomfd = -1;
    alarm_burst_init(&r->oom_burst);
    r->alarm_freq_ms = alarm_freq_ms(0);
    sv->recs[sv->n++] = r;
    return r;
}

static void rec_free(rec_t *r)
{
    if (r->pidfd >= 0)
        close(r->pidfd);
    if (r->oomfd >= 0)
        close(r->oomfd);
    free(r->oom_dir);
    container_spec_free(&r->spec);
    free(r);
}

supervisor_t *sv_new(const sv_opts_t *o, err_t *e)
{
    supervisor_t *sv = calloc(1, sizeof *sv);
    if (!sv) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    sv->o = *o;
    sv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sv->epfd < 0) {
        err_set(e, ERR_INTERNAL, "epoll_create1: %s", strerror(errno));
        free(sv);
        return NULL;
    }
    return sv;
}

void sv_free(supervisor_t *sv)
{
    if (!sv)
        return;
    for (size_t i = 0; i < sv->n; i++)
        rec_free(sv->recs[i]);
    free(sv->recs);
    free(sv->existing);
    close(sv->epfd);
    free(sv);
}

int sv_fd(const supervisor_t *sv) { return sv->epfd; }

bool sv_take_changed(supervisor_t *sv)
{
    bool c = sv->changed;
    sv->changed = false;
    return c;
}

/* ---- watching an init -------------------------------------------------------- */

static void watch(supervisor_t *sv, rec_t *r)
{
    r->pidfd = pidfd_open(r->pid, 0);
    if (r->pidfd < 0) {
        log_warn("container %d: pidfd_open(%d): %s; checking it every %d ms instead", r->uid,
                 (int)r->pid, strerror(errno), POLL_ALIVE_MS);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (unsigned)r->uid};
    if (epoll_ctl(sv->epfd, EPOLL_CTL_ADD, r->pidfd, &ev) < 0) {
        log_warn("container %d: watch init %d: %s; checking it every %d ms instead", r->uid,
                 (int)r->pid, strerror(errno), POLL_ALIVE_MS);
        close(r->pidfd);
        r->pidfd = -1;
    }
}

static void unwatch(supervisor_t *sv, rec_t *r)
{
    if (r->pidfd < 0)
        return;
    epoll_ctl(sv->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
    close(r->pidfd);
    r->pidfd = -1;
}

static void send_signal(rec_t *r, int sig)
{
    int rc = r->pidfd >= 0 ? pidfd_send_signal(r->pidfd, sig, NULL, 0) : kill(r->pid, sig);
    if (rc < 0 && errno != ESRCH)
        log_error("container %d: signal %d to init %d: %s", r->uid, sig, (int)r->pid,
                  strerror(errno));
}

static void describe(int status, char *out, size_t len)
{
    if (status < 0)
        snprintf(out, len, "ended");
    else if (WIFSIGNALED(status))
        snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(out, len, "ended (status 0x%x)", (unsigned)status);
}

/* ---- system alarms: OOM kills, crash loops ------------------------------------------ */

/* alarms_raise (agent.c's on_alarm) counts it in NS_ALARMS_RAISED. */
static void raise_alarm(supervisor_t *sv, int uid, const char *cls, const char *msg)
{
    if (sv->o.on_alarm)
        sv->o.on_alarm(sv->o.alarm_ctx, uid, cls, msg);
    else
        log_warn("container %d: alarm %s (no alarm handler): %s", uid, cls, msg);
}

/* A start failed or an init died (r->backoff just grew). */
static void crashloop_check(supervisor_t *sv, rec_t *r)
{
    if (r->backoff < CRASHLOOP_AFTER) {
        r->crash_alarmed = false; /* it ran long enough, or something changed */
        return;
    }
    if (r->crash_alarmed)
        return;
    r->crash_alarmed = true;
    char msg[700];
    snprintf(msg, sizeof msg, "container %d failed %d times in a row and keeps being retried: %s",
             r->uid, r->backoff, r->last_error[0] ? r->last_error : "(no error recorded)");
    raise_alarm(sv, r->uid, "crashloop", msg);
}

static void oom_save(const supervisor_t *sv, const rec_t *r)
{
    char path[STATE_PATH_MAX], val[32];
    err_t e;
    err_clear(&e);
    int n = snprintf(val, sizeof val, "%lld\n", r->oom_seen);
    if (state_path(sv->o.node.state_dir, r->uid, OOM_SEEN_FILE, path, sizeof path, &e) < 0 ||
        fs_write_replace(path, val, (size_t)n, 0600, &e) < 0)
        log_error("container %d: record the OOM kills seen: %s", r->uid, e.msg);
}

/* What an earlier daemon saw of this cgroup's kills; -1 when unknown. */
static long long oom_load(const supervisor_t *sv, const rec_t *r)
{
    char path[STATE_PATH_MAX], buf[32];
    if (state_path(sv->o.node.state_dir, r->uid, OOM_SEEN_FILE, path, sizeof path, NULL) < 0)
        return -1;
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long long v = -1;
    if (fgets(buf, sizeof buf, f) && !str_to_ll(str_trim(buf), &v))
        v = -1;
    fclose(f);
    return v;
}

static long long oom_kills(const rec_t *r)
{
    cgroup_t cg; /* only the memory directory and the version are used */
    memset(&cg, 0, sizeof cg);
    cg.version = r->oom_version;
    snprintf(cg.dir, sizeof cg.dir, "%s", r->oom_dir);
    return cgroup_oom_kills(&cg);
}

/* The kills of r->oom_burst, when its window is open: one alarm (stored by
 * the API), one log line, one write of oom_seen (not synced: a count lost in
 * a crash is only alarmed again).  A container looping into its limit is
 * killed tens of times a second: each kill would otherwise cost all that. */
static void oom_report(supervisor_t *sv, rec_t *r, long long now)
{
    time_t since;
    long long n = alarm_burst_take(&r->oom_burst, now, r->alarm_freq_ms, &since);
    if (!n)
        return;
    oom_save(sv, r);
    char msg[300], limit[64] = "its memory limit", hms[16] = "?";
    struct tm tm;
    if (r->have_spec)
        snprintf(limit, sizeof limit, "its memory limit of %lld MB", r->spec.memory_mb);
    if (gmtime_r(&since, &tm))
        strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    if (n == 1)
        snprintf(msg, sizeof msg, "OOM: a process of container %d was killed because the "
                 "container reached %s", r->uid, limit);
    else
        snprintf(msg, sizeof msg, "OOM: %lld OOM kills since %s UTC: processes of container %d "
                 "were killed because the container reached %s", n, hms, r->uid, limit);
    log_warn("container %d: %s", r->uid, msg);
    raise_alarm(sv, r->uid, "oom", msg);
}

/* The watch woke (or the init ended): count new kills, alarm when due. */
static void oom_check(supervisor_t *sv, rec_t *r)
{
    if (r->oomfd < 0)
        return;
    cgroup_oom_drain(r->oomfd);
    long long kills = oom_kills(r);
    if (kills < 0 || kills <= r->oom_seen)
        return; /* the cgroup went (its removal wakes the watch too), or no new kill */
    long long n = kills - r->oom_seen;
    r->oom_seen = kills;
    nodestats_add(NS_OOM_KILLS, (unsigned long long)n);
    alarm_burst_add(&r->oom_burst, n, time(NULL));
    oom_report(sv, r, now_ms());
}

/* Watch the OOM kills of a container that runs; fresh: its cgroup was just
 * made (nothing seen), else adopted (what the last daemon saw). */
static void oom_watch(supervisor_t *sv, rec_t *r, bool fresh)
{
    err_t e;
    err_clear(&e);
    cgroup_t cg;
    if (cgroup_locate(sv->o.node.cgroup_root, sv->o.node.cgroup_parent, r->uid, &cg, &e) < 0) {
        log_warn("container %d: OOM kills are not watched: %s", r->uid, e.msg);
        return;
    }
    free(r->oom_dir);
    if (!(r->oom_dir = strdup(cg.dir))) {
        log_error("container %d: out of memory: OOM kills are not watched", r->uid);
        return;
    }
    r->oom_version = cg.version;
    int fd = cgroup_oom_watch(&cg, &e);
    if (fd < 0) {
        log_warn("container %d: OOM kills are not watched: %s", r->uid, e.msg);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = OOM_TAG | (unsigned)r->uid};
    if (epoll_ctl(sv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_warn("container %d: OOM kills are not watched: epoll_ctl: %s", r->uid,
                 strerror(errno));
        close(fd);
        return;
    }
    r->oomfd = fd;
    long long now = cgroup_oom_kills(&cg);
    long long seen = fresh ? 0 : oom_load(sv, r);
    if (seen > now && now >= 0)
        seen = now; /* a newer cgroup than the one recorded */
    r->oom_seen = seen >= 0 ? seen : now < 0 ? 0 : now; /* unknown: no past is alarmed */
    if (fresh || seen < 0)
        oom_save(sv, r);
    oom_check(sv, r); /* kills while no daemon ran */
}

static void oom_unwatch(supervisor_t *sv, rec_t *r)
{
    if (r->oomfd < 0)
        return;
    oom_check(sv, r); /* a kill may have ended the init itself */
    epoll_ctl(sv->epfd, EPOLL_CTL_DEL, r->oomfd, NULL);
    close(r->oomfd);
    r->oomfd = -1;
}

/* ---- start, stop, keys ---------------------------------------------------------- */

/* Log an error at most once while it repeats, at error level. */
static void log_once(rec_t *r, const char *step, const char *msg, long long retry_ms)
{
    if (strcmp(r->logged_error, msg) != 0) {
        log_error("container %d: %s: %s; retrying in %lld s", r->uid, step, msg,
                  retry_ms / 1000);
        snprintf(r->logged_error, sizeof r->logged_error, "%s", msg);
    } else {
        log_debug("container %d: %s: %s (again); retrying in %lld s", r->uid, step, msg,
                  retry_ms / 1000);
    }
}

static void start_failed(supervisor_t *sv, rec_t *r, const char *msg)
{
    long long delay = backoff_ms(++r->backoff);
    r->phase = PH_WAITING;
    r->failed = true;
    r->wait_gen = r->spec.generation;
    r->deadline_ms = now_ms() + delay;
    snprintf(r->last_error, sizeof r->last_error, "%s", msg);
    log_once(r, "start", msg, delay);
    sv->changed = true;
    if (msg != sv->hold) /* held starts are not the container's fault */
        crashloop_check(sv, r);
}

/* Take over an init that runs already (started by an earlier daemon). */
static bool adopt(supervisor_t *sv, rec_t *r, pid_t pid)
{
    state_t st;
    if (state_load(sv->o.node.state_dir, r->uid, &st, NULL) <= 0)
        return false;
    r->pid = pid;
    r->child = false;
    watch(sv, r);
    /* The pid may have been recycled between the check and pidfd_open:
     * check again now that the pidfd pins the process. */
    pid_t again = 0;
    if (!container_find(&sv->o.node, r->uid, &again) || again != pid) {
        unwatch(sv, r);
        r->pid = 0;
        return false;
    }
    r->phase = PH_RUNNING;
    r->run_gen = st.generation;
    r->run_ssh_gen = st.ssh_generation;
    long long age = (long long)time(NULL) - st.since;
    r->started_ms = now_ms() - (age > 0 ? age * 1000 : 0);
    r->needs_cleanup = false;
    oom_watch(sv, r, false);
    log_info("container %d: adopted (init pid %d, generation %lld, running for %lld s)", r->uid,
             (int)pid, st.generation, age > 0 ? age : 0);
    sv->changed = true;
    return true;
}

static bool host_distro_refused(const supervisor_t *sv, const rec_t *r, char *msg, size_t len)
{
    /* A custom distro is a customer's tree, never resolved here (following
     * its symlinks): the runtime boots it only as a real directory. */
    if (sv->o.distro_host_ok || !r->spec.rootfs || r->spec.rootfs_holder > 0)
        return false;
    char *real = realpath(r->spec.rootfs, NULL);
    bool host = real && strcmp(real, "/") == 0;
    free(real);
    if (host)
        snprintf(msg, len,
                 "distro %s is the node's own root filesystem, which this node does not "
                 "allow (distro_host_ok = false)",
                 r->spec.rootfs);
    return host;
}

/* The home must be this container's (home.h): never adopt one of another
 * or of nobody.  A home without a record is adopted only if this node ran
 * the uid before (its state directory knows it): homes from before the
 * records existed. */
static int claim_home(supervisor_t *sv, rec_t *r, err_t *e)
{
    if (!r->uuid[0])
        return 0; /* an API without uuids: nothing to compare */
    state_t st;
    bool known = state_load(sv->o.node.state_dir, r->uid, &st, NULL) > 0;
    int rc = home_claim(sv->o.node.containers_dir, r->uid, r->uuid, known, e);
    if (rc == HOME_CLAIM_MOVED)
        log_warn("container %d: the home there was not container %s's: moved to %s/%s/, a "
                 "fresh home is made",
                 r->uid, r->uuid, sv->o.node.containers_dir, HOME_DELETED_DIR);
    else if (rc == HOME_CLAIM_ADOPTED)
        log_info("container %d: home from before ownership records: recorded as container "
                 "%s's",
                 r->uid, r->uuid);
    return rc < 0 ? -1 : 0;
}

static void start(supervisor_t *sv, rec_t *r)
{
    err_t e;
    err_clear(&e);
    pid_t pid = 0;
    bool after_death = r->phase == PH_WAITING && !r->failed;
    if (container_find(&sv->o.node, r->uid, &pid) && adopt(sv, r, pid))
        return; /* running already (started by hand?): the next converge checks it */
    char msg[sizeof e.msg];
    if (sv->hold[0]) {
        start_failed(sv, r, sv->hold);
        r->held = true;
        r->deadline_ms = now_ms() + HOLD_RETRY_MS; /* not the backoff: it is not its fault */
        return;
    }
    r->held = false;
    if (host_distro_refused(sv, r, msg, sizeof msg)) {
        start_failed(sv, r, msg);
        return;
    }
    if (r->refusal[0]) {
        start_failed(sv, r, r->refusal);
        return;
    }
    if (claim_home(sv, r, &e) < 0) {
        start_failed(sv, r, e.msg);
        return;
    }
    if (container_start(&sv->o.node, &r->spec, &pid, &e) < 0) {
        nodestats_add(NS_START_FAILURES, 1);
        start_failed(sv, r, e.msg);
        return;
    }
    nodestats_add(NS_STARTS, 1); /* every start; NS_RESTARTS counts those after a death */
    if (after_death)
        nodestats_add(NS_RESTARTS, 1);
    r->phase = PH_RUNNING;
    r->pid = pid;
    r->child = true;
    r->run_gen = r->spec.generation;
    r->run_ssh_gen = r->spec.ssh_generation;
    r->started_ms = now_ms();
    r->failed = false;
    r->needs_cleanup = false;
    r->last_error[0] = r->logged_error[0] = '\0';
    watch(sv, r);
    oom_watch(sv, r, true);
    sv->changed = true;
    if (after_death) {
        state_t st;
        long long restarts = state_load(sv->o.node.state_dir, r->uid, &st, NULL) > 0
                                 ? st.restarts
                                 : 0;
        log_info("container %d: restarted after its init died (init pid %d, restart %lld)",
                 r->uid, (int)pid, restarts);
    } else {
        log_info("container %d: started (init pid %d, generation %lld, %lld MB, distro %s)",
                 r->uid, (int)pid, r->spec.generation, r->spec.memory_mb, r->spec.rootfs);
    }
}

/* The record of a container that does not run: cgroup removed, state
 * saying stopped (the home stays). */
static void clean(supervisor_t *sv, rec_t *r)
{
    err_t e;
    err_clear(&e);
    if (container_stop(&sv->o.node, r->uid, 0, &e) < 0)
        log_error("container %d: stop: %s", r->uid, e.msg);
    r->needs_cleanup = false;
}

static void begin_stop(supervisor_t *sv, rec_t *r, int timeout_ms, bool restart)
{
    r->restart_after = restart;
    r->phase = PH_STOPPING;
    r->killed = timeout_ms == 0;
    r->deadline_ms = now_ms() + (timeout_ms ? timeout_ms : KILL_WAIT_MS);
    send_signal(r, timeout_ms ? SIGTERM : SIGKILL);
    sv->changed = true;
}

static void finish_stop(supervisor_t *sv, rec_t *r)
{
    clean(sv, r);
    r->phase = PH_STOPPED;
    r->killed = false;
    sv->changed = true;
    bool again = r->restart_after && r->wanted && r->have_spec;
    if (!r->wanted)
        sv->housekeeping_due = true; /* its home may have to go */
    log_info("container %d: stopped%s", r->uid,
             again ? "; starting it again" : " (the home stays)");
    if (again) {
        r->backoff = 0;
        start(sv, r);
    }
}

/* The init of r ended; status is -1 when unknown (not our child). */
static void init_ended(supervisor_t *sv, rec_t *r, int status, bool reaped)
{
    if (r->child && !reaped) {
        int st;
        pid_t p;
        while ((p = waitpid(r->pid, &st, WNOHANG)) < 0 && errno == EINTR)
            ;
        if (p == r->pid)
            status = st;
    }
    unwatch(sv, r);
    oom_unwatch(sv, r);
    pid_t pid = r->pid;
    r->pid = 0;
    r->child = false;
    if (r->phase == PH_STOPPING) {
        finish_stop(sv, r);
        return;
    }
    char how[96];
    describe(status, how, sizeof how);
    long long ran = now_ms() - r->started_ms;
    sv->changed = true;
    if (!sv->have_state || !r->wanted || !r->have_spec) {
        log_warn("container %d: init %d %s after %lld s; not restarted (%s)", r->uid, (int)pid,
                 how, ran / 1000,
                 !sv->have_state ? "no state from the API yet" : "not wanted here any more");
        r->phase = PH_STOPPED;
        r->needs_cleanup = true;
        return;
    }
    if (ran >= BACKOFF_RESET_MS)
        r->backoff = 0;
    long long delay = backoff_ms(++r->backoff);
    r->phase = PH_WAITING;
    r->failed = false;
    r->wait_gen = r->run_gen;
    r->deadline_ms = now_ms() + delay;
    snprintf(r->last_error, sizeof r->last_error, "init %s; restarting", how);
    log_warn("container %d: init %d %s after %lld s; restarting it in %lld s", r->uid,
             (int)pid, how, ran / 1000, delay / 1000);
    crashloop_check(sv, r);
}

static void write_keys(supervisor_t *sv, rec_t *r)
{
    err_t e;
    err_clear(&e);
    if (r->keys_failed_gen == r->spec.ssh_generation)
        return; /* failed for this generation already: wait for the next one */
    if (container_write_keys(&sv->o.node, &r->spec, &e) < 0) {
        log_error("container %d: write the ssh keys: %s", r->uid, e.msg);
        r->keys_failed_gen = r->spec.ssh_generation;
        return;
    }
    log_info("container %d: ssh keys rewritten (ssh_generation %lld -> %lld, %zu keys), no "
             "restart",
             r->uid, r->run_ssh_gen, r->spec.ssh_generation, r->spec.n_ssh_keys);
    r->run_ssh_gen = r->spec.ssh_generation;
    sv->changed = true;
}

/* ---- events ------------------------------------------------------------------- */

static bool pidfd_ended(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

void sv_events(supervisor_t *sv)
{
    struct epoll_event evs[32];
    int n;
    while ((n = epoll_wait(sv->epfd, evs, 32, 0)) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        rec_t *r = find(sv, (int)(tag & ~OOM_TAG));
        /* An event may be stale: the init it was about already handled. */
        if (r && (tag & OOM_TAG))
            oom_check(sv, r);
        else if (r && r->pidfd >= 0 && pidfd_ended(r->pidfd))
            init_ended(sv, r, -1, false);
    }
}

void sv_reap(supervisor_t *sv)
{
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0 || (p < 0 && errno == EINTR)) {
        if (p < 0)
            continue;
        rec_t *r = find_pid(sv, p);
        if (r && r->child)
            init_ended(sv, r, status, true);
        else
            log_debug("reaped process %d", (int)p);
    }
}

/* Without a pidfd: is the init still there? */
static void poll_alive(supervisor_t *sv, rec_t *r)
{
    if (r->pidfd >= 0 || (r->phase != PH_RUNNING && r->phase != PH_STOPPING))
        return;
    if (r->child) {
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid)
            init_ended(sv, r, status, true);
        return;
    }
    pid_t pid;
    if (!container_find(&sv->o.node, r->uid, &pid) || pid != r->pid)
        init_ended(sv, r, -1, true);
}

/* ---- the API's state ------------------------------------------------------------- */

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* The customer (uuid) of container uid in the state: server.all_containers,
 * else the startable list; NULL when uid is no container of this server. */
static const char *customer_in_state(const spec_state_t *state, long long uid)
{
    for (size_t i = 0; i < state->server.n_all_containers; i++)
        if (state->server.all_containers[i].uid == uid)
            return nonempty(state->server.all_containers[i].customer);
    for (size_t i = 0; i < state->n_containers; i++)
        if (state->containers[i].uid == uid)
            return nonempty(state->containers[i].customer.uuid);
    return NULL;
}

/* A custom distro lives in its holder's home, which the holder's customer
 * writes: only a container of the same customer on this server may boot it
 * (a holder deleted, moved or of someone else leaves it dangling). */
static void check_custom_distro(rec_t *r, const spec_container_t *c, const spec_state_t *state)
{
    r->refusal[0] = '\0';
    const spec_rootfs_t *rootfs = &c->rootfs;
    if (!nonempty(rootfs->kind) || strcmp(rootfs->kind, "custom") != 0)
        return;
    long long holder = rootfs->holder_uid;
    const char *mine = nonempty(c->customer.uuid);
    const char *theirs = customer_in_state(state, holder);
    const char *said = nonempty(rootfs->holder_customer);
    if (mine && theirs && strcmp(mine, theirs) == 0 && (!said || strcmp(said, mine) == 0))
        return;
    snprintf(r->refusal, sizeof r->refusal,
             "custom distro %lld: its holder, container %lld, is not a container of the same "
             "customer on this server; refusing to boot it",
             rootfs->id, holder);
}

static void want(supervisor_t *sv, const spec_container_t *c, const spec_state_t *state)
{
    if (c->uid <= UID_BASE || c->uid > INT_MAX) {
        log_error("node state: a container without a valid uid; ignored");
        return;
    }
    rec_t *r = get(sv, (int)c->uid);
    if (!r) {
        log_error("container %d: out of memory", (int)c->uid);
        return;
    }
    r->wanted = true;
    r->alarm_freq_ms = alarm_freq_ms(c->alarms.freq);
    const char *uuid = nonempty(c->uuid);
    snprintf(r->uuid, sizeof r->uuid, "%s", uuid && strlen(uuid) < sizeof r->uuid ? uuid : "");
    check_custom_distro(r, c, state);
    err_t e;
    err_clear(&e);
    container_spec_t spec;
    if (spec_runtime(c, &state->server, &sv->o.node, &spec, &e) < 0) {
        if (strcmp(r->spec_error, e.msg) != 0)
            log_error("container %d: the API's description cannot be used: %s%s", r->uid,
                      e.msg, r->have_spec ? " (keeping the previous one)" : "");
        snprintf(r->spec_error, sizeof r->spec_error, "%s", e.msg);
        return;
    }
    subgate_cluster_endpoint(state, sv->o.cluster_port, spec.cluster, sizeof spec.cluster);
    container_spec_free(&r->spec);
    r->spec = spec;
    r->have_spec = true;
    r->spec_error[0] = '\0';
}

/* server.all_containers (uids) and server.purge_deleted_before. */
static void set_existing(supervisor_t *sv, const spec_server_t *server)
{
    sv->purge_before = server->purge_deleted_before;
    sv->housekeeping_due = true;
    free(sv->existing);
    sv->existing = NULL;
    sv->n_existing = 0;
    sv->have_existing = false;
    if (!server->has_all_containers)
        return;
    size_t n = server->n_all_containers;
    if (n && !(sv->existing = calloc(n, sizeof *sv->existing))) {
        log_error("node state: out of memory; no home is retired this time");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        long long uid = server->all_containers[i].uid;
        if (uid > UID_BASE && uid <= INT_MAX)
            sv->existing[sv->n_existing++] = (int)uid;
    }
    sv->have_existing = true;
}

void sv_set_state(supervisor_t *sv, const spec_state_t *state)
{
    for (size_t i = 0; i < sv->n; i++)
        sv->recs[i]->wanted = false;
    set_existing(sv, &state->server);
    for (size_t i = 0; i < state->n_containers; i++)
        want(sv, &state->containers[i], state);
    if (!sv->have_state)
        log_info("node state received: %zu containers wanted here", state->n_containers);
    else
        log_debug("node state %s: %zu containers wanted here", state->version,
                  state->n_containers);
    sv->have_state = true;
    sv->changed = true; /* report after every state, e.g. when the API is back */
}

void sv_hold_starts(supervisor_t *sv, const char *why)
{
    bool was = sv->hold[0] != '\0';
    snprintf(sv->hold, sizeof sv->hold, "%s", why ? why : "");
    if (!was || sv->hold[0])
        return;
    /* Released: what waited for it starts now, its backoff forgotten. */
    for (size_t i = 0; i < sv->n; i++) {
        rec_t *r = sv->recs[i];
        if (r->phase == PH_WAITING && r->held) {
            r->deadline_ms = now_ms();
            r->backoff = 0;
            r->held = false;
        }
    }
}

/* ---- converge ----------------------------------------------------------------- */

static void converge_one(supervisor_t *sv, rec_t *r, long long now)
{
    poll_alive(sv, r);
    if (r->phase == PH_STOPPING) {
        r->restart_after = r->restart_after && r->wanted && r->have_spec;
        if (now >= r->deadline_ms) {
            if (!r->killed)
                log_msg(r->restart_after ? LOG_INFO : LOG_WARN,
                        "container %d: init %d still runs %d ms after SIGTERM: SIGKILL", r->uid,
                        (int)r->pid,
                        r->restart_after ? sv->o.restart_grace_ms : sv->o.stop_timeout_ms);
            else
                log_error("container %d: stop: init %d survives SIGKILL", r->uid, (int)r->pid);
            r->killed = true;
            r->deadline_ms = now + KILL_WAIT_MS;
            send_signal(r, SIGKILL);
        }
        return;
    }
    if (!sv->have_state)
        return; /* nothing is started or stopped before the API said what it wants */
    switch (r->phase) {
    case PH_RUNNING:
        if (!r->wanted) {
            log_info("container %d: no longer wanted here: stopping it (the home stays)",
                     r->uid);
            begin_stop(sv, r, sv->o.stop_timeout_ms, false);
        } else if (!r->have_spec) {
            /* keep it running as it is */
        } else if (r->run_gen != r->spec.generation) {
            log_info("container %d: generation %lld -> %lld: restarting it", r->uid, r->run_gen,
                     r->spec.generation);
            begin_stop(sv, r, sv->o.restart_grace_ms, true);
        } else if (r->run_ssh_gen != r->spec.ssh_generation) {
            write_keys(sv, r);
        }
        break;
    case PH_WAITING:
        if (!r->wanted) {
            r->phase = PH_STOPPED;
            r->failed = false;
            r->last_error[0] = '\0';
            clean(sv, r);
            sv->changed = true;
        } else if (r->have_spec && (r->spec.generation != r->wait_gen || now >= r->deadline_ms)) {
            if (r->spec.generation != r->wait_gen)
                r->backoff = 0; /* something changed: try at once */
            start(sv, r);
        }
        break;
    case PH_STOPPED:
        if (r->wanted && r->have_spec)
            start(sv, r);
        else if (!r->wanted && r->needs_cleanup)
            clean(sv, r);
        break;
    case PH_STOPPING:
        break;
    }
}

/* ---- deleted containers' homes -------------------------------------------------- */

static bool exists_here(const supervisor_t *sv, int uid)
{
    for (size_t i = 0; i < sv->n_existing; i++)
        if (sv->existing[i] == uid)
            return true;
    const rec_t *r = find(sv, uid);
    return r && r->wanted;
}

/* The home of a container the API no longer has: out of the customer's
 * reach once nothing of it runs (home.h).  Its state record goes too. */
static void retire_one(supervisor_t *sv, int uid)
{
    rec_t *r = find(sv, uid);
    if ((r && r->phase != PH_STOPPED) || container_is_running(&sv->o.node, uid))
        return; /* once stopped (finish_stop makes housekeeping due again) */
    if (r && r->needs_cleanup)
        clean(sv, r);
    err_t e;
    err_clear(&e);
    int rc = home_retire(sv->o.node.containers_dir, uid, &e);
    if (rc < 0) {
        log_error("container %d: deleted, but its home stays: %s", uid, e.msg);
        return;
    }
    char path[STATE_PATH_MAX];
    if (state_path(sv->o.node.state_dir, uid, "state.json", path, sizeof path, NULL) == 0 &&
        unlink(path) < 0 && errno != ENOENT)
        log_error("container %d: remove %s: %s", uid, path, strerror(errno));
    if (rc == 1)
        log_info("container %d: deleted: its home moved to %s/%s/ (kept until purged)", uid,
                 sv->o.node.containers_dir, HOME_DELETED_DIR);
}

static void retire_deleted(supervisor_t *sv)
{
    DIR *d = opendir(sv->o.node.containers_dir);
    if (!d) {
        if (errno != ENOENT)
            log_error("read %s: %s", sv->o.node.containers_dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        long long uid;
        if (str_to_ll(de->d_name, &uid) && uid > UID_BASE && uid <= INT_MAX &&
            !exists_here(sv, (int)uid))
            retire_one(sv, (int)uid);
    }
    closedir(d);
}

static void housekeeping(supervisor_t *sv)
{
    sv->housekeeping_due = false;
    if (!sv->have_state || !sv->o.node.containers_dir)
        return;
    if (sv->have_existing)
        retire_deleted(sv);
    if (sv->purge_before > 0) {
        err_t e;
        err_clear(&e);
        int n = home_purge(sv->o.node.containers_dir, sv->purge_before, &e);
        if (n < 0)
            log_error("%s", e.msg);
        else if (n > 0)
            log_info("purged %d deleted homes (retired before %lld)", n, sv->purge_before);
    }
}

void sv_converge(supervisor_t *sv)
{
    for (size_t i = 0; i < sv->n; i++) {
        oom_report(sv, sv->recs[i], now_ms()); /* kills held in a window that ended */
        converge_one(sv, sv->recs[i], now_ms());
    }
    if (sv->housekeeping_due)
        housekeeping(sv);
}

long long sv_next_deadline(const supervisor_t *sv)
{
    long long next = -1;
    for (size_t i = 0; i < sv->n; i++) {
        const rec_t *r = sv->recs[i];
        long long d = -1;
        if (r->phase == PH_STOPPING || (r->phase == PH_WAITING && r->wanted))
            d = r->deadline_ms;
        if (r->pidfd < 0 && (r->phase == PH_RUNNING || r->phase == PH_STOPPING)) {
            long long p = now_ms() + POLL_ALIVE_MS;
            d = d < 0 || p < d ? p : d;
        }
        long long o = alarm_burst_deadline(&r->oom_burst, r->alarm_freq_ms);
        if (o >= 0)
            d = d < 0 || o < d ? o : d;
        if (d >= 0 && (next < 0 || d < next))
            next = d;
    }
    return next;
}

size_t sv_running(const supervisor_t *sv, int *uids, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sv->n; i++)
        if (sv->recs[i]->phase == PH_RUNNING) {
            if (n < max)
                uids[n] = sv->recs[i]->uid;
            n++;
        }
    return n;
}

/* ---- adoption at start-up ---------------------------------------------------------- */

void sv_adopt_all(supervisor_t *sv)
{
    DIR *d = opendir(sv->o.node.state_dir);
    if (!d) {
        if (errno != ENOENT)
            log_error("read the state directory %s: %s", sv->o.node.state_dir, strerror(errno));
        return;
    }
    struct dirent *de;
    int adopted = 0;
    while ((de = readdir(d))) {
        long long uid;
        if (!str_to_ll(de->d_name, &uid) || uid <= UID_BASE || uid > INT_MAX)
            continue;
        state_t st;
        if (state_load(sv->o.node.state_dir, (int)uid, &st, NULL) <= 0)
            continue;
        rec_t *r = get(sv, (int)uid);
        if (!r) {
            log_error("container %lld: out of memory", uid);
            continue;
        }
        pid_t pid;
        if (container_find(&sv->o.node, r->uid, &pid) && adopt(sv, r, pid))
            adopted++;
        else
            r->needs_cleanup = st.pid != 0; /* died while no daemon watched */
    }
    closedir(d);
    log_info("%d running containers adopted from %s", adopted, sv->o.node.state_dir);
}

/* ---- status ---------------------------------------------------------------------- */

static json_t *report_one(const supervisor_t *sv, const rec_t *r)
{
    container_status_t st;
    if (container_status(&sv->o.node, r->uid, &st, NULL) < 0)
        memset(&st, 0, sizeof st);
    const char *state = "stopped", *err = NULL;
    long long gen = st.rec.generation;
    switch (r->phase) {
    case PH_RUNNING:
        state = "running";
        gen = r->run_gen;
        break;
    case PH_STOPPING:
        state = r->restart_after ? "starting" : "running";
        gen = r->run_gen;
        break;
    case PH_WAITING:
        state = r->failed ? "failed" : "starting";
        err = r->last_error;
        gen = r->failed ? r->wait_gen : r->run_gen;
        break;
    case PH_STOPPED:
        if (r->wanted && !r->have_spec) {
            state = "failed";
            err = r->spec_error;
        } else if (r->wanted) {
            state = "starting";
        }
        break;
    }
    long long since = st.rec.since ? st.rec.since : (long long)time(NULL); /* never started */
    json_t *last = json_null();
    if (err && *err && !(last = json_string(err)))
        last = json_string("(an error message that is not UTF-8)");
    return json_pack("{s:i,s:s,s:I,s:I,s:o,s:I}", "uid", r->uid, "state", state, "since",
                     (json_int_t)since, "restarts", (json_int_t)st.rec.restarts,
                     "last_error", last, "generation", (json_int_t)gen);
}

char *sv_status_report(const supervisor_t *sv)
{
    json_t *list = json_array();
    if (!list)
        return NULL;
    unsigned long long running = 0, starting = 0, failed = 0;
    for (size_t i = 0; i < sv->n; i++) {
        json_t *o = report_one(sv, sv->recs[i]);
        if (!o || json_array_append_new(list, o) < 0) {
            json_decref(list);
            return NULL;
        }
        const char *state = json_string_value(json_object_get(o, "state"));
        running += state && !strcmp(state, "running");
        starting += state && !strcmp(state, "starting");
        failed += state && !strcmp(state, "failed");
    }
    /* The Prometheus gauges say what the API is told, as of this report. */
    nodestats_set(NS_CONTAINERS_RUNNING, running);
    nodestats_set(NS_CONTAINERS_STARTING, starting);
    nodestats_set(NS_CONTAINERS_FAILED, failed);
    json_t *body = json_pack("{s:o}", "containers", list);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return s;
}
