/* subgate.c - the subscription gate (subgate.h). */
#include "subgate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
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
#include "../common/validate.h"
#include "../runtime/home.h"
#include "clustercerts.h"
#include "clustercrypt.h"
#include "subcerts.h"
#include "subscription.h"

#define REFUSAL_SLOTS 64
#define REFUSAL_QUIET_MS 60000     /* the same refusal is logged once a minute */
#define ROUTER_LOG_MAX (1 << 20)   /* logs/router.log stops growing at 1 MiB */
#define CERT_EVERY_MS 2000         /* one CERT per (member, set) at most this often */
#define CLUSTER_SETS_PER_MEMBER 1024 /* remote certificate sets held for one member */
/* cluster-domain: what one container makes the gate seal for the members.
 * Each envelope takes a place in every member's replay cache of the legion
 * (CLUSTER_REPLAY_MAX for 60 s): unbounded, one container could fill it
 * and stop the legion's routing. */
#define ENDPOINT_EVERY_MS 1000  /* one (uid, key, address) subscription at most this often */
#define ENDPOINTS_PER_SEC 20    /* subscriptions a container has sealed a second */
#define MEMBER_LINES_PER_SOURCE 10 /* a member's refusal lines a minute, per source */
#define MEMBER_LINES_PER_MIN 60    /* and from all sources */

struct refusal {
    uid_t uid;
    uint32_t why_hash;
    long long at_ms;
};

/* Log lines allowed in a fixed minute: the one throttle of the refusal
 * lines below (minute_take). */
typedef struct {
    long long minute_ms; /* the start of its minute */
    int lines, suppressed;
} minute_budget_t;

/* A container's refusal lines this minute (per uid, whatever the reason:
 * reasons hold paths the customer chooses). */
struct budget {
    uid_t uid;
    minute_budget_t m;
};

/* A subscription a container holds in the router (a node of its table). */
struct held {
    char *key, *address;
    long long seen_ms; /* its last announcement */
    long long sent_ms; /* cluster endpoint: when it last went to the members */
};

/* One container's subscriptions. */
struct holder {
    uid_t uid;
    struct held *h;
    size_t n, cap;
    long long second_ms; /* cluster endpoint: the start of its second */
    int sent;            /* subscriptions sealed for the members in it */
};

/* What containers hold through one socket (http or cluster). */
struct table {
    struct holder *holders;
    size_t n, cap;
    long long swept_ms; /* the last sweep of forgotten subscriptions */
};

/* A legion of this node, as the gate needs it. */
struct member_legion {
    char *name;
    cluster_key_t key;
    char **nodes; /* the members' server addresses */
    size_t n_nodes;
    /* Its own replay cache (a member of one legion cannot fill another's),
     * handed from state to state by name; NULL: out of memory (refused). */
    cluster_replay_t *replay;
};

/* ssl-cluster-domain: a certificate set this node announces to the members
 * (a TCP packet with sni_* files that passed subcerts_check), what a NEED
 * names: (uid, sni_key path). */
struct offer {
    uid_t uid;
    subscription_t s; /* its name and paths */
    long long seen_ms;
};

/* The refusal lines of envelopes from one source address this minute
 * (hashed slots; the key is the address, never what the envelope says). */
struct source_budget {
    in_addr_t src;
    uint32_t last_hash; /* the last line's: said again within the minute, skipped */
    minute_budget_t m;
};

/* When a CERT last went to a member for a set (hashed slots: a collision
 * only delays one by CERT_EVERY_MS). */
struct cert_sent {
    uint32_t hash;
    long long at_ms;
};

/* A domain of the state and its owner's public key. */
struct domain_key {
    char *name;
    EVP_PKEY *key; /* NULL: unreadable (its packets are refused) */
};

/* The state's part the cluster side reads (subgate_set_cluster), under
 * cluster_lock. */
struct cluster {
    char *self;        /* this server's address; NULL: unknown */
    char endpoint[64]; /* "<self>:<cluster_port>"; "": in no legion */
    struct member_legion *legions;
    size_t n_legions;
    struct domain_key *domains; /* sorted by name, for bsearch */
    size_t n_domains;
};

struct subgate {
    char *router_path, *containers_dir, *cluster_router_path;
    uid_t router_uid;
    size_t max_subs;
    int fd, out_fd, stop_fd;
    int cluster_fd;  /* /run/subscribe/cluster; -1: none */
    int member_fd;   /* UDP cluster_gate_port, gate to gate; -1: none */
    int cluster_port, cluster_gate_port;
    pthread_mutex_t cluster_lock;
    struct cluster cl;        /* under cluster_lock */
    unsigned char *envelope;  /* CLUSTER_MAX_ENVELOPE bytes, the gate thread's */
    unsigned char *opened;    /* CLUSTER_MAX_PAYLOAD: an opened envelope's payload */
    unsigned char *packed;    /* CLUSTER_MAX_PAYLOAD: a CERT payload being sent */
    clustercerts_t *cc;       /* the sets other members sent; NULL: no router_https */
    struct offer *offers;     /* the sets this node announces (gate thread) */
    size_t n_offers, cap_offers;
    struct cert_sent cert_sent[REFUSAL_SLOTS];
    subcerts_t *certs; /* NULL: no HTTPS subscriptions */
    bool (*acme_want)(void *arg, const char *name, uid_t uid, char *why, size_t why_len);
    void *acme_arg;
    pthread_t thread;
    bool running;
    /* Only the gate's thread touches these. */
    struct refusal seen[REFUSAL_SLOTS];
    struct table http, cluster; /* one bound each: the sockets are separate routers */
    long long certs_swept_ms; /* the last subcerts_sweep */
    struct budget budget[REFUSAL_SLOTS];
    struct source_budget sources[REFUSAL_SLOTS]; /* member_refused */
    minute_budget_t member;                      /* and its global budget */
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

/* Whether b's minute has room for another line (at most max).  When its
 * minute is over a new one starts, and *was_suppressed gets how many lines
 * the last one suppressed (0 otherwise): the caller says so first. */
static bool minute_take(minute_budget_t *b, long long now, int max, int *was_suppressed)
{
    *was_suppressed = 0;
    if (now - b->minute_ms >= 60000) {
        *was_suppressed = b->suppressed;
        *b = (minute_budget_t){.minute_ms = now};
    }
    if (b->lines < max) {
        b->lines++;
        return true;
    }
    b->suppressed++;
    return false;
}

/* True when `uid` may have another refusal line this minute.  A new
 * minute first says how many were suppressed in the last. */
static bool within_budget(subgate_t *g, uid_t uid)
{
    struct budget *b = &g->budget[(uid * 2654435761u) % REFUSAL_SLOTS];
    long long now = now_ms();
    if (b->uid != uid) /* another container had the slot: a fresh minute */
        *b = (struct budget){.uid = uid, .m = {.minute_ms = now}};
    int was = 0;
    bool ok = minute_take(&b->m, now, SUBGATE_REFUSALS_PER_MIN, &was);
    if (was) {
        char line[128];
        snprintf(line, sizeof line, "%d more refusals suppressed in the last minute", was);
        log_info("subscription gate: container %u: %s", (unsigned)uid, line);
        tell_container(g, uid, line);
    }
    return ok;
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
static void sweep(struct table *t, long long now)
{
    if (now - t->swept_ms < SUBGATE_FORGET_MS)
        return;
    t->swept_ms = now;
    size_t kept = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct holder *o = &t->holders[i];
        holder_expire(o, now);
        if (o->n)
            t->holders[kept++] = *o;
        else
            free(o->h);
    }
    t->n = kept;
}

/* The holder of `uid`, added if new; NULL: out of memory. */
static struct holder *holder_of(struct table *t, uid_t uid)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->holders[i].uid == uid)
            return &t->holders[i];
    struct holder *grown = array_room(t->holders, t->n, &t->cap, sizeof *grown);
    if (!grown)
        return NULL;
    t->holders = grown;
    struct holder *o = &t->holders[t->n++];
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
static bool admit(subgate_t *g, struct table *t, uid_t uid, const subscription_t *s, char *why,
                  size_t len)
{
    long long now = now_ms();
    sweep(t, now);
    struct holder *o = holder_of(t, uid);
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

static void holders_free(struct table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        for (size_t j = 0; j < t->holders[i].n; j++)
            held_free(&t->holders[i].h[j]);
        free(t->holders[i].h);
    }
    free(t->holders);
}

/* The router's socket is in a directory the router writes (sticky, so
 * protected_symlinks keeps the gate from following a link it leaves).  The
 * gate sends as root, so it also makes sure the name is a socket of the
 * router's own and not a hard link to someone else's. */
static bool router_socket_ok(const subgate_t *g, const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT; /* the router is (re)starting: sendto says so */
    if (S_ISSOCK(st.st_mode) && st.st_uid == g->router_uid && st.st_nlink == 1)
        return true;
    log_error("subscription gate: %s is not the router's socket (uid %u, %u links): not sent",
              path, (unsigned)st.st_uid, (unsigned)st.st_nlink);
    return false;
}

/* To one of the router's subscription servers: the http router's
 * (router_path) or the fastrouter's (cluster_router_path). */
static void forward_to(subgate_t *g, const char *path, const unsigned char *pkt, size_t len)
{
    if (!router_socket_ok(g, path))
        return;
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    snprintf(to.sun_path, sizeof to.sun_path, "%s", path);
    if (sendto(g->out_fd, pkt, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to,
               sizeof to) < 0 &&
        errno != ENOENT && errno != ECONNREFUSED)
        log_error("subscription gate: forward to %s: %s", path, strerror(errno));
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

/* One datagram from a container: its bytes in pkt (SUBSCRIPTION_MAX),
 * its length, and the sender's uid.  -1: nothing to act on (a packet too
 * large is refused here). */
static ssize_t receive(subgate_t *g, int fd, unsigned char *pkt, uid_t *uid)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = pkt, .iov_len = SUBSCRIPTION_MAX};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            log_error("subscription gate: recvmsg: %s", strerror(errno));
        return -1;
    }
    const struct ucred *cred = NULL;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
            cred = (const struct ucred *)CMSG_DATA(c);
    if (!cred)
        return -1; /* SO_PASSCRED always attaches them */
    *uid = cred->uid;
    if (msg.msg_flags & MSG_TRUNC) {
        subscription_t s;
        memset(&s, 0, sizeof s);
        refused(g, cred->uid, &s, "packet too large");
        return -1;
    }
    return n;
}

/* One datagram on the http socket: what it asks, forward or refuse. */
static void handle(subgate_t *g)
{
    unsigned char pkt[SUBSCRIPTION_MAX];
    uid_t uid;
    ssize_t n = receive(g, g->fd, pkt, &uid);
    if (n < 0)
        return;
    subscription_t s;
    char why[512];
    if (subscription_check(pkt, (size_t)n, uid, &s, why, sizeof why) < 0 ||
        !tls_ok(g, uid, &s, why, sizeof why) || !admit(g, &g->http, uid, &s, why, sizeof why)) {
        refused(g, uid, &s, why);
        return;
    }
    log_debug("subscription gate: container %u: %s %s -> %s", (unsigned)uid,
              s.unsubscribe ? "unsubscribe" : "subscribe", s.key, s.address);
    forward_to(g, g->router_path, pkt, (size_t)n);
}

/* ---- cluster-domain: the cluster socket ------------------------------------ */

static const struct domain_key *domain_of(const struct cluster *cl, const char *name);
static bool signed_by_owner(const struct domain_key *d, const unsigned char *pkt,
                            const subscription_t *s);

/* How many unix subscriptions of `key` the containers hold on the cluster
 * socket (vassals serving it through this node's fastrouter); `uid` alone
 * when uid > 0. */
static size_t local_holders(const subgate_t *g, const char *key, uid_t uid)
{
    size_t n = 0;
    for (size_t i = 0; i < g->cluster.n; i++) {
        const struct holder *o = &g->cluster.holders[i];
        if (uid > 0 && o->uid != uid)
            continue;
        for (size_t j = 0; j < o->n; j++)
            n += o->h[j].address[0] == '/' && !strcmp(o->h[j].key, key);
    }
    return n;
}

/* Send datagram buf to ip:port from this server's own address (IP_PKTINFO:
 * the receiving gate checks that the source is the sender it names). */
static void send_from_self(const subgate_t *g, const char *ip, const unsigned char *buf,
                           size_t len)
{
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(g->cluster_gate_port)};
    struct in_pktinfo pi = {0};
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1 ||
        inet_pton(AF_INET, g->cl.self, &pi.ipi_spec_dst) != 1) {
        log_error("cluster gate: %s or %s is not an IPv4 address: not sent", ip, g->cl.self);
        return;
    }
    union {
        char buf[CMSG_SPACE(sizeof pi)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov,
                         .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
    if (sendmsg(g->member_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        log_debug("cluster gate: send to %s:%d: %s", ip, g->cluster_gate_port, strerror(errno));
    /* A member that is down misses it; the vassal announces again in 2 s. */
}

/* Whether `ip` got this packet already from an earlier legion (a member of
 * two of this node's legions gets it once). */
static bool sent_before(const struct cluster *cl, size_t legion, const char *ip)
{
    for (size_t i = 0; i < legion; i++)
        for (size_t j = 0; j < cl->legions[i].n_nodes; j++)
            if (!strcmp(cl->legions[i].nodes[j], ip))
                return true;
    return false;
}

/* The packet, unchanged, sealed for every other member of every legion of
 * this node (every member routes it: a new Lord has the table at once),
 * followed by its certificate set's digest when it names one
 * (ssl-cluster-domain: clustercerts_sub_split). */
static void to_members(subgate_t *g, const unsigned char *pkt, size_t len,
                       const unsigned char *digest)
{
    const struct cluster *cl = &g->cl;
    unsigned char payload[SUBSCRIPTION_MAX + CLUSTERCERTS_DIGEST];
    memcpy(payload, pkt, len);
    if (digest) {
        memcpy(payload + len, digest, CLUSTERCERTS_DIGEST);
        len += CLUSTERCERTS_DIGEST;
    }
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < cl->n_legions; i++) {
        const struct member_legion *l = &cl->legions[i];
        for (size_t j = 0; j < l->n_nodes; j++) {
            if (!strcmp(l->nodes[j], cl->self) || sent_before(cl, i, l->nodes[j]))
                continue;
            err_t e;
            err_clear(&e);
            ssize_t n = cluster_seal(&l->key, CLUSTER_SUB, l->name, cl->self, now, payload, len,
                                     g->envelope, CLUSTER_MAX_ENVELOPE, &e);
            if (n < 0) {
                log_error("cluster gate: legion %s: %s", l->name, e.msg);
                return;
            }
            send_from_self(g, l->nodes[j], g->envelope, (size_t)n);
        }
    }
}

/* ssl-cluster-domain (clustercerts.h): the digest of the set a TCP packet
 * names, read back from the router's copies subcerts_check just made.  0
 * (*with false: no set, nothing to append), or -1 with `why` (too large to
 * travel: the customer is told; the node still serves the name itself). */
static int set_digest(subgate_t *g, uid_t uid, const subscription_t *s,
                      unsigned char digest[CLUSTERCERTS_DIGEST], bool *with, char *why,
                      size_t why_len)
{
    *with = false;
    if (!g->certs || !s->tls.any || s->tls.acme || s->unsubscribe)
        return 0;
    if (clustercerts_digest(subcerts_router_homes(g->certs), uid, s, digest, why, why_len) < 0)
        return -1;
    *with = true;
    return 0;
}

/* The set of an admitted packet, remembered so that a member's NEED finds
 * it (as many as the container holds subscriptions at most). */
static int offer_certificates(subgate_t *g, uid_t uid, const subscription_t *s, char *why,
                              size_t why_len)
{
    struct offer *o = NULL;
    for (size_t i = 0; i < g->n_offers && !o; i++)
        if (g->offers[i].uid == uid && !strcmp(g->offers[i].s.key, s->key) &&
            !strcmp(g->offers[i].s.tls.key, s->tls.key))
            o = &g->offers[i];
    if (!o) {
        struct offer *grown = array_room(g->offers, g->n_offers, &g->cap_offers, sizeof *grown);
        if (!grown)
            return str_why(why, why_len, "the node is out of memory");
        g->offers = grown;
        o = &g->offers[g->n_offers++];
    }
    *o = (struct offer){.uid = uid, .s = *s, .seen_ms = now_ms()};
    return 0;
}

/* Forget the sets of (uid, name) (its last holder unsubscribed), or with
 * uid 0 those not announced for SUBGATE_FORGET_MS. */
static void offers_drop(subgate_t *g, uid_t uid, const char *name)
{
    long long now = now_ms();
    size_t kept = 0;
    for (size_t i = 0; i < g->n_offers; i++) {
        const struct offer *o = &g->offers[i];
        bool gone = uid ? o->uid == uid && !strcmp(o->s.key, name)
                        : now - o->seen_ms > SUBGATE_FORGET_MS;
        if (!gone)
            g->offers[kept++] = *o;
    }
    g->n_offers = kept;
}

/* What `uid` holds on the cluster socket for s (key and address); NULL:
 * nothing (no holder is made). */
static struct held *held_by(struct table *t, uid_t uid, const subscription_t *s)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->holders[i].uid == uid)
            return held_find(&t->holders[i], s);
    return NULL;
}

/* Whether an admitted endpoint subscription goes to the members now: 1;
 * 0: it went less than ENDPOINT_EVERY_MS ago (two vassals of a container
 * announce it, or a container repeats it: dropped quietly); -1 with `why`:
 * the container had ENDPOINTS_PER_SEC sealed this second. */
static int endpoint_due(subgate_t *g, uid_t uid, const subscription_t *s, char *why,
                        size_t why_len)
{
    struct held *h = held_by(&g->cluster, uid, s);
    struct holder *o = holder_of(&g->cluster, uid);
    long long now = now_ms();
    if (!h || !o)
        return str_why(why, why_len, "the node is out of memory");
    if (h->sent_ms && now - h->sent_ms < ENDPOINT_EVERY_MS)
        return 0;
    if (now - o->second_ms >= 1000) {
        o->second_ms = now;
        o->sent = 0;
    }
    if (o->sent >= ENDPOINTS_PER_SEC)
        return str_why(why, why_len,
                       "this container announced more than %d cluster endpoints this second: "
                       "not sent to the members (a vassal announces every 2 s)",
                       ENDPOINTS_PER_SEC);
    o->sent++;
    h->sent_ms = now;
    return 1;
}

/* An endpoint unsubscription: it goes to the members only when this
 * container's endpoint subscription was sent to them (so never more of
 * them than subscriptions went, which endpoint_due bounds) and no vassal of this
 * node holds the key any more (one vassal stopping must not drop the node
 * from the Lord).  The last holder's goes at once. */
static bool cluster_endpoint_gone(subgate_t *g, uid_t uid, const subscription_t *s,
                                  const unsigned char *pkt, size_t len, char *why,
                                  size_t why_len)
{
    if (local_holders(g, s->key, 0)) {
        log_debug("cluster gate: container %u: unsubscribe %s: kept, other vassals of this "
                  "node serve it",
                  (unsigned)uid, s->key);
        return true; /* still held: the next last holder's unsubscription finds it */
    }
    const struct held *h = held_by(&g->cluster, uid, s);
    bool announced = h && h->sent_ms; /* read before admit frees it */
    if (!admit(g, &g->cluster, uid, s, why, why_len))
        return false;
    if (announced) {
        to_members(g, pkt, len, NULL);
        offers_drop(g, uid, s->key);
    }
    return true;
}

/* A TCP (endpoint) packet the policy allowed: admitted and sent on, or
 * refused with `why`. */
static bool cluster_endpoint_packet(subgate_t *g, uid_t uid, const subscription_t *s,
                                    const unsigned char *pkt, size_t len, char *why,
                                    size_t why_len)
{
    if (s->unsubscribe)
        return cluster_endpoint_gone(g, uid, s, pkt, len, why, why_len);
    if (!local_holders(g, s->key, uid)) {
        str_why(why, why_len,
                "the cluster endpoint is announced only with a socket of %s in your run/ "
                "announced on /run/subscribe/cluster first (cluster-domain does both)",
                s->key);
        return false;
    }
    unsigned char digest[CLUSTERCERTS_DIGEST];
    bool with_digest;
    if (set_digest(g, uid, s, digest, &with_digest, why, why_len) < 0 ||
        !admit(g, &g->cluster, uid, s, why, why_len) ||
        (with_digest && offer_certificates(g, uid, s, why, why_len) < 0))
        return false;
    int due = endpoint_due(g, uid, s, why, why_len);
    if (due > 0)
        to_members(g, pkt, len, with_digest ? digest : NULL);
    return due >= 0;
}

/* Whether the packet is signed by the owner of the domain it names (the
 * key the state gives for it), with `why` when not: on the cluster socket
 * the gate itself acts on a packet (it counts its holders, seals it for
 * the members), so another customer's claim must stop here. */
static bool owner_signed(const subgate_t *g, const unsigned char *pkt, const subscription_t *s,
                         char *why, size_t why_len)
{
    const struct domain_key *d = domain_of(&g->cl, s->key);
    if (!d)
        str_why(why, why_len, "%s is not a domain this node knows", s->key);
    else if (!signed_by_owner(d, pkt, s))
        str_why(why, why_len, "the packet for %s is not signed by its owner", s->key);
    else
        return true;
    return false;
}

/* One datagram on the cluster socket. */
static void handle_cluster(subgate_t *g)
{
    unsigned char pkt[SUBSCRIPTION_MAX];
    uid_t uid;
    ssize_t n = receive(g, g->cluster_fd, pkt, &uid);
    if (n < 0)
        return;
    subscription_t s;
    char why[512];
    pthread_mutex_lock(&g->cluster_lock);
    bool ok = subscription_check_cluster(pkt, (size_t)n, uid, g->cl.endpoint, &s, why,
                                         sizeof why) == 0 &&
              owner_signed(g, pkt, &s, why, sizeof why) && tls_ok(g, uid, &s, why, sizeof why);
    if (ok && s.tcp)
        ok = cluster_endpoint_packet(g, uid, &s, pkt, (size_t)n, why, sizeof why);
    else if (ok && (ok = admit(g, &g->cluster, uid, &s, why, sizeof why)))
        forward_to(g, g->cluster_router_path, pkt, (size_t)n);
    pthread_mutex_unlock(&g->cluster_lock);
    if (!ok) {
        refused(g, uid, &s, why);
        return;
    }
    log_debug("cluster gate: container %u: %s %s -> %s", (unsigned)uid,
              s.unsubscribe ? "unsubscribe" : "subscribe", s.key, s.address);
}

/* ---- cluster-domain: what other members send ------------------------------------ */

static const struct member_legion *legion_named(const struct cluster *cl, const char *name)
{
    for (size_t i = 0; i < cl->n_legions; i++)
        if (!strcmp(cl->legions[i].name, name))
            return &cl->legions[i];
    return NULL;
}

static bool is_member(const struct member_legion *l, const char *ip)
{
    for (size_t i = 0; i < l->n_nodes; i++)
        if (!strcmp(l->nodes[i], ip))
            return true;
    return false;
}

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct domain_key *)a)->name, ((const struct domain_key *)b)->name);
}

static const struct domain_key *domain_of(const struct cluster *cl, const char *name)
{
    struct domain_key k = {.name = (char *)name};
    return cl->n_domains ? bsearch(&k, cl->domains, cl->n_domains, sizeof *cl->domains, cmp_domain)
                         : NULL;
}

/* Whether the packet is signed by the domain's owner, as the router checks
 * it (SHA1, RSA): checked here too, so that another customer's claim is
 * refused with a line in the node's log (uWSGI drops it silently). */
static bool signed_by_owner(const struct domain_key *d, const unsigned char *pkt,
                            const subscription_t *s)
{
    if (!d->key || !s->sign_len)
        return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha1(), NULL, d->key) == 1 &&
              EVP_DigestVerify(ctx, pkt + s->sign_off, s->sign_len, pkt + 4, s->signed_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Whether the global budget of member refusal lines has room this minute
 * (a new minute first says how many were suppressed in the last). */
static bool member_budget(subgate_t *g, long long now)
{
    int was = 0;
    bool ok = minute_take(&g->member, now, MEMBER_LINES_PER_MIN, &was);
    if (was)
        log_info("cluster gate: %d more envelope refusals suppressed in the last minute", was);
    return ok;
}

/* A member's refusal: the node's log, at most MEMBER_LINES_PER_SOURCE lines
 * a minute per source address (the same line from it once) and
 * MEMBER_LINES_PER_MIN from all.  The throttle is keyed on the datagram's
 * source address only: the legion, names and sizes in `why` are the
 * sender's to choose, and varying them must not buy more lines. */
static void member_refused(subgate_t *g, in_addr_t from, const char *src, const char *why)
{
    uint32_t h = hash(why);
    /* Fibonacci hashing, top bits: addresses differing in one byte spread. */
    struct source_budget *b = &g->sources[((uint32_t)from * 2654435761u >> 20) % REFUSAL_SLOTS];
    long long now = now_ms();
    if (b->src != from) /* another source had the slot: a fresh minute */
        *b = (struct source_budget){.src = from, .m = {.minute_ms = now}};
    else if (b->last_hash == h && now - b->m.minute_ms < 60000)
        return; /* said already this minute */
    b->last_hash = h;
    int was; /* this source's suppressed lines are counted in the global budget */
    if (!minute_take(&b->m, now, MEMBER_LINES_PER_SOURCE, &was)) {
        g->member.suppressed++;
        return;
    }
    if (member_budget(g, now))
        log_info("cluster gate: envelope from %s refused: %s", src, why);
}

/* The container whose home holds every file of a packet's set: the uid of
 * "/containers/<uid>/" its sni_key starts with, shared by the others; 0:
 * none. */
static uid_t set_owner(const subscription_t *s)
{
    const char *p = s->tls.key;
    if (strncmp(p, "/containers/", 12) != 0 || !(p[12] >= '1' && p[12] <= '9'))
        return 0;
    char *end;
    unsigned long u = strtoul(p + 12, &end, 10);
    if (*end != '/' || u <= UID_BASE || u > 0x7fffffffUL)
        return 0;
    size_t hl = (size_t)(end + 1 - p);
    if (strncmp(s->tls.crt, p, hl) != 0 || (s->tls.ca[0] && strncmp(s->tls.ca, p, hl) != 0))
        return 0;
    return (uid_t)u;
}

/* Send a small envelope of `type` to member `to` of legion l. */
static void seal_to(subgate_t *g, const struct member_legion *l, uint8_t type, const char *to,
                    const unsigned char *payload, size_t len)
{
    err_t e;
    err_clear(&e);
    ssize_t n = cluster_seal(&l->key, type, l->name, g->cl.self, (long long)time(NULL), payload,
                             len, g->envelope, CLUSTER_MAX_ENVELOPE, &e);
    if (n < 0)
        log_error("cluster gate: legion %s: %s", l->name, e.msg);
    else
        send_from_self(g, to, g->envelope, (size_t)n);
}

/* ssl-cluster-domain: a packet with a set's digest goes to the router only
 * once that set is installed here (else the router would find no files);
 * until then the sender is asked for it (a NEED) and the packet held back:
 * the next announcement, 2 s later, gets through.  True: forward it. */
static bool set_here(subgate_t *g, const struct member_legion *l, const cluster_header_t *h,
                     subscription_t *s, const unsigned char *digest, char *why, size_t why_len)
{
    /* subscription_parse fills the paths only (any and acme are the
     * sending gate's policy): a set is files of one container's home. */
    uid_t uid = s->tls.key[0] && s->tls.crt[0] ? set_owner(s) : 0;
    if (!uid) {
        str_why(why, why_len, "the packet for %s carries a digest but names no certificate "
                              "files of one container", s->key);
        return false;
    }
    s->tls.any = true; /* what clustercerts reads back */
    if (!g->cc || clustercerts_held(g->cc, uid, s, digest, now_ms()))
        return true; /* no router_https here: the name is served over HTTP */
    if (!clustercerts_ask(g->cc, h->sender, uid, s->tls.key, digest, now_ms()))
        return false; /* that set was refused here lately (logged then) */
    unsigned char need[600];
    err_t e;
    err_clear(&e);
    ssize_t n = clustercerts_need(uid, s->tls.key, digest, need, sizeof need, &e);
    if (n < 0)
        str_why(why, why_len, "%s", e.msg);
    else {
        log_debug("cluster gate: member %s: asking for the certificates of %s", h->sender, s->key);
        seal_to(g, l, CLUSTER_NEED, h->sender, need, (size_t)n);
    }
    return false;
}

/* The packet a member forwarded (and the digest of the set it names): its
 * endpoint, a domain of ours. */
static int member_packet(subgate_t *g, const struct member_legion *l, const cluster_header_t *h,
                         const unsigned char *payload, size_t plen, char *why, size_t why_len)
{
    subscription_t s;
    size_t len;
    const unsigned char *digest, *pkt = payload;
    err_t e;
    err_clear(&e);
    if (clustercerts_sub_split(payload, plen, &len, &digest, &e) < 0)
        return str_why(why, why_len, "%s", e.msg);
    if (subscription_parse(pkt, len, &s, why, why_len) < 0)
        return -1;
    char endpoint[300];
    snprintf(endpoint, sizeof endpoint, "%s:%d", h->sender, g->cluster_port);
    if (strcmp(s.address, endpoint) != 0)
        return str_why(why, why_len, "the packet of %s names %s, not the sender's endpoint %s",
                       s.key, s.address, endpoint);
    const struct domain_key *d = domain_of(&g->cl, s.key);
    if (!d)
        return str_why(why, why_len, "%s is not a domain this node knows", s.key);
    if (!signed_by_owner(d, pkt, &s))
        return str_why(why, why_len, "the packet for %s is not signed by its owner", s.key);
    if (digest && !set_here(g, l, h, &s, digest, why, why_len))
        return why[0] ? -1 : 0;
    log_debug("cluster gate: member %s: %s %s", h->sender,
              s.unsubscribe ? "unsubscribe" : "subscribe", s.key);
    forward_to(g, g->router_path, pkt, len);
    return 0;
}

/* Whether a CERT for this (member, set) may go now (CERT_EVERY_MS). */
static bool cert_due(subgate_t *g, const char *member, const struct offer *o)
{
    char id[1024];
    snprintf(id, sizeof id, "%s %u %s %s", member, (unsigned)o->uid, o->s.key, o->s.tls.key);
    uint32_t hh = hash(id);
    struct cert_sent *c = &g->cert_sent[hh % REFUSAL_SLOTS];
    long long now = now_ms();
    if (c->hash == hh && now - c->at_ms < CERT_EVERY_MS)
        return false;
    *c = (struct cert_sent){.hash = hh, .at_ms = now};
    return true;
}

/* A member's NEED: every set this node announces with that (uid, key path)
 * goes to it, once per CERT_EVERY_MS, in a CERT sealed for it alone.  A set
 * that cannot be packed is said in the customer's logs/router.log. */
static int member_need(subgate_t *g, const struct member_legion *l, const cluster_header_t *h,
                       const unsigned char *payload, size_t len, char *why, size_t why_len)
{
    uid_t uid;
    char key_path[256];
    unsigned char digest[CLUSTERCERTS_DIGEST];
    err_t e;
    err_clear(&e);
    if (clustercerts_need_parse(payload, len, &uid, key_path, digest, &e) < 0)
        return str_why(why, why_len, "%s", e.msg);
    for (size_t i = 0; i < g->n_offers; i++) {
        const struct offer *o = &g->offers[i];
        if (o->uid != uid || strcmp(o->s.tls.key, key_path) != 0 || !cert_due(g, h->sender, o))
            continue;
        char fail[600] = "";
        ssize_t n = clustercerts_pack(subcerts_router_homes(g->certs), uid, &o->s, g->packed,
                                      CLUSTER_MAX_PAYLOAD, digest, fail, sizeof fail);
        if (n < 0) {
            refused(g, uid, &o->s, fail);
            continue;
        }
        log_debug("cluster gate: the certificates of %s to %s (%zd bytes)", o->s.key, h->sender,
                  n);
        seal_to(g, l, CLUSTER_CERT, h->sender, g->packed, (size_t)n);
        sodium_memzero(g->packed, (size_t)n);
    }
    return 0;
}

/* A member's CERT: checked and installed for this node's router (the
 * payload is wiped by clustercerts_install, or here). */
static int member_cert(subgate_t *g, const cluster_header_t *h, unsigned char *payload,
                       size_t len, char *why, size_t why_len)
{
    if (!g->cc) {
        sodium_memzero(payload, len);
        return str_why(why, why_len, "a certificate set, but this node does not serve HTTPS "
                                     "(no router_https)");
    }
    if (clustercerts_install(g->cc, h->sender, payload, len, now_ms(), why, why_len) < 0)
        return -1;
    log_debug("cluster gate: member %s: a certificate set installed (%zu bytes)", h->sender, len);
    return 0;
}

/* An envelope, checked before it is opened: a legion of ours, its sender
 * a member (not us), sent from that member's own address. */
static const struct member_legion *envelope_legion(const subgate_t *g, const cluster_header_t *h,
                                                   const char *src, char *why, size_t why_len)
{
    const struct member_legion *l = legion_named(&g->cl, h->legion);
    if (!l)
        str_why(why, why_len, "legion %s is not one of this node's", h->legion);
    else if (!is_member(l, h->sender) || (g->cl.self && !strcmp(h->sender, g->cl.self)))
        str_why(why, why_len, "%s is not another member of legion %s", h->sender, h->legion);
    else if (strcmp(h->sender, src) != 0)
        str_why(why, why_len, "it names %s as its sender", h->sender);
    else
        return l;
    return NULL;
}

/* One datagram on the gate-to-gate socket. */
static void handle_member(subgate_t *g)
{
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(g->member_fd, g->envelope, CLUSTER_MAX_ENVELOPE, MSG_DONTWAIT,
                         (struct sockaddr *)&from, &flen);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            log_error("cluster gate: recvfrom: %s", strerror(errno));
        return;
    }
    char src[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &from.sin_addr, src, sizeof src);
    cluster_header_t h;
    err_t e;
    err_clear(&e);
    char why[600] = "";
    unsigned char *payload = g->opened;
    pthread_mutex_lock(&g->cluster_lock);
    const struct member_legion *l = NULL;
    ssize_t len = -1;
    if (cluster_peek(g->envelope, (size_t)n, &h, &e) < 0)
        snprintf(why, sizeof why, "%s", e.msg);
    else if ((l = envelope_legion(g, &h, src, why, sizeof why)) && !l->replay)
        snprintf(why, sizeof why, "the node is out of memory");
    else if (l && (len = cluster_open(&l->key, &h, l->replay, (long long)time(NULL),
                                      g->envelope, (size_t)n, payload, CLUSTER_MAX_PAYLOAD,
                                      &e)) < 0)
        snprintf(why, sizeof why, "%s", e.msg);
    else if (len >= 0 && h.type == CLUSTER_SUB)
        member_packet(g, l, &h, payload, (size_t)len, why, sizeof why);
    else if (len >= 0 && h.type == CLUSTER_NEED)
        member_need(g, l, &h, payload, (size_t)len, why, sizeof why);
    else if (len >= 0 && h.type == CLUSTER_CERT)
        member_cert(g, &h, payload, (size_t)len, why, sizeof why);
    else if (len >= 0)
        snprintf(why, sizeof why, "envelope type %u is not handled by this node", h.type);
    pthread_mutex_unlock(&g->cluster_lock);
    if (why[0])
        member_refused(g, from.sin_addr.s_addr, src, why);
}

/* ---- cluster-domain: the state ------------------------------------------------------ */

static void cluster_clear(struct cluster *cl)
{
    for (size_t i = 0; i < cl->n_legions; i++) {
        free(cl->legions[i].name);
        for (size_t j = 0; j < cl->legions[i].n_nodes; j++)
            free(cl->legions[i].nodes[j]);
        free(cl->legions[i].nodes);
        cluster_replay_free(cl->legions[i].replay);
        sodium_memzero(&cl->legions[i].key, sizeof cl->legions[i].key);
    }
    free(cl->legions);
    for (size_t i = 0; i < cl->n_domains; i++) {
        free(cl->domains[i].name);
        EVP_PKEY_free(cl->domains[i].key);
    }
    free(cl->domains);
    free(cl->self);
    memset(cl, 0, sizeof *cl);
}

/* A legion's copy; false when out of memory or it cannot be used (logged
 * once per state change: the caller logs nothing more). */
static bool legion_copy(const spec_legion_t *in, struct member_legion *out)
{
    err_t e;
    err_clear(&e);
    if (!in->name || !in->key || cluster_key_derive(in->key, &out->key, &e) < 0) {
        log_error("cluster gate: legion %s: %s; not used for cluster domains",
                  in->name ? in->name : "?", e.msg[0] ? e.msg : "no name or key");
        return false;
    }
    if (!(out->name = strdup(in->name)) ||
        (in->n_nodes && !(out->nodes = calloc(in->n_nodes, sizeof *out->nodes))))
        return false;
    for (size_t j = 0; j < in->n_nodes; j++) {
        if (!in->nodes[j])
            continue;
        if (!(out->nodes[out->n_nodes] = strdup(in->nodes[j])))
            return false;
        out->n_nodes++;
    }
    return true;
}

/* A domain owner's PEM public key; NULL when none or unreadable. */
static EVP_PKEY *public_key(const char *pem)
{
    if (!pem || !*pem)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

static int cluster_build(struct cluster *cl, int port, const char *self,
                         const spec_legion_t *legions, size_t n_legions,
                         const spec_domain_t *domains, size_t n_domains)
{
    if ((self && *self && !(cl->self = strdup(self))) ||
        (n_legions && !(cl->legions = calloc(n_legions, sizeof *cl->legions))) ||
        (n_domains && !(cl->domains = calloc(n_domains, sizeof *cl->domains))))
        return -1;
    for (size_t i = 0; i < n_legions; i++) {
        struct member_legion *l = &cl->legions[cl->n_legions];
        if (legion_copy(&legions[i], l))
            cl->n_legions++;
        else if (l->name) { /* out of memory half-way: keep it for cluster_clear */
            cl->n_legions++;
            return -1;
        }
    }
    for (size_t i = 0; i < n_domains; i++) {
        if (!domains[i].name)
            continue;
        struct domain_key *d = &cl->domains[cl->n_domains++];
        if (!(d->name = strdup(domains[i].name)))
            return -1;
        d->key = public_key(domains[i].pubkey);
    }
    if (cl->n_domains)
        qsort(cl->domains, cl->n_domains, sizeof *cl->domains, cmp_domain);
    if (cl->self && cl->n_legions && port > 0)
        snprintf(cl->endpoint, sizeof cl->endpoint, "%s:%d", cl->self, port);
    return 0;
}

/* A legion that stays keeps its replay cache (a new state must not make an
 * envelope seen before acceptable again); a new one gets its own (under
 * cluster_lock: the gate thread uses them). */
static void keep_replay_caches(struct cluster *fresh, struct cluster *old)
{
    for (size_t i = 0; i < fresh->n_legions; i++) {
        struct member_legion *l = &fresh->legions[i];
        for (size_t j = 0; j < old->n_legions && !l->replay; j++)
            if (!strcmp(old->legions[j].name, l->name)) {
                l->replay = old->legions[j].replay;
                old->legions[j].replay = NULL;
            }
        if (!l->replay && !(l->replay = cluster_replay_new()))
            log_error("cluster gate: legion %s: out of memory; its envelopes are refused",
                      l->name);
    }
}

void subgate_set_cluster(subgate_t *g, const char *server_address, const spec_legion_t *legions,
                         size_t n_legions, const spec_domain_t *domains, size_t n_domains)
{
    if (!g || g->cluster_fd < 0)
        return;
    struct cluster fresh = {0};
    if (cluster_build(&fresh, g->cluster_port, server_address, legions, n_legions, domains,
                      n_domains) < 0) {
        log_error("cluster gate: out of memory; keeping the previous legions");
        cluster_clear(&fresh);
        return;
    }
    pthread_mutex_lock(&g->cluster_lock);
    struct cluster old = g->cl;
    keep_replay_caches(&fresh, &old);
    g->cl = fresh;
    pthread_mutex_unlock(&g->cluster_lock);
    cluster_clear(&old);
}

void subgate_cluster_endpoint(const spec_state_t *state, int port, char *out, size_t len)
{
    const char *self = state->server.address;
    if (port > 0 && state->n_legions && self && *self)
        snprintf(out, len, "%s:%d", self, port);
    else if (len)
        out[0] = '\0';
}

static void *gate_main(void *arg)
{
    subgate_t *g = arg;
    /* A negative fd (no cluster socket) is skipped by poll. */
    struct pollfd p[4] = {{.fd = g->fd, .events = POLLIN},
                          {.fd = g->stop_fd, .events = POLLIN},
                          {.fd = g->cluster_fd, .events = POLLIN},
                          {.fd = g->member_fd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, 4, SUBGATE_SWEEP_MS);
        long long now = now_ms();
        if (g->certs && now - g->certs_swept_ms >= SUBGATE_SWEEP_MS) {
            g->certs_swept_ms = now;
            subcerts_sweep(g->certs, now);
            clustercerts_sweep(g->cc, now);
            offers_drop(g, 0, NULL);
        }
        if (n < 0 && errno != EINTR) {
            log_error("subscription gate: poll: %s", strerror(errno));
            break;
        }
        if (n > 0 && p[1].revents)
            break;
        if (n > 0 && p[0].revents)
            handle(g);
        if (n > 0 && p[2].revents)
            handle_cluster(g);
        if (n > 0 && p[3].revents)
            handle_member(g);
    }
    return NULL;
}

/* A socket containers send to, in *fd (closed by subgate_stop). */
static int bind_listen(int *fd, const char *path, err_t *e)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return err_set(e, ERR_INPUT, "subscription socket path too long: %s", path);
    strcpy(a.sun_path, path);
    if ((*fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return err_set(e, ERR_INTERNAL, "socket: %s", strerror(errno));
    int on = 1;
    if (setsockopt(*fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0)
        return err_set(e, ERR_INTERNAL, "SO_PASSCRED: %s", strerror(errno));
    if (unlink(path) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove %s: %s", path, strerror(errno));
    if (bind(*fd, (struct sockaddr *)&a, sizeof a) < 0)
        return err_set(e, ERR_INTERNAL, "bind %s: %s", path, strerror(errno));
    /* Every container's uid sends to it; what they may say is checked. */
    if (chmod(path, 0666) < 0)
        return err_set(e, ERR_INTERNAL, "chmod %s: %s", path, strerror(errno));
    return 0;
}

/* The gate-to-gate UDP socket, bound on cluster_gate_bind:cluster_gate_port. */
static int bind_member(subgate_t *g, const char *ip, err_t *e)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g->cluster_gate_port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
        return err_set(e, ERR_INPUT, "cluster gate: %s is not an IPv4 address", ip);
    if ((g->member_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return err_set(e, ERR_INTERNAL, "cluster gate: socket: %s", strerror(errno));
    if (bind(g->member_fd, (struct sockaddr *)&a, sizeof a) < 0)
        return err_set(e, ERR_INTERNAL, "cluster gate: bind UDP %s:%d (cluster_gate_port): %s",
                       ip, g->cluster_gate_port, strerror(errno));
    return 0;
}

/* cluster-domain: the cluster socket, the member socket, their buffers. */
static int cluster_setup(subgate_t *g, const subgate_opts_t *o, err_t *e)
{
    g->cluster_port = o->cluster_port;
    g->cluster_gate_port = o->cluster_gate_port;
    if (!o->cluster_router_path || o->cluster_port <= 0 || o->cluster_gate_port <= 0 ||
        o->cluster_gate_port > 65535)
        return err_set(e, ERR_INPUT, "cluster gate: needs the fastrouter's socket, cluster_port "
                                     "and cluster_gate_port");
    if (!(g->cluster_router_path = str_printf("%s", o->cluster_router_path)) ||
        !(g->envelope = malloc(CLUSTER_MAX_ENVELOPE)) ||
        !(g->opened = malloc(CLUSTER_MAX_PAYLOAD)) || !(g->packed = malloc(CLUSTER_MAX_PAYLOAD)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    /* ssl-cluster-domain: the sets other members send (only with HTTPS). */
    clustercerts_opts_t cco = {.certs = g->certs, .max_sets = CLUSTER_SETS_PER_MEMBER,
                               .forget_ms = SUBGATE_FORGET_MS};
    if (g->certs && !(g->cc = clustercerts_new(&cco, e)))
        return -1;
    if (strlen(g->cluster_router_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return err_set(e, ERR_INPUT, "fastrouter subscription socket path too long: %s",
                       g->cluster_router_path);
    return bind_listen(&g->cluster_fd, o->cluster_listen_path, e) < 0 ||
                   bind_member(g, o->cluster_gate_bind ? o->cluster_gate_bind : "0.0.0.0", e) < 0
               ? -1
               : 0;
}

subgate_t *subgate_start(const subgate_opts_t *o, err_t *e)
{
    subgate_t *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    g->fd = g->out_fd = g->stop_fd = g->cluster_fd = g->member_fd = -1;
    pthread_mutex_init(&g->cluster_lock, NULL);
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
    if ((g->out_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        err_set(e, ERR_INTERNAL, "socket: %s", strerror(errno));
        goto fail;
    }
    if (bind_listen(&g->fd, o->listen_path, e) < 0 ||
        (o->cluster_listen_path && cluster_setup(g, o, e) < 0))
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
    if (g->cluster_fd >= 0)
        close(g->cluster_fd);
    if (g->member_fd >= 0)
        close(g->member_fd);
    holders_free(&g->http);
    holders_free(&g->cluster);
    cluster_clear(&g->cl);
    clustercerts_free(g->cc);
    free(g->offers);
    free(g->envelope);
    if (g->opened)
        sodium_memzero(g->opened, CLUSTER_MAX_PAYLOAD);
    free(g->opened);
    free(g->packed);
    pthread_mutex_destroy(&g->cluster_lock);
    subcerts_free(g->certs);
    free(g->router_path);
    free(g->cluster_router_path);
    free(g->containers_dir);
    free(g);
}
