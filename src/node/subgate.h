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
 * never delays a subscription or, more importantly, an unsubscription. */
#ifndef IMP_NODE_SUBGATE_H
#define IMP_NODE_SUBGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"

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
} subgate_opts_t;

#define SUBGATE_DEFAULT_MAX 64
#define SUBGATE_FORGET_MS (5 * 60 * 1000)
#define SUBGATE_SWEEP_MS (30 * 1000) /* the certificate copies' sweep (subcerts_sweep) */
#define SUBGATE_REFUSALS_PER_MIN 10  /* refusal lines a container's log gets a minute */

/* Bind the socket and start the thread. */
subgate_t *subgate_start(const subgate_opts_t *o, err_t *e);
/* Stop the thread and close the sockets (NULL is fine). */
void subgate_stop(subgate_t *g);

#endif
