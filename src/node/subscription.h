/* subscription.h - what a container may ask of the node's HTTP router.
 *
 * A vassal announces itself with a uWSGI subscription packet: a 4-byte
 * header (modifier1 224, little-endian body size, modifier2 = command:
 * 0 subscribe, 1 unsubscribe) and a body of (u16 length, bytes) pairs:
 * key, address, modifier1, ..., unix, sign.  The router checks the
 * signature (the domain is the signer's); this module checks what the
 * signature does not: WHERE the router will connect.  A container's
 * subscription may only name a unix socket directly in its own run/
 * directory, /containers/<uid>/run/<name>, which in the router's mount
 * namespace is a root-owned sticky directory holding nothing but that
 * container's sockets (docs/ROUTER.md).  Everything else (TCP addresses,
 * other containers' paths, "..", abstract sockets, notify sockets) is
 * refused with a reason the customer can act on.
 *
 * HTTPS (ssl-domain, ssl-ca-domain, auto-ssl-domain): the router opens the
 * files a packet's sni_key, sni_crt and sni_ca name.  Allowed are paths in
 * the sender's own home, /containers/<uid>/<rel> (<rel> without empty, "."
 * or ".." components, not under run/; the router finds the gate's checked,
 * root-owned copies there, subgate.c), or exactly the ACME pair of the
 * packet's own key, /run/imperium-router/acme/certs/<key>.key and .crt
 * (auto-ssl-domain: the node obtains it). */
#ifndef IMP_NODE_SUBSCRIPTION_H
#define IMP_NODE_SUBSCRIPTION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SUBSCRIPTION_MAX 4096 /* larger than any packet uWSGI sends */
/* Components of a certificate file path under the home, at most (the
 * gate makes the directories of each for the router). */
#define SUBSCRIPTION_PATH_DEPTH 8

#define SUBSCRIPTION_ACME_CERTS "/run/imperium-router/acme/certs/"

/* The sni_* fields of a packet, checked by subscription_check. */
typedef struct {
    bool any;         /* sni_key and sni_crt are set (HTTPS for the key) */
    bool acme;        /* they are the ACME pair of the key */
    bool ca_required; /* sni_ca began with '!' */
    char key[256];    /* the paths as the router reads them ("!" removed) */
    char crt[256];
    char ca[256];    /* "" when none */
    size_t home_len; /* strlen("/containers/<uid>/"): key + home_len is <rel> */
} subscription_tls_t;

typedef struct {
    bool unsubscribe;
    bool tcp; /* subscription_check_cluster: the address is the node's cluster endpoint */
    char key[256];
    char address[256];
    subscription_tls_t tls;
    /* The signature, as uWSGI checks it: sign_len bytes at sign_off of the
     * packet over its first signed_len bytes after the 4-byte header (the
     * items before "sign"); sign_len 0: unsigned. */
    size_t sign_off, sign_len, signed_len;
} subscription_t;

/* Parse the packet and decide whether container `uid` may send it.
 * 0: allowed (*out filled); -1: refused, `why` says why (and *out holds
 * whatever could be parsed, for the log). */
int subscription_check(const unsigned char *pkt, size_t len, uid_t uid, subscription_t *out,
                       char *why, size_t why_len);

/* Only parse it (no policy): the items every check reads.  0, or -1 with
 * `why`.  The receiving gate of a legion member uses it on the packets
 * other members forward (their own gate applied the policy). */
int subscription_parse(const unsigned char *pkt, size_t len, subscription_t *out, char *why,
                       size_t why_len);

/* IMPERIUM_CLUSTER when this node serves no cluster (in no legion, or
 * cluster_port 0): a subscription naming it is refused, politely. */
#define SUBSCRIPTION_NO_CLUSTER "none:0"

/* The cluster socket (/run/subscribe/cluster, cluster-domain): the same
 * policy, except that one TCP address is allowed: `endpoint`, this node's
 * "<server address>:<cluster_port>" (NULL, "" or "none:0": none; out->tcp
 * set when it is that one). */
int subscription_check_cluster(const unsigned char *pkt, size_t len, uid_t uid,
                               const char *endpoint, subscription_t *out, char *why,
                               size_t why_len);

#endif
