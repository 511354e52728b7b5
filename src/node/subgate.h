/* subgate.h - the subscription gate: the only way from the containers to
 * the HTTP router's subscription server (docs/ROUTER.md).
 *
 * Every container sees the gate's datagram socket as /run/subscribe/http.
 * The kernel tells the gate who sent each packet (SO_PASSCRED: the sender's
 * uid is its container's, and a process without privileges cannot lie
 * about it); the gate forwards the packet, unchanged so its signature
 * still verifies, to the router's own socket (a socket of the router's
 * user, in its sticky run/ directory) when subscription_check() allows it, and otherwise drops it,
 * saying why in the node's log and in the container's logs/router.log.
 * A packet naming certificate files (ssl-domain) is forwarded only once
 * the files are checked and copied where the router reads them
 * (subcerts.h); the TLS check comes before the max_subscriptions count, so
 * a refused packet holds no place.  Every SUBGATE_SWEEP_MS the thread drops
 * the copies nobody announced for SUBGATE_FORGET_MS.  A refusal is logged
 * once a minute per (container, reason), and at most
 * SUBGATE_REFUSALS_PER_MIN lines a minute per container (then one line
 * saying how many more were suppressed).
 *
 * It also bounds what a container makes the router hold: at most
 * max_subscriptions (domain, socket) subscriptions per container at once
 * (each is a node in the router's table, which every metrics round reads).
 * One is counted from its first announcement until its unsubscription, or
 * until it has not been announced for SUBGATE_FORGET_MS (its vassal died
 * without unsubscribing: the router drops it on the next request for its
 * domain).  A new one beyond the bound is refused like any other.
 *
 * It runs in a thread of its own so a busy daemon (starting containers)
 * never delays a subscription or, more importantly, an unsubscription.
 *
 * cluster-domain (docs/CLUSTER.md, docs/ROUTER.md "Clusters"): a second
 * socket, /run/subscribe/cluster.  A unix address there is checked as on
 * the http socket and forwarded to the router's fastrouter (the member's
 * cluster endpoint, which the Lord's router reaches over the nodes'
 * network).  The one TCP address allowed is this node's endpoint
 * "<server address>:<cluster_port>" (IMPERIUM_CLUSTER), and only while the
 * same container holds a unix subscription of that key on the cluster
 * socket; that packet goes, unchanged and sealed with the legion's secret
 * (clustercrypt.h), to the gate of every other member of this node's
 * legions, whose http router then routes the name to this node too (one
 * (container, key) at most once a second, 20 a container a second: each
 * envelope fills the members' replay caches).  Every packet on the cluster
 * socket must be signed by its domain's owner (the state's key).  Its
 * unsubscription goes only when the last local holder of the key left (one
 * vassal stopping must not drop the whole node from the Lord).  The
 * receiving side (UDP cluster_gate_port) accepts an envelope only from a
 * member of the legion it names, sent from that member's own address,
 * whose packet names that member's endpoint and a domain of this node's
 * state; the http router's signature check does the rest (a customer can
 * no more hijack a cluster domain than a local one).  Each legion has its
 * own replay cache; an envelope naming this node as its sender is refused.
 *
 * ssl-cluster-domain (clustercerts.h): the endpoint packet of a set the
 * gate checked travels with the set's digest; a member that does not hold
 * it holds the packet back and answers a NEED, this gate answers with one
 * CERT (the key inside the sealed envelope only, buffers wiped), and the
 * member installs the checked copies for its router before it forwards
 * the next announcement. */
#ifndef IMP_NODE_SUBGATE_H
#define IMP_NODE_SUBGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "spec.h"

typedef struct subgate subgate_t;

typedef struct {
    const char *listen_path;    /* the socket containers send to (created 0666) */
    const char *router_path;    /* the router's subscription server */
    uid_t router_uid;           /* its owner: the gate sends only to a socket of theirs */
    const char *containers_dir; /* homes: <containers_dir>/<uid>/logs/router.log */
    int max_subscriptions;      /* per container (0: SUBGATE_DEFAULT_MAX) */
    /* HTTPS (subcerts.h): the checked copies of the sni_* files a container
     * names go to <router_homes>/<uid>/<rel>, root:router_gid.  NULL: every
     * packet with sni_* fields is refused. */
    const char *router_homes;
    gid_t router_gid;
    /* auto-ssl-domain: a packet naming the ACME pair of its own key is
     * forwarded when acme_want(acme_arg, key, uid, why, len) (thread-safe,
     * cheap: it is called at every announcement) takes the name; refused
     * with its `why` when it returns false.  NULL: refused. */
    bool (*acme_want)(void *arg, const char *name, uid_t uid, char *why, size_t why_len);
    void *acme_arg;
    /* cluster-domain: NULL cluster_listen_path: no cluster socket (and no
     * gate-to-gate socket). */
    const char *cluster_listen_path; /* <subscribe dir>/cluster (created 0666) */
    const char *cluster_router_path; /* the fastrouter's subscription server */
    int cluster_port;                /* the members' fastrouter port (their endpoints) */
    int cluster_gate_port;           /* UDP, gate to gate (bound on cluster_gate_bind) */
    const char *cluster_gate_bind;   /* NULL: 0.0.0.0 (the unit tests: 127.0.0.1) */
} subgate_opts_t;

#define SUBGATE_DEFAULT_MAX 64
#define SUBGATE_DEFAULT_CLUSTER_PORT 3032      /* cluster_port: the fastrouter */
#define SUBGATE_DEFAULT_CLUSTER_GATE_PORT 3033 /* cluster_gate_port: gate to gate */
#define SUBGATE_FORGET_MS (5 * 60 * 1000)
#define SUBGATE_SWEEP_MS (30 * 1000) /* the certificate copies' sweep (subcerts_sweep) */
#define SUBGATE_REFUSALS_PER_MIN 10  /* refusal lines a container's log gets a minute */

/* Bind the socket and start the thread. */
subgate_t *subgate_start(const subgate_opts_t *o, err_t *e);
/* Stop the thread and close the sockets (NULL is fine). */
void subgate_stop(subgate_t *g);

/* A new state (any thread; the gate copies what it needs): this server's
 * address, its legions (a legion without a key is left out, logged) and
 * the domains this node's router knows (what a member may forward).
 * Without a cluster socket it does nothing. */
void subgate_set_cluster(subgate_t *g, const char *server_address, const spec_legion_t *legions,
                         size_t n_legions, const spec_domain_t *domains, size_t n_domains);

/* IMPERIUM_CLUSTER for the containers of `state`: "<server address>:<port>"
 * when port > 0 and the server is in a legion, else "" (none). */
void subgate_cluster_endpoint(const spec_state_t *state, int port, char *out, size_t len);

#endif
