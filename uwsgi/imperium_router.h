/* imperium_router.h - what Imperium adds to uWSGI 2.0's http router
 * (docs/ROUTER.md, docs/design/issue18/CONTRACT.md).
 *
 * uwsgi/imperium_router.c is compiled into two plugins built from Debian's
 * uwsgi-src (the Makefile's imperium plugin rules): into imperium_corerouter
 * with IMPERIUM_COREROUTER defined (the subscription side: renewing a name's
 * TLS context) and into imperium_http (the request side).  The patches in
 * uwsgi/patches/ only call the functions declared here. */
#ifndef IMPERIUM_ROUTER_H
#define IMPERIUM_ROUTER_H

struct corerouter_peer;
struct http_session;
struct uwsgi_corerouter;
struct uwsgi_subscribe_node;
struct uwsgi_subscribe_req;

#ifdef IMPERIUM_COREROUTER

/* After uwsgi_add_subscribe_node() accepted a packet (node != NULL: its
 * signature verified): when the name's TLS context was made from files that
 * changed since (device, inode, size, mtime), replace it.  Returns node. */
struct uwsgi_subscribe_node *imperium_cr_subscribed(struct uwsgi_corerouter *ucr,
                                                    struct uwsgi_subscribe_req *usr,
                                                    struct uwsgi_subscribe_node *node);

/* A packet another http process received and checked, passed on through
 * uWSGI's internal pipe: uWSGI parses it without the signed part, so with
 * --subscriptions-sign-check every announcement after the first was refused
 * in the other processes (their nodes died 17 s later).  Sets usr->base. */
void imperium_cr_signed_base(struct uwsgi_subscribe_req *usr, char *packet, ssize_t len);

/* uWSGI runs the router's stats server in its first http process only, and
 * each process counts the requests it routes: every other process gets a
 * stats socket of its own, "<--http-stats>.<n>" (n = 1, 2, ...), and the
 * node's sampler sums them.  1 when this process (not the first) should
 * bind one: ucr->stats_server is then its path. */
int imperium_cr_stats_server(struct uwsgi_corerouter *ucr, int id, int first);

#else

/* --imperium-acme-dir: where HTTP-01 challenge files are (NULL: none). */
extern char *imperium_acme_dir;

/* The default HTTPS context: our SNI callback, no session resumption. */
void imperium_https_context(SSL_CTX *ctx);

/* A request's headers are parsed (new_peer->key is its Host), before the
 * subscription lookup: normalises the key, answers ACME challenges and
 * misdirected HTTPS requests.  0: route it; 1: answered; -1: close. */
int imperium_http_request(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer);

/* The subscription lookup found a node (new_peer->un): over HTTPS, 421
 * unless the SNI item the routed name finds is the one whose context the
 * connection negotiated.  0: route it; 1: answered; -1: close. */
int imperium_http_routed(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer);

/* No subscription for the Host: a 404 page.  1: answered; -1: close. */
int imperium_http_not_found(struct corerouter_peer *main_peer, struct corerouter_peer *new_peer);

/* The session ends: free what the functions above kept in it. */
void imperium_http_session_close(struct http_session *hr);

#endif

#endif
