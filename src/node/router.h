/* router.h - the node's HTTP and HTTPS router (docs/ROUTER.md).
 *
 * A separate uWSGI process running our patched http router plugin
 * (imperium_http_plugin.so, built by make from Debian's uwsgi-src and
 * uwsgi/, found beside imperium-node): one hop from the client to the
 * vassal's socket (`--http ADDR [--https ADDR,crt,key]
 * --http-subscription-server ... --subscriptions-sign-check SHA1:<keys>
 * --subscription-dotsplit --http-keepalive`), supervised by the daemon:
 * started when missing, restarted with backoff when it dies, adopted (not
 * restarted) by a new daemon, left running when the daemon exits (like the
 * containers), stopped by `stop-all`.
 *
 * HTTPS (router_https): names get their certificates from the vassals'
 * ssl-domain subscriptions (SNI; copies the gate checked, under homes/);
 * others the default certificate tls/default.crt, made at start when
 * missing.  The patch answers 404 for an unknown Host, 421 when an HTTPS
 * request's Host is not its SNI name, ACME challenges from acme/challenges/.
 *
 * The keys directory holds <domain>.pem, the public key of the customer
 * owning each domain in the API (the channel's "domains"): the router
 * accepts a subscription for a domain only when signed by that key.
 *
 * It faces the internet, so it never runs as root: uWSGI binds the
 * listening address (a shared socket, kept across reloads) and drops to
 * `router_user` (uid, gid, no supplementary groups) before anything else;
 * no_new_privs is set before the exec.  What it needs is granted by owner
 * and mode: keys/ and the key files are root's, readable by its group;
 * its own sockets live in run/ (sticky, its group may add); each
 * container's <uid>/ and run/ let its group search, and the sockets made
 * in run/ are its group's (docs/ROUTER.md). */
#ifndef IMP_NODE_ROUTER_H
#define IMP_NODE_ROUTER_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "../common/err.h"
#include "spec.h"

/* The router's user when the config names none; created (useradd
 * --system) when missing, as a Debian package's postinst would. */
#define ROUTER_DEFAULT_USER "imperium-router"
/* Where the router sees its directory (<state_dir>/router): bound there in
 * its mount namespace, since the state directory is root's only (0700). */
#define ROUTER_INSIDE "/run/imperium-router"
/* The router runs one http process per core, at most this many; each
 * answers a stats socket of its own (router_stats_path(), then ".1", ...),
 * which the sampler reads and sums. */
#define ROUTER_MAX_PROCESSES 8

/* Inside every container: the directory holding the subscription socket. */
#define ROUTER_SUBSCRIBE_INSIDE "/run/subscribe"
#define ROUTER_SUBSCRIBE_SOCKET "http"
#define ROUTER_SUBSCRIBE_CLUSTER "cluster" /* cluster-domain's (subgate.h) */

typedef struct {
    const char *uwsgi;          /* host path of the uwsgi binary */
    const char *http;           /* listen address, e.g. 127.0.0.1:8000 or 0.0.0.0:80 */
    const char *https;          /* HTTPS listen address (e.g. 0.0.0.0:443), NULL: none */
    const char *plugin_dir;     /* where imperium_http_plugin.so is; NULL: beside this
                                   program */
    const char *dir;            /* <state_dir>/router: keys/, subscribe/, homes/, run/,
                                   tls/, acme/, log, pid */
    const char *user;           /* the router's unprivileged user (ROUTER_DEFAULT_USER) */
    /* cluster-domain (docs/CLUSTER.md): > 0 runs uWSGI's fastrouter on
     * 0.0.0.0:cluster_port (the node's cluster endpoint, which the Lord's
     * router reaches), its subscription server router_cluster_server(). */
    int cluster_port;
} router_opts_t;

typedef struct router router_t;

/* Find (or create, for the default name) the router's user, create the
 * directories (dir, keys/, homes/, tls/, acme/, acme/challenges/,
 * acme/certs/: root and the router's group, 0710; run/ 01733; subscribe/
 * 0755), make the default certificate when HTTPS is on and it is missing,
 * make sure fs.protected_symlinks is on, and adopt a router a previous
 * daemon left running as that user (one running as anyone else is
 * stopped).  Nothing is started yet. */
router_t *router_new(const router_opts_t *o, err_t *e);
/* Forget it; the router keeps running. */
void router_free(router_t *r);

/* The subscribe/ directory (bind-mounted as /run/subscribe in containers),
 * where the subscription gate listens (subgate.h). */
const char *router_subscribe_dir(const router_t *r);
/* homes/: <uid>/run/ for each container, the router's /containers. */
const char *router_sockets_dir(const router_t *r);
/* The router's own subscription server socket (only the gate sends to it). */
const char *router_subscription_server(const router_t *r);
/* The fastrouter's (cluster_port > 0), "<dir>/run/cluster-subscription.sock". */
const char *router_cluster_server(const router_t *r);
/* The router's stats socket (the sampler reads per-domain hits there),
 * for the router directory dir: "<dir>/run/router-stats.sock", malloc'd. */
char *router_stats_path(const char *dir);
/* The router's user and group. */
uid_t router_uid(const router_t *r);
gid_t router_gid(const router_t *r);

/* A pidfd that polls readable when the router ended (-1 while none runs);
 * its number changes when the router is restarted: call router_fd again. */
int router_fd(const router_t *r);
/* The pidfd polled readable: notice the end, plan the restart. */
void router_events(router_t *r);

/* The state's domains (spec.h): rewrite keys/ to match.  A key that
 * changed or went away makes the router reload (it caches a domain's key
 * while that domain has subscribers). */
void router_set_domains(router_t *r, const spec_domain_t *domains, size_t n);

/* Start the router when it is due; returns true when the pidfd changed. */
bool router_converge(router_t *r);
/* Milliseconds clock value of the next planned action, -1 for none. */
long long router_next_deadline(const router_t *r);

/* stop-all: stop a running router recorded in dir (SIGINT, SIGKILL after
 * timeout_ms).  0 when none runs any more. */
int router_stop_dir(const char *dir, int timeout_ms, err_t *e);

#endif
