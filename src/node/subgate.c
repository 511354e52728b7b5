/* subgate.c - the subscription gate (subgate.h). */
#include "subgate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../runtime/home.h"
#include "subcerts.h"
#include "subscription.h"

#define REFUSAL_SLOTS 64
#define REFUSAL_QUIET_MS 60000     /* the same refusal is logged once a minute */
#define ROUTER_LOG_MAX (1 << 20)   /* logs/router.log stops growing at 1 MiB */

struct refusal {
    uid_t uid;
    uint32_t why_hash;
    long long at_ms;
};

/* A container's refusal lines this minute (per uid, whatever the reason:
 * reasons hold paths the customer chooses). */
struct budget {
    uid_t uid;
    long long minute_ms; /* the start of its minute */
    int lines, suppressed;
};

/* A subscription a container holds in the router (a node of its table). */
struct held {
    char *key, *address;
    long long seen_ms; /* its last announcement */
};

/* One container's subscriptions. */
struct holder {
    uid_t uid;
    struct held *h;
    size_t n, cap;
};

struct subgate {
    char *router_path, *containers_dir;
    uid_t router_uid;
    size_t max_subs;
    int fd, out_fd, stop_fd;
    subcerts_t *certs; /* NULL: no HTTPS subscriptions */
    bool (*acme_want)(void *arg, const char *name, uid_t uid, char *why, size_t why_len);
    void *acme_arg;
    pthread_t thread;
    bool running;
    /* Only the gate's thread touches these. */
    struct refusal seen[REFUSAL_SLOTS];
    struct holder *holders;
    size_t n_holders, cap_holders;
    long long swept_ms; /* the last sweep of forgotten subscriptions */
    long long certs_swept_ms; /* the last subcerts_sweep */
    struct budget budget[REFUSAL_SLOTS];
};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* True when this refusal was not reported for this uid lately. */
static bool worth_reporting(subgate_t *g, uid_t uid, const char *why)
{
    uint32_t h = hash(why);
    struct refusal *r = &g->seen[(uid * 2654435761u ^ h) % REFUSAL_SLOTS];
    long long now = now_ms();
    if (r->uid == uid && r->why_hash == h && now - r->at_ms < REFUSAL_QUIET_MS)
        return false;
    *r = (struct refusal){.uid = uid, .why_hash = h, .at_ms = now};
    return true;
}

/* Append a line to the container's logs/router.log (home_append_log: the
 * home belongs to the customer, nothing they put there is followed). */
static void tell_container(const subgate_t *g, uid_t uid, const char *line)
{
    char home[4200];
    if (snprintf(home, sizeof home, "%s/%u", g->containers_dir, (unsigned)uid) >= (int)sizeof home)
        return;
    if (home_append_log(home, (int)uid, "logs/router.log", "router", line, ROUTER_LOG_MAX) < 0)
        log_debug("subscription gate: logs/router.log of %u: %s", (unsigned)uid,
                  strerror(errno));
}

/* True when `uid` may have another refusal line this minute.  A new
 * minute first says how many were suppressed in the last. */
static bool within_budget(subgate_t *g, uid_t uid)
{
    struct budget *b = &g->budget[(uid * 2654435761u) % REFUSAL_SLOTS];
    long long now = now_ms();
    if (b->uid != uid || now - b->minute_ms >= 60000) {
        if (b->uid == uid && b->suppressed) {
            char line[128];
            snprintf(line, sizeof line, "%d more refusals suppressed in the last minute",
                     b->suppressed);
            log_info("subscription gate: container %u: %s", (unsigned)uid, line);
            tell_container(g, uid, line);
        }
        *b = (struct budget){.uid = uid, .minute_ms = now};
    }
    if (b->lines < SUBGATE_REFUSALS_PER_MIN) {
        b->lines++;
        return true;
    }
    b->suppressed++;
    return false;
}

static void refused(subgate_t *g, uid_t uid, const subscription_t *s, const char *why)
{
    if (!worth_reporting(g, uid, why) || !within_budget(g, uid))
        return;
    char line[1024];
    snprintf(line, sizeof line, "subscription of %s refused: %s", s->key[0] ? s->key : "?", why);
    log_info("subscription gate: container %u: %s", (unsigned)uid, line);
    tell_container(g, uid, line);
}

/* ---- the bound on subscriptions per container ------------------------------ */

static void held_free(struct held *h)
{
    free(h->key);
    free(h->address);
}

/* Drop what `o` has not announced for SUBGATE_FORGET_MS. */
static void holder_expire(struct holder *o, long long now)
{
    size_t kept = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (now - o->h[i].seen_ms > SUBGATE_FORGET_MS)
            held_free(&o->h[i]);
        else
            o->h[kept++] = o->h[i];
    }
    o->n = kept;
}

/* Once per SUBGATE_FORGET_MS: expire everyone's, free the empty holders
 * (containers that went away), so the table stays the size of what is
 * held now. */
static void sweep(subgate_t *g, long long now)
{
    if (now - g->swept_ms < SUBGATE_FORGET_MS)
        return;
    g->swept_ms = now;
    size_t kept = 0;
    for (size_t i = 0; i < g->n_holders; i++) {
        struct holder *o = &g->holders[i];
        holder_expire(o, now);
        if (o->n)
            g->holders[kept++] = *o;
        else
            free(o->h);
    }
    g->n_holders = kept;
}

/* The holder of `uid`, added if new; NULL: out of memory. */
static struct holder *holder_of(subgate_t *g, uid_t uid)
{
    for (size_t i = 0; i < g->n_holders; i++)
        if (g->holders[i].uid == uid)
            return &g->holders[i];
    struct holder *grown = array_room(g->holders, g->n_holders, &g->cap_holders, sizeof *grown);
    if (!grown)
        return NULL;
    g->holders = grown;
    struct holder *o = &g->holders[g->n_holders++];
    *o = (struct holder){.uid = uid};
    return o;
}

static struct held *held_find(struct holder *o, const subscription_t *s)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->h[i].key, s->key) && !strcmp(o->h[i].address, s->address))
            return &o->h[i];
    return NULL;
}

/* A subscription allowed by subscription_check: true when it may go on
 * (known, or new within the bound: now counted), false with `why`. */
static bool admit(subgate_t *g, uid_t uid, const subscription_t *s, char *why, size_t len)
{
    long long now = now_ms();
    sweep(g, now);
    struct holder *o = holder_of(g, uid);
    if (!o) {
        snprintf(why, len, "the node is out of memory");
        return false;
    }
    holder_expire(o, now);
    struct held *h = held_find(o, s);
    if (s->unsubscribe) {
        if (h) {
            held_free(h);
            *h = o->h[--o->n];
        }
        return true;
    }
    if (h) {
        h->seen_ms = now;
        return true;
    }
    if (o->n >= g->max_subs) {
        snprintf(why, len,
                 "the container already holds %zu subscriptions (domain and socket pairs), the "
                 "node's max_subscriptions; unsubscribe one (stop a vassal) first",
                 o->n);
        return false;
    }
    struct held *grown = array_room(o->h, o->n, &o->cap, sizeof *grown);
    if (!grown) {
        snprintf(why, len, "the node is out of memory");
        return false;
    }
    o->h = grown;
    h = &o->h[o->n];
    *h = (struct held){.seen_ms = now};
    if (!(h->key = strdup(s->key)) || !(h->address = strdup(s->address))) {
        held_free(h);
        snprintf(why, len, "the node is out of memory");
        return false;
    }
    o->n++;
    return true;
}

static void holders_free(subgate_t *g)
{
    for (size_t i = 0; i < g->n_holders; i++) {
        for (size_t j = 0; j < g->holders[i].n; j++)
            held_free(&g->holders[i].h[j]);
        free(g->holders[i].h);
    }
    free(g->holders);
}

/* The router's socket is in a directory the router writes (sticky, so
 * protected_symlinks keeps the gate from following a link it leaves).  The
 * gate sends as root, so it also makes sure the name is a socket of the
 * router's own and not a hard link to someone else's. */
static bool router_socket_ok(const subgate_t *g)
{
    struct stat st;
    if (lstat(g->router_path, &st) < 0)
        return errno == ENOENT; /* the router is (re)starting: sendto says so */
    if (S_ISSOCK(st.st_mode) && st.st_uid == g->router_uid && st.st_nlink == 1)
        return true;
    log_error("subscription gate: %s is not the router's socket (uid %u, %u links): not sent",
              g->router_path, (unsigned)st.st_uid, (unsigned)st.st_nlink);
    return false;
}

static void forward(subgate_t *g, const unsigned char *pkt, size_t len)
{
    if (!router_socket_ok(g))
        return;
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    snprintf(to.sun_path, sizeof to.sun_path, "%s", g->router_path);
    if (sendto(g->out_fd, pkt, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to,
               sizeof to) < 0 &&
        errno != ENOENT && errno != ECONNREFUSED)
        log_error("subscription gate: forward to %s: %s", g->router_path, strerror(errno));
    /* ENOENT/ECONNREFUSED: the router is (re)starting; vassals resubscribe
     * every few seconds. */
}

/* HTTPS: the files a subscription names are the sender's and fit (copied
 * for the router), or the ACME pair of its key is asked for.  Nothing to
 * check for an unsubscription (the router makes no context for it). */
static bool tls_ok(subgate_t *g, uid_t uid, const subscription_t *s, char *why, size_t len)
{
    if (!s->tls.any || s->unsubscribe)
        return true;
    /* No router_https: nothing is copied, no certificate asked for, but the
     * name keeps its plain-HTTP record (ssl-domain registers it too, as the
     * seed says): the packet goes on, and the customer is told why HTTPS is
     * missing (rate-limited like a refusal).  The router cannot open the
     * named files (its /containers holds only run/ directories, and the
     * paths were checked: never under run/), so it makes no context. */
    if (!g->certs && s->tls.acme) {
        snprintf(why, len, "this node does not serve HTTPS (no router_https)");
        return false;
    }
    if (!g->certs) {
        if (!worth_reporting(g, uid, "no router_https") || !within_budget(g, uid))
            return true;
        char line[768];
        snprintf(line, sizeof line, "%s is served over plain HTTP only: this node does not serve "
                 "HTTPS (no router_https)", s->key);
        log_info("subscription gate: container %u: %s", (unsigned)uid, line);
        tell_container(g, uid, line);
        return true;
    }
    if (s->tls.acme) {
        if (!g->acme_want) {
            snprintf(why, len, "automatic certificates are not enabled on this node "
                               "(acme_directory)");
            return false;
        }
        return g->acme_want(g->acme_arg, s->key, uid, why, len);
    }
    return subcerts_check(g->certs, uid, s, now_ms(), why, len) == 0;
}

/* One datagram: who sent it, what it asks, forward or refuse. */
static void handle(subgate_t *g)
{
    unsigned char pkt[SUBSCRIPTION_MAX];
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = pkt, .iov_len = sizeof pkt};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(g->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            log_error("subscription gate: recvmsg: %s", strerror(errno));
        return;
    }
    const struct ucred *cred = NULL;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
            cred = (const struct ucred *)CMSG_DATA(c);
    if (!cred)
        return; /* SO_PASSCRED always attaches them */
    subscription_t s;
    char why[512];
    if (msg.msg_flags & MSG_TRUNC) {
        memset(&s, 0, sizeof s);
        refused(g, cred->uid, &s, "packet too large");
        return;
    }
    if (subscription_check(pkt, (size_t)n, cred->uid, &s, why, sizeof why) < 0 ||
        !tls_ok(g, cred->uid, &s, why, sizeof why) || !admit(g, cred->uid, &s, why, sizeof why)) {
        refused(g, cred->uid, &s, why);
        return;
    }
    log_debug("subscription gate: container %u: %s %s -> %s", (unsigned)cred->uid,
              s.unsubscribe ? "unsubscribe" : "subscribe", s.key, s.address);
    forward(g, pkt, (size_t)n);
}

static void *gate_main(void *arg)
{
    subgate_t *g = arg;
    struct pollfd p[2] = {{.fd = g->fd, .events = POLLIN}, {.fd = g->stop_fd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, SUBGATE_SWEEP_MS);
        long long now = now_ms();
        if (g->certs && now - g->certs_swept_ms >= SUBGATE_SWEEP_MS) {
            g->certs_swept_ms = now;
            subcerts_sweep(g->certs, now);
        }
        if (n < 0 && errno != EINTR) {
            log_error("subscription gate: poll: %s", strerror(errno));
            break;
        }
        if (n > 0 && p[1].revents)
            break;
        if (n > 0 && p[0].revents)
            handle(g);
    }
    return NULL;
}

static int bind_listen(subgate_t *g, const char *path, err_t *e)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return err_set(e, ERR_INPUT, "subscription socket path too long: %s", path);
    strcpy(a.sun_path, path);
    if ((g->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
        (g->out_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return err_set(e, ERR_INTERNAL, "socket: %s", strerror(errno));
    int on = 1;
    if (setsockopt(g->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0)
        return err_set(e, ERR_INTERNAL, "SO_PASSCRED: %s", strerror(errno));
    if (unlink(path) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove %s: %s", path, strerror(errno));
    if (bind(g->fd, (struct sockaddr *)&a, sizeof a) < 0)
        return err_set(e, ERR_INTERNAL, "bind %s: %s", path, strerror(errno));
    /* Every container's uid sends to it; what they may say is checked. */
    if (chmod(path, 0666) < 0)
        return err_set(e, ERR_INTERNAL, "chmod %s: %s", path, strerror(errno));
    return 0;
}

subgate_t *subgate_start(const subgate_opts_t *o, err_t *e)
{
    subgate_t *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    g->fd = g->out_fd = g->stop_fd = -1;
    g->router_uid = o->router_uid;
    g->max_subs = o->max_subscriptions > 0 ? (size_t)o->max_subscriptions : SUBGATE_DEFAULT_MAX;
    g->acme_want = o->acme_want;
    g->acme_arg = o->acme_arg;
    subcerts_opts_t co = {.containers_dir = o->containers_dir, .router_homes = o->router_homes,
                          .router_gid = o->router_gid, .max_pairs = g->max_subs,
                          .forget_ms = SUBGATE_FORGET_MS};
    if (o->router_homes && !(g->certs = subcerts_new(&co, e)))
        goto fail;
    if (!(g->router_path = str_printf("%s", o->router_path)) ||
        !(g->containers_dir = str_printf("%s", o->containers_dir))) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (strlen(g->router_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        err_set(e, ERR_INPUT, "router subscription socket path too long: %s", g->router_path);
        goto fail;
    }
    if (bind_listen(g, o->listen_path, e) < 0)
        goto fail;
    if ((g->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        err_set(e, ERR_INTERNAL, "eventfd: %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&g->thread, NULL, gate_main, g);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "start the subscription gate: %s", strerror(rc));
        goto fail;
    }
    g->running = true;
    return g;
fail:
    subgate_stop(g);
    return NULL;
}

void subgate_stop(subgate_t *g)
{
    if (!g)
        return;
    if (g->running) {
        uint64_t one = 1;
        if (write(g->stop_fd, &one, sizeof one) < 0)
            log_error("subscription gate: stop: %s", strerror(errno));
        pthread_join(g->thread, NULL);
    }
    if (g->fd >= 0)
        close(g->fd);
    if (g->out_fd >= 0)
        close(g->out_fd);
    if (g->stop_fd >= 0)
        close(g->stop_fd);
    holders_free(g);
    subcerts_free(g->certs);
    free(g->router_path);
    free(g->containers_dir);
    free(g);
}
