/* agent.c - the imperium-node daemon's main loop, and stop-all (agent.h).
 *
 * Two threads.  The channel thread (channel.c) blocks in libcurl on the
 * long poll and hands each new state over.  The main thread owns every
 * container and waits in epoll on:
 *   - a signalfd: SIGCHLD (reap our inits), SIGTERM/SIGINT (exit);
 *   - an eventfd the channel thread writes when a new state is ready;
 *   - the supervisor's epoll of init pidfds (an init ended);
 *   - a timeout: the next stop deadline or backoff, and the status report
 *     due every STATUS_EVERY_MS.
 * After every wake-up it converges and, when something changed (or the
 * report is due), queues a POST /node/status with every known container.
 * Every new state is saved (<state_dir>/desired.json): a daemon started
 * while the API is unreachable follows it after SAVED_AFTER_MS.
 *
 * On SIGTERM/SIGINT the daemon exits WITHOUT stopping containers: they keep
 * running, and the next daemon adopts them.  `imperium-node stop-all` stops
 * them for maintenance. */
#include "agent.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "../runtime/cgroup.h"
#include "../runtime/net.h"
#include "../runtime/quota.h"
#include "acme.h"
#include "channel.h"
#include "legion.h"
#include "loopboxes.h"
#include "netpolicy.h"
#include "alarms.h"
#include "nodestats.h"
#include "router.h"
#include "sampler.h"
#include "subgate.h"
#include "supervisor.h"

#define STATUS_EVERY_MS 5000
/* The last desired state, kept for a daemon that starts while the API is
 * unreachable: without it, it could adopt its containers but not restart
 * one that dies.  It is followed only if the API gives no state within
 * SAVED_AFTER_MS of the start (a fresh state always wins). */
#define DESIRED_FILE "desired.json"
#define SAVED_AFTER_MS 2000
/* A table libnftables refused is applied again this often. */
#define NET_RETRY_MS 1000
/* How often the node asks whether its nft table is still there (netpolicy_check). */
#define NET_CHECK_MS 1000
/* The settings the running containers' isolation hangs on, as of the last
 * start: {"veth_prefix", "nft_table"}. */
#define NET_SETTINGS_FILE "network.json"

enum { EV_SIGNAL = 1, EV_STATE, EV_INITS, EV_ROUTER };

/* The daemon's one piece of mutable state. */
typedef struct {
    const agent_cfg_t *cfg;
    int lock_fd, sig_fd, event_fd, ep_fd;
    bool curl_ready, mask_set, quit;
    bool notified; /* READY=1 sent to systemd */
    sigset_t old_mask;
    supervisor_t *sv;
    channel_t *ch;
    router_t *router; /* the HTTP router, NULL without router_http */
    subgate_t *gate;  /* its subscription gate (a thread), likewise */
    acme_t *acme;     /* auto-ssl-domain certificates (a thread), likewise */
    long long next_report_ms;
    bool have_state;    /* a state came from the API */
    spec_state_t *saved;   /* the state saved by the last run, until used or superseded */
    spec_state_t *unsaved; /* the newest state, saved once the loop has converged on it */
    long long saved_ms; /* when to fall back on it */
    netpolicy_t *np;       /* the node's nft table; NULL with network = off */
    char net_error[512];   /* why the last table did not apply; "" when in force */
    long long net_retry_ms;
    long long net_check_ms; /* the next netpolicy_check */
    char net_check_error[512]; /* why the last check failed; "" when it worked */
    overlay_t *ov;         /* links across servers; NULL with overlay = off */
    legions_t *lg;         /* the legion members and their addresses (legion.h) */
    alarms_t *alarms;      /* system alarms and their delivery (alarms.h) */
    sampler_t *sampler;    /* the containers' metrics; NULL with metrics_interval = 0 */
    loopboxes_t *lb;       /* the loopboxes' thread (loopboxes.h) */
    nodestats_server_t *prom; /* the Prometheus /metrics; NULL without metrics_listen */
    char ov_error[512];    /* the overlay's last failure, "" when in line */
} agent_t;

static void load_saved_state(agent_t *a);
static int network_policy(agent_t *a, err_t *e);
static int overlay_setup(agent_t *a, err_t *e);
static int *list_uids(const char *dir, size_t *n, err_t *e);

static int add_fd(agent_t *a, int fd, uint64_t tag, err_t *e)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(a->ep_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return err_set(e, ERR_INTERNAL, "epoll_ctl: %s", strerror(errno));
    return 0;
}

static int setup_fds(agent_t *a, err_t *e)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Blocked before the channel thread exists, so it inherits the mask and
     * every one of these signals reaches the signalfd. */
    if (pthread_sigmask(SIG_BLOCK, &set, &a->old_mask) != 0)
        return err_set(e, ERR_INTERNAL, "block signals: %s", strerror(errno));
    a->mask_set = true;
    /* libcurl runs with CURLOPT_NOSIGNAL: a peer closing a connection must
     * not kill us.  (The container's Emperor gets every signal reset.) */
    signal(SIGPIPE, SIG_IGN);
    if ((a->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        return err_set(e, ERR_INTERNAL, "signalfd: %s", strerror(errno));
    if ((a->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return err_set(e, ERR_INTERNAL, "eventfd: %s", strerror(errno));
    if ((a->ep_fd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return err_set(e, ERR_INTERNAL, "epoll_create1: %s", strerror(errno));
    return add_fd(a, a->sig_fd, EV_SIGNAL, e) < 0 || add_fd(a, a->event_fd, EV_STATE, e) < 0
               ? -1
               : 0;
}

/* One recorded setting against the configured one: a running container's
 * veth is <old prefix><uid> (no rule of a new prefix's table matches it)
 * and its isolation is the old table (a new name would leave it in force
 * beside the new one), so a change waits until none runs. */
static int setting_kept(const json_t *old, const char *key, const char *now, int uid, size_t n,
                        err_t *e)
{
    const char *was = json_string_value(json_object_get(old, key));
    if (!was || strcmp(was, now) == 0)
        return 0;
    return err_set(e, ERR_INPUT,
                   "%s was '%s' when container %d (of %zu running) started, now '%s': their "
                   "network hangs on the old one; set %s back to '%s', or stop them first "
                   "(imperium-node stop-all with the old setting)",
                   key, was, uid, n, now, key, was);
}

/* Refuses a changed veth_prefix or nft_table while containers run (their
 * start recorded them in NET_SETTINGS_FILE), then records the current ones.
 * A missing or unreadable record (a first start) is not a change. */
static int network_settings(const agent_cfg_t *c, const int *running, size_t n, err_t *e)
{
    char *path = str_printf("%s/%s", c->node.state_dir, NET_SETTINGS_FILE);
    json_t *now = json_pack("{s:s, s:s}", "veth_prefix", c->node.net.prefix, "nft_table",
                            c->nft_table);
    char *text = now ? json_dumps(now, JSON_SORT_KEYS) : NULL;
    int rc = path && text ? 0 : err_set(e, ERR_INTERNAL, "out of memory");
    json_t *old = rc == 0 && n ? json_load_file(path, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (old && (setting_kept(old, "veth_prefix", c->node.net.prefix, running[0], n, e) < 0 ||
                setting_kept(old, "nft_table", c->nft_table, running[0], n, e) < 0))
        rc = -1;
    if (rc == 0)
        rc = fs_write_atomic(path, text, strlen(text), 0600, e);
    json_decref(old);
    json_decref(now);
    free(text);
    free(path);
    return rc;
}

/* Before any container is started or adopted: the node's addresses and
 * routes (idempotent), then the veths of containers that no longer run
 * (a crash's leftovers) go; running containers' veths are left alone:
 * adopting a container changes nothing of its network. */
static int network_setup(const agent_cfg_t *c, err_t *e)
{
    if (!c->node.net.on)
        return 0;
    size_t n;
    int *uids = list_uids(c->node.state_dir, &n, e);
    bool *has = uids ? calloc(n ? n : 1, sizeof *has) : NULL;
    if (!has) {
        free(uids);
        return uids ? err_set(e, ERR_INTERNAL, "out of memory") : -1;
    }
    size_t running = 0;
    for (size_t i = 0; i < n; i++)
        if (container_is_running(&c->node, uids[i]))
            uids[running++] = uids[i];
    int removed = -1;
    if (network_settings(c, uids, running, e) == 0 && net_node_setup(&c->node.net, e) == 0)
        removed = net_reconcile(c->node.net.prefix, uids, running, has, e);
    for (size_t i = 0; removed >= 0 && i < running; i++)
        if (!has[i])
            log_warn("container %d runs without its veth %s%d: a restart gives it one", uids[i],
                     c->node.net.prefix, uids[i]);
    if (removed > 0)
        log_info("network: %d leftover %s* interfaces removed", removed, c->node.net.prefix);
    free(has);
    free(uids);
    return removed < 0 ? -1 : 0;
}

/* Automatic HTTPS (acme.h): its thread, before the gate that feeds it.
 * Without acme_directory there is none, and the gate refuses
 * auto-ssl-domain subscriptions saying so. */
/* cluster-domain's fastrouter port, or 0: it needs the router and the
 * node's network (nft keeps the port to the legion's members). */
static int cluster_port(const agent_cfg_t *c)
{
    return c->router_http && c->node.net.on ? c->cluster_port : 0;
}

static int acme_setup(agent_t *a, const char *router_dir, err_t *e)
{
    const agent_cfg_t *c = a->cfg;
    if (!c->acme_directory)
        return 0;
    acme_opts_t o = {.router_dir = router_dir,
                     .containers_dir = c->node.containers_dir,
                     .directory = c->acme_directory,
                     .ca_bundle = c->acme_ca_bundle,
                     .email = c->acme_email,
                     .renew_days = c->acme_renew_days,
                     .retry_s = c->acme_retry,
                     .router_gid = router_gid(a->router)};
    return (a->acme = acme_start(&o, e)) ? 0 : -1;
}

/* The metrics (sampler.h): the router's stats socket when there is one. */
static int sampler_setup(agent_t *a, err_t *e)
{
    const agent_cfg_t *c = a->cfg;
    if (c->metrics_interval <= 0)
        return 0;
    char *dir = c->router_http ? str_printf("%s/%s", c->node.state_dir, AGENT_ROUTER_DIR) : NULL;
    char *stats = dir ? router_stats_path(dir) : NULL;
    free(dir);
    sampler_opts_t so = {.node = &c->node,
                         .router_stats = stats,
                         .interval_s = c->metrics_interval};
    a->sampler = !c->router_http || stats ? sampler_new(&so, e) : NULL;
    free(stats);
    if (!a->sampler)
        return e->msg[0] ? -1 : err_set(e, ERR_INTERNAL, "out of memory");
    log_info("metrics: every %d s to %s%s/metrics", c->metrics_interval, c->api_url,
             c->node_prefix);
    return 0;
}

/* A round of metrics is due: its bodies into the outbox. */
static void sample(agent_t *a)
{
    int uids[4096];
    size_t n = sv_running(a->sv, uids, sizeof uids / sizeof uids[0]);
    if (n > sizeof uids / sizeof uids[0]) {
        log_warn("metrics: %zu containers run, only the first %zu are sampled", n,
                 sizeof uids / sizeof uids[0]);
        n = sizeof uids / sizeof uids[0];
    }
    char **bodies = sampler_sample(a->sampler, uids, n);
    for (size_t i = 0; bodies && bodies[i]; i++)
        channel_post(a->ch, "metrics", bodies[i]); /* takes it */
    free(bodies);
}

/* sv_opts_t.on_alarm: an OOM kill or a crash loop. */
static void on_alarm(void *ctx, long long uid, const char *cls, const char *msg)
{
    agent_t *a = ctx;
    alarms_raise(a->alarms, uid, cls, msg);
}

static alarms_t *alarms_new_for(const agent_cfg_t *c, err_t *e)
{
    alarms_opts_t o = {.api_url = c->api_url,
                       .node_prefix = c->node_prefix,
                       .server_name = c->server_name,
                       .secret = c->secret,
                       .state_dir = c->node.state_dir,
                       .containers_dir = c->node.containers_dir,
                       .quota = c->node.quota,
                       .quota_check_interval = c->quota_check_interval,
                       .deliver = {.pushover_url = c->pushover_url,
                                   .pushbullet_url = c->pushbullet_url,
                                   .slack_hosts = c->slack_hosts,
                                   .insecure_http = c->alarm_insecure_http,
                                   .xmpp_server = c->xmpp_server,
                                   .xmpp_insecure = c->xmpp_insecure,
                                   .container_network = c->node.net.network_text,
                                   .nat_deny = c->nat_deny,
                                   .wall = c->wall,
                                   .state_dir = c->node.state_dir}};
    return alarms_new(&o, NULL, e);
}

/* Homes a container that no longer runs left mounted (a crash, or a busy
 * unmount at its stop) are unmounted; running ones keep theirs (adoption:
 * host mounts outlive the daemon).  Failures are logged, not fatal. */
static void release_stale_homes(const agent_cfg_t *c)
{
    err_t e;
    err_clear(&e);
    size_t n;
    int *uids = list_uids(c->node.state_dir, &n, &e);
    if (!uids) {
        log_error("homes: %s", e.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        err_clear(&e);
        if (container_is_running(&c->node, uids[i]))
            continue;
        int rc = quota_release(c->node.quota, c->node.containers_dir, uids[i], &e);
        if (rc < 0)
            log_warn("container %d: %s", uids[i], e.msg);
        else if (rc > 0)
            log_info("container %d: its home, left mounted by a run that ended unseen, "
                     "unmounted",
                     uids[i]);
    }
    free(uids);
}

static int setup(agent_t *a, err_t *e)
{
    const agent_cfg_t *c = a->cfg;
    if (setup_fds(a, e) < 0 || (a->lock_fd = agent_lock(c, e)) < 0)
        return -1;
    /* After the signal mask (its thread inherits it: SIGCHLD stays ours)
     * and before any container: a taken port stops the start, not later. */
    if (c->metrics_listen) {
        if (!(a->prom = nodestats_serve(c->metrics_listen, e)))
            return -1;
        log_info("the node's own metrics: http://%s/metrics", c->metrics_listen);
    }
    if (fs_mkdirs(c->node.containers_dir, 0755, e) < 0 || network_setup(c, e) < 0 ||
        quota_setup(c->node.quota, c->node.containers_dir, c->node.state_dir, e) < 0)
        return -1;
    release_stale_homes(c);
    node_cfg_t node = c->node;
    if (c->router_http) {
        char *dir = str_printf("%s/%s", c->node.state_dir, AGENT_ROUTER_DIR);
        router_opts_t ro = {.uwsgi = c->router_uwsgi, .http = c->router_http,
                            .https = c->router_https, .dir = dir, .user = c->router_user,
                            .cluster_port = cluster_port(c)};
        a->router = dir ? router_new(&ro, e) : NULL;
        if (a->router && acme_setup(a, dir, e) < 0) {
            free(dir);
            return -1;
        }
        free(dir);
        if (!a->router)
            return e->msg[0] ? -1 : err_set(e, ERR_INTERNAL, "out of memory");
        node.subscribe_dir = router_subscribe_dir(a->router);
        node.sockets_dir = router_sockets_dir(a->router);
        node.sockets_gid = router_gid(a->router);
        char *listen = str_printf("%s/%s", node.subscribe_dir, ROUTER_SUBSCRIBE_SOCKET);
        char *cluster = cluster_port(c) ? str_printf("%s/%s", node.subscribe_dir,
                                                     ROUTER_SUBSCRIBE_CLUSTER)
                                        : NULL;
        subgate_opts_t go = {.listen_path = listen,
                             .router_path = router_subscription_server(a->router),
                             .router_uid = router_uid(a->router),
                             .containers_dir = c->node.containers_dir,
                             .max_subscriptions = c->max_subscriptions,
                             /* No HTTPS address: sni_* packets are refused
                              * and nothing is copied. */
                             .router_homes = c->router_https && *c->router_https
                                                 ? router_sockets_dir(a->router)
                                                 : NULL,
                             .router_gid = router_gid(a->router),
                             .acme_want = a->acme ? acme_want_cb : NULL,
                             .acme_arg = a->acme,
                             .cluster_listen_path = cluster,
                             .cluster_router_path = router_cluster_server(a->router),
                             .cluster_port = c->cluster_port,
                             .cluster_gate_port = c->cluster_gate_port};
        a->gate = listen && (cluster || !cluster_port(c)) ? subgate_start(&go, e) : NULL;
        free(listen);
        free(cluster);
        if (!a->gate)
            return e->msg[0] ? -1 : err_set(e, ERR_INTERNAL, "out of memory");
        if (router_fd(a->router) >= 0 && add_fd(a, router_fd(a->router), EV_ROUTER, e) < 0)
            return -1;
    }
    /* Before the supervisor: adopting may find OOM kills to raise. */
    if (!(a->alarms = alarms_new_for(c, e)))
        return -1;
    sv_opts_t so = {.node = node,
                    .distro_host_ok = c->distro_host_ok,
                    .stop_timeout_ms = c->stop_timeout_ms,
                    .restart_grace_ms = c->restart_grace_ms,
                    .on_alarm = on_alarm,
                    .alarm_ctx = a,
                    .cluster_port = cluster_port(c)};
    if (!(a->sv = sv_new(&so, e)) || add_fd(a, sv_fd(a->sv), EV_INITS, e) < 0)
        return -1;
    sv_adopt_all(a->sv);
    /* After adoption: its first pass finds the running inits and adopts
     * their recorded mounts once a state says which loopboxes are wanted. */
    loopboxes_opts_t lo = {.node = &c->node,
                           .remount_delay_s = c->loopbox_remount_delay,
                           .max_devices = c->loopbox_max};
    if (!(a->lb = loopboxes_new(&lo, e)))
        return -1;
    legion_opts_t lgo = {.state_dir = c->node.state_dir, .uwsgi = c->node.uwsgi,
                         .uplink = c->uplink, .router = c->router_http != NULL,
                         .network = c->node.net.on, .port = c->legion_port,
                         .freq = c->legion_freq, .tolerance = c->legion_tolerance};
    if (!(a->lg = legions_new(&lgo, e)))
        return -1;
    load_saved_state(a);
    if (network_policy(a, e) < 0 || overlay_setup(a, e) < 0)
        return -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return err_set(e, ERR_INTERNAL, "libcurl failed to initialise");
    a->curl_ready = true;
    /* What the API had not taken when the last daemon stopped goes first. */
    char *outbox = str_printf("%s/%s", c->node.state_dir, CHANNEL_OUTBOX_FILE);
    channel_opts_t co = {.api_url = c->api_url,
                         .node_prefix = c->node_prefix,
                         .user = c->server_name,
                         .secret = c->secret,
                         .wait_s = CHANNEL_WAIT_S,
                         .notify_fd = a->event_fd,
                         .outbox_max = c->outbox_max,
                         .outbox_max_bytes = (size_t)c->outbox_max_bytes,
                         .outbox_file = outbox};
    a->ch = outbox ? channel_new(&co, e) : NULL;
    free(outbox);
    if (!a->ch || channel_start(a->ch, e) < 0)
        return e->msg[0] ? -1 : err_set(e, ERR_INTERNAL, "out of memory");
    if (alarms_start(a->alarms, a->ch, e) < 0)
        return -1;
    return sampler_setup(a, e);
}

static void teardown(agent_t *a)
{
    /* The outbox to disk first (system alarms the API has not taken): the
     * joins of alarms_free may wait on a delivery in flight, and a SIGKILL
     * meanwhile must not lose it.  Nothing posts to the channel after this:
     * alarms_free only joins its threads (fetch, delivery), posting nothing. */
    channel_free(a->ch); /* stops and joins the thread first, saves the outbox */
    a->ch = NULL;
    alarms_free(a->alarms); /* before curl_global_cleanup: it uses libcurl */
    a->alarms = NULL;
    legions_free(a->lg); /* its members stop (the Lord hands over) and drop the address */
    sampler_free(a->sampler);
    spec_free(a->saved);
    spec_free(a->unsaved);
    netpolicy_free(a->np); /* the table stays: the containers keep their isolation */
    overlay_free(a->ov);   /* the device stays: their links across servers too */
    if (a->curl_ready)
        curl_global_cleanup();
    loopboxes_free(a->lb); /* the mounts stay: the next daemon adopts them */
    sv_free(a->sv);
    subgate_stop(a->gate);
    acme_stop(a->acme); /* after the gate, which calls it */
    nodestats_serve_stop(a->prom);
    router_free(a->router); /* it keeps running: the next daemon adopts it */
    if (a->ep_fd >= 0)
        close(a->ep_fd);
    if (a->event_fd >= 0)
        close(a->event_fd);
    if (a->sig_fd >= 0)
        close(a->sig_fd);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    if (a->mask_set) {
        /* A second SIGTERM during the shutdown (an operator's, or systemd's
         * after a restart was asked twice) is still pending here: ignoring
         * it discards it, so unblocking cannot kill us with it and the exit
         * stays the clean one systemd expects. */
        if (a->quit) {
            signal(SIGTERM, SIG_IGN);
            signal(SIGINT, SIG_IGN);
        }
        pthread_sigmask(SIG_SETMASK, &a->old_mask, NULL);
    }
}

static void on_signals(agent_t *a)
{
    struct signalfd_siginfo si;
    while (read(a->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
            sv_reap(a->sv);
        } else if (!a->quit) {
            log_info("%s: exiting; the containers keep running (imperium-node stop-all stops "
                     "them)",
                     strsignal((int)si.ssi_signo));
            a->quit = true;
            sd_notify(0, "STOPPING=1");
        }
    }
}

static char *desired_path(const agent_t *a)
{
    return str_printf("%s/%s", a->cfg->node.state_dir, DESIRED_FILE);
}

/* Keep the state for the next daemon (root only: it holds the customers'
 * private keys), replaced atomically. */
static void save_state(agent_t *a, const spec_state_t *state)
{
    char *path = desired_path(a), *text = json_dumps(state->json, JSON_COMPACT);
    err_t e;
    err_clear(&e);
    if (!path || !text)
        log_error("save the desired state to %s: out of memory", DESIRED_FILE);
    else if (fs_write_atomic(path, text, strlen(text), 0600, &e) < 0)
        log_error("save the desired state: %s", e.msg);
    free(path);
    free(text);
}

static void load_saved_state(agent_t *a)
{
    char *path = desired_path(a);
    json_error_t je;
    err_t e;
    err_clear(&e);
    json_t *j = path ? json_load_file(path, 0, &je) : NULL;
    a->saved = j ? spec_parse(j, &e) : NULL;
    json_decref(j);
    if (!a->saved && path && access(path, F_OK) == 0)
        log_error("the saved desired state %s is unreadable: %s", path, j ? e.msg : je.text);
    a->saved_ms = now_ms() + SAVED_AFTER_MS;
    free(path);
}

/* ---- the nft table (netpolicy.h) ---------------------------------------------- */

/* After an apply or a retry: starts are held while the table is not in
 * force (without it containers would reach each other), retried every
 * NET_RETRY_MS. */
static void network_result(agent_t *a, int rc, const err_t *e)
{
    if (rc >= 0) {
        if (a->net_error[0])
            log_info("network: the nft table inet %s is applied now", a->cfg->nft_table);
        a->net_error[0] = '\0';
        if (netpolicy_in_force(a->np))
            sv_hold_starts(a->sv, NULL);
        return;
    }
    if (strcmp(a->net_error, e->msg) != 0)
        log_error("network: %s; no container starts until it applies (retrying every %d s)",
                  e->msg, NET_RETRY_MS / 1000);
    snprintf(a->net_error, sizeof a->net_error, "%s", e->msg);
    char why[sizeof a->net_error + 64];
    snprintf(why, sizeof why, "the node's nft table cannot be applied: %s", e->msg);
    sv_hold_starts(a->sv, why);
    a->net_retry_ms = now_ms() + NET_RETRY_MS;
}

static void network_apply(agent_t *a, const spec_state_t *state)
{
    if (!a->np)
        return;
    err_t e;
    err_clear(&e);
    int rc = netpolicy_apply(a->np, state, &e);
    if (rc > 0)
        log_debug("network: nft table inet %s applied (state %s)", a->cfg->nft_table,
                  state->version);
    network_result(a, rc, &e);
}

/* Somebody deleted our table (`nft flush ruleset`, a firewall's reload):
 * containers would reach each other, and the node's services, until the
 * next state.  Noticed within NET_CHECK_MS and applied again whole. */
static void network_check(agent_t *a)
{
    if (!a->np || now_ms() < a->net_check_ms)
        return;
    a->net_check_ms = now_ms() + NET_CHECK_MS;
    err_t e;
    err_clear(&e);
    int rc = netpolicy_check(a->np, &e);
    if (rc < 0 && strcmp(a->net_check_error, e.msg) != 0)
        log_error("network: %s (asking again every %d s)", e.msg, NET_CHECK_MS / 1000);
    snprintf(a->net_check_error, sizeof a->net_check_error, "%s", rc < 0 ? e.msg : "");
    if (rc <= 0)
        return;
    log_warn("network: the nft table inet %s is gone or was replaced (`nft flush ruleset`, a "
             "firewall's reload?): applying it again whole",
             a->cfg->nft_table);
    network_result(a, netpolicy_retry(a->np, &e), &e);
}

static void network_retry(agent_t *a)
{
    if (!a->np || !a->net_error[0] || now_ms() < a->net_retry_ms)
        return;
    err_t e;
    err_clear(&e);
    network_result(a, netpolicy_retry(a->np, &e), &e);
}

/* With networking on, nothing starts before the table is in force; the
 * saved state's table is applied at once (a restarted node renders the
 * same text: the kernel's table and every flow stay as they are). */
static int network_policy(agent_t *a, err_t *e)
{
    const agent_cfg_t *c = a->cfg;
    if (!c->node.net.on)
        return 0;
    netpolicy_cfg_t pc = agent_netpolicy_cfg(c);
    if (!(a->np = netpolicy_new(&pc, e)))
        return -1;
    sv_hold_starts(a->sv, "waiting for the node's nft table (the containers' isolation)");
    if (a->saved)
        network_apply(a, a->saved);
    return 0;
}

/* ---- the overlay (overlay.h) ---------------------------------------------------- */

/* state: a new one; NULL: the retry of a failed one, when due. */
static void overlay_step(agent_t *a, const spec_state_t *state)
{
    if (!a->ov)
        return;
    err_t e;
    err_clear(&e);
    int rc = state ? overlay_apply(a->ov, state, &e) : overlay_retry(a->ov, &e);
    if (rc < 0 && strcmp(a->ov_error, e.msg) != 0)
        log_error("%s (retrying every %d s)", e.msg, OVERLAY_RETRY_MS / 1000);
    else if (rc == 0 && a->ov_error[0] && overlay_retry_at(a->ov) < 0)
        log_info("overlay: in line with the state again");
    if (rc < 0 || overlay_retry_at(a->ov) < 0)
        snprintf(a->ov_error, sizeof a->ov_error, "%s", rc < 0 ? e.msg : "");
}

/* At start, from the saved state (if any): the device and its entries are
 * in place before the first API answer (a restart adopts them as they
 * are); a fresh node makes them at its first state. */
static int overlay_setup(agent_t *a, err_t *e)
{
    if (!overlay_on(&a->cfg->overlay))
        return 0;
    if (!(a->ov = overlay_new(&a->cfg->overlay, &a->cfg->node.net, e)))
        return -1;
    if (a->saved)
        overlay_step(a, a->saved);
    return 0;
}

/* imperium-node.service is Type=notify: started once the first state (the
 * API's, or the saved one while the API does not answer) is applied, the
 * running containers being adopted before it.  A no-op without
 * $NOTIFY_SOCKET (not under systemd). */
static void notify_ready(agent_t *a)
{
    if (a->notified)
        return;
    a->notified = true;
    sd_notify(0, "READY=1");
}

static void apply_state(agent_t *a, const spec_state_t *state)
{
    network_apply(a, state); /* first: it decides whether containers may start */
    overlay_step(a, state);  /* after the table that says what the overlay carries */
    legions_set_state(a->lg, state); /* after the table that admits the members */
    if (a->router)
        router_set_domains(a->router, state->domains, state->n_domains);
    subgate_set_cluster(a->gate, state->server.address, state->legions, state->n_legions,
                        state->domains, state->n_domains);
    acme_set_state(a->acme, state);
    sv_set_state(a->sv, state);
    alarms_set_state(a->alarms, state);
    loopboxes_set_state(a->lb, state);
    notify_ready(a);
}

/* No state from the API in time: follow the saved one meanwhile. */
static void maybe_use_saved(agent_t *a)
{
    if (!a->saved || a->have_state || now_ms() < a->saved_ms)
        return;
    log_info("no desired state from the API %d s after the start: following the last one "
             "saved (%s/%s) until it answers",
             SAVED_AFTER_MS / 1000, a->cfg->node.state_dir, DESIRED_FILE);
    apply_state(a, a->saved);
    spec_free(a->saved);
    a->saved = NULL;
}

static void on_state(agent_t *a)
{
    uint64_t n;
    if (read(a->event_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("read the channel's eventfd: %s", strerror(errno));
    spec_state_t *state = channel_take_state(a->ch);
    if (!state)
        return;
    a->have_state = true;
    spec_free(a->saved);
    a->saved = NULL;
    apply_state(a, state);
    spec_free(a->unsaved); /* a newer one supersedes it */
    a->unsaved = state;
}

static void report(agent_t *a, long long now)
{
    char *body = sv_status_report(a->sv);
    if (!body)
        log_error("status report: out of memory");
    channel_post_status(a->ch, body);
    a->next_report_ms = now + STATUS_EVERY_MS;
}

static int timeout_ms(const agent_t *a)
{
    long long now = now_ms(), next = a->next_report_ms;
    long long d = sv_next_deadline(a->sv);
    if (d >= 0 && d < next)
        next = d;
    d = a->router ? router_next_deadline(a->router) : -1;
    if (d >= 0 && d < next)
        next = d;
    if (a->saved && a->saved_ms < next)
        next = a->saved_ms;
    d = a->ov ? overlay_retry_at(a->ov) : -1;
    if (d >= 0 && d < next)
        next = d;
    if (a->net_error[0] && a->net_retry_ms < next)
        next = a->net_retry_ms;
    if (a->np && a->net_check_ms < next)
        next = a->net_check_ms;
    d = sampler_next_deadline(a->sampler);
    if (d >= 0 && d < next)
        next = d;
    d = legions_next_deadline(a->lg);
    if (d >= 0 && d < next)
        next = d;
    d = alarms_next_deadline(a->alarms);
    if (d >= 0 && d < next)
        next = d;
    next -= now;
    return next < 0 ? 0 : next > STATUS_EVERY_MS ? STATUS_EVERY_MS : (int)next;
}

static void loop(agent_t *a)
{
    a->next_report_ms = now_ms(); /* report the adopted containers at once */
    while (!a->quit) {
        struct epoll_event evs[8];
        int n = epoll_wait(a->ep_fd, evs, 8, timeout_ms(a));
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            sleep(1);
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == EV_SIGNAL)
                on_signals(a);
            else if (evs[i].data.u64 == EV_STATE)
                on_state(a);
            else if (evs[i].data.u64 == EV_INITS)
                sv_events(a->sv);
            else if (evs[i].data.u64 == EV_ROUTER)
                router_events(a->router); /* closing its pidfd leaves the epoll */
        }
        if (a->quit)
            break;
        maybe_use_saved(a);
        network_retry(a);
        network_check(a);
        overlay_step(a, NULL);
        legions_tick(a->lg);
        alarms_tick(a->alarms);
        sv_converge(a->sv);
        if (a->unsaved) {
            /* After converging: the file (and its fsync) never delays a change. */
            save_state(a, a->unsaved);
            spec_free(a->unsaved);
            a->unsaved = NULL;
        }
        if (a->router && router_converge(a->router)) {
            err_t e;
            err_clear(&e);
            if (add_fd(a, router_fd(a->router), EV_ROUTER, &e) < 0)
                log_error("router: %s", e.msg);
        }
        long long now = now_ms();
        if (a->sampler && now >= sampler_next_deadline(a->sampler))
            sample(a);
        /* A container started or stopped: its loopboxes are looked at now. */
        bool changed = sv_take_changed(a->sv);
        if (changed)
            loopboxes_poke(a->lb);
        if (changed || now >= a->next_report_ms)
            report(a, now);
    }
}

int agent_run(const agent_cfg_t *c)
{
    agent_t a = {.cfg = c, .lock_fd = -1, .sig_fd = -1, .event_fd = -1, .ep_fd = -1};
    err_t e;
    err_clear(&e);
    log_set_level(c->log_level);
    int rc = 0;
    if (setup(&a, &e) < 0) {
        log_error("imperium-node: %s", e.msg);
        /* A start that failed after binding the containers directory on
         * itself leaves no bind behind (kept while a home is mounted below
         * it); never another daemon's: only with the lock held. */
        if (a.lock_fd >= 0)
            quota_teardown(c->node.containers_dir, c->node.state_dir, NULL);
        rc = 1;
    } else {
        log_info("imperium-node: server %s following %s%s (state %s, homes %s, uwsgi %s%s)",
                 c->server_name, c->api_url, c->node_prefix, c->node.state_dir,
                 c->node.containers_dir, c->node.uwsgi,
                 c->distro_host_ok ? ", host distro allowed" : "");
        loop(&a);
    }
    teardown(&a);
    return rc;
}

/* ---- stop-all -------------------------------------------------------------- */

/* The container uids of the state directory; *n of them, NULL on error. */
static int *list_uids(const char *dir, size_t *n, err_t *e)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        int *none = errno == ENOENT ? calloc(1, sizeof(int)) : NULL;
        if (!none)
            err_set(e, ERR_INTERNAL, "read the state directory %s: %s", dir,
                    errno == ENOENT ? "out of memory" : strerror(errno));
        return none;
    }
    size_t cap = 16;
    int *uids = malloc(cap * sizeof *uids);
    struct dirent *de;
    while (uids && (de = readdir(d))) {
        long long uid;
        if (!str_to_ll(de->d_name, &uid) || uid <= UID_BASE || uid > INT_MAX)
            continue;
        if (*n == cap) {
            int *more = realloc(uids, (cap *= 2) * sizeof *uids);
            if (!more) {
                free(uids);
                uids = NULL;
                break;
            }
            uids = more;
        }
        uids[(*n)++] = (int)uid;
    }
    closedir(d);
    if (!uids)
        err_set(e, ERR_INTERNAL, "out of memory");
    return uids;
}

int agent_stop_all(const agent_cfg_t *c, err_t *e)
{
    log_set_level(c->log_level);
    int lock = agent_lock(c, e);
    if (lock < 0) {
        if (e->kind == ERR_CONFLICT)
            err_set(e, ERR_CONFLICT,
                    "an imperium-node daemon is running on %s: stop it first (it would restart "
                    "what stop-all stops)",
                    c->node.state_dir);
        return -1;
    }
    size_t n;
    int *uids = list_uids(c->node.state_dir, &n, e);
    if (!uids) {
        close(lock);
        return -1;
    }
    /* SIGTERM to every init first, so they shut down side by side... */
    int running = 0, failed = 0; /* containers that did not stop */
    int steps = 0;               /* the node's other teardown steps that failed */
    for (size_t i = 0; i < n; i++) {
        pid_t pid;
        if (container_find(&c->node, uids[i], &pid)) {
            log_info("container %d: stopping (init pid %d)", uids[i], (int)pid);
            kill(pid, SIGTERM);
            running++;
        }
    }
    /* ...then wait for each up to the timeout; container_stop SIGKILLs what
     * is left and removes the cgroup (also of containers that died). */
    long long deadline = now_ms() + c->stop_timeout_ms;
    for (size_t i = 0; i < n; i++) {
        while (container_is_running(&c->node, uids[i]) && now_ms() < deadline)
            sleep_ms(20);
        state_t st;
        if (state_load(c->node.state_dir, uids[i], &st, NULL) <= 0 || st.pid == 0)
            continue; /* stopped already: leave its record alone */
        err_t one;
        err_clear(&one);
        if (container_stop(&c->node, uids[i], 0, &one) < 0) {
            log_error("container %d: stop: %s", uids[i], one.msg);
            failed++;
        }
    }
    free(uids);
    /* The HTTP router (if any) goes too. */
    char *rdir = str_printf("%s/%s", c->node.state_dir, AGENT_ROUTER_DIR);
    err_t re;
    err_clear(&re);
    if (!rdir || router_stop_dir(rdir, c->stop_timeout_ms, &re) < 0) {
        log_error("stop-all: %s", rdir ? re.msg : "out of memory");
        steps++;
    }
    free(rdir);
    /* Nothing runs: the node's cgroup parent goes too (the next start
     * creates it again); one still in use stays. */
    cgroup_t cg;
    if (!failed && !steps &&
        cgroup_locate(c->node.cgroup_root, c->node.cgroup_parent, UID_BASE + 1, &cg, NULL) == 0)
        cgroup_remove_parents(&cg);
    /* No container of ours runs: their nft table goes (never while one
     * still runs: it is that one's isolation). */
    err_t ne;
    err_clear(&ne);
    if (!failed && !steps && c->node.net.on && netpolicy_delete(c->nft_table, &ne) < 0) {
        log_error("stop-all: %s", ne.msg);
        steps++;
    }
    /* The overlay device likewise (its routes, neighbours and entries go
     * with it); the daemon's exit leaves it to the containers. */
    err_clear(&ne);
    if (!failed && !steps && overlay_on(&c->overlay) && overlay_remove(&c->overlay, &ne) < 0) {
        log_error("stop-all: %s", ne.msg);
        steps++;
    }
    /* Last the node's own route and gateway address, unless another node
     * sharing this namespace still has containers (its /32s); ip_forward
     * stays (docs/NETWORK.md). */
    err_clear(&ne);
    if (!failed && !steps && c->node.net.on && net_node_teardown(&c->node.net, &ne) < 0) {
        log_error("stop-all: %s", ne.msg);
        steps++;
    }
    /* The homes' images are unmounted (also any a busy stop left), then
     * the containers directory's own bind, if the daemon made one. */
    release_stale_homes(c);
    err_clear(&ne);
    if (!failed && !steps &&
        quota_teardown(c->node.containers_dir, c->node.state_dir, &ne) < 0) {
        log_error("stop-all: %s", ne.msg);
        steps++;
    }
    close(lock);
    if (failed)
        return err_set(e, ERR_INTERNAL, "%d of %d containers did not stop", failed, running);
    if (steps)
        return err_set(e, ERR_INTERNAL, "the %d containers stopped, but %d of the node's teardown "
                       "steps failed (the log says which)", running, steps);
    log_info("stop-all: %d running containers stopped (homes kept)", running);
    return 0;
}
