/* netpolicy.h - the node's nftables table (docs/NETWORK.md): isolation of
 * the containers, their mutual links, the server's port mappings and NAT.
 *
 * The whole table is rendered from the desired state and the node's
 * settings.  The first time (and whenever a rule changes) it is applied
 * with libnftables in ONE transaction:
 *
 *   table inet <name>            (creates it if absent, so the delete works)
 *   delete table inet <name>     (`flush table` would keep set elements)
 *   table inet <name> { ... }    (the full definition)
 *
 * so a change is atomic, a bad text leaves the old table in force, and no
 * other table is touched.  When only set elements change (a link, a port
 * mapping: the common case) their difference is applied, one transaction
 * too, so one more link costs the kernel the same with 10 or 1,000 links.
 * Every rule matches only this node's interfaces (<veth_prefix>*): two
 * nodes may share a network namespace, each with its own prefix and table.
 * Links and mapped ports are set elements checked on every packet, so
 * removing one cuts open flows without a conntrack flush. */
#ifndef IMP_NODE_NETPOLICY_H
#define IMP_NODE_NETPOLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "overlay.h"
#include "spec.h"

#define NETPOLICY_DEFAULT_TABLE "imperium"
#define NETPOLICY_TABLE_MAX 32 /* our rule for nft_table: [A-Za-z][A-Za-z0-9_]{0,31} */
#define NETPOLICY_IFNAME_MAX 15
/* What nat = on never reaches: the cloud's metadata service (169.254.169.254). */
#define NETPOLICY_DEFAULT_NAT_DENY "169.254.0.0/16"

typedef struct {
    const char *table;  /* nft_table */
    const char *prefix; /* veth_prefix: the host ends are <prefix><uid> */
    const char *uplink; /* the interface to the world; NULL or "": none */
    bool nat;           /* masquerade the containers out of the uplink (needs uplink) */
    const char *nat_deny; /* with nat: networks containers never reach (netpolicy_check_nat_deny) */
    bool dns;           /* accept DNS (53/tcp+udp) from containers to the gateway */
    uint32_t network;   /* the container network, network byte order */
    int prefixlen;
    uint32_t gateway; /* network byte order */
    const overlay_cfg_t *overlay; /* links across servers (overlay_nft); NULL: none */
    /* Legions (legion.h): with any legion in the state, these UDP ports
     * (legion_port + id, cluster_gate_port) and TCP cluster_port accept
     * only the legions' other members (set legion_peers).  0: no such port. */
    int legion_port, cluster_port, cluster_gate_port;
} netpolicy_cfg_t;

/* nft_table's rule (a settings check too): -1 with e naming the setting. */
int netpolicy_check_table(const char *name, err_t *e);
/* uplink's rule: empty, or an interface name (1-15 of [A-Za-z0-9_.-]). */
int netpolicy_check_ifname(const char *name, err_t *e);

/* nat_deny's rule: IPv4 addresses ("A.B.C.D", a /32) or networks
 * ("A.B.C.D/N", N 1-30, no host bits), separated by commas or blanks; empty:
 * none.  -1 with e naming the first bad entry. */
int netpolicy_check_nat_deny(const char *list, err_t *e);

/* The table's whole text (the three parts above), malloc'd; NULL with e
 * set on bad settings or out of memory.  What the state gets wrong (a
 * container ip outside the network, a port mapping with a bad proto or
 * port, a duplicate public port) is left out with a log line: one bad
 * element never breaks the whole table. */
char *netpolicy_render(const netpolicy_cfg_t *c, const spec_state_t *s, err_t *e);

typedef struct netpolicy netpolicy_t;

netpolicy_t *netpolicy_new(const netpolicy_cfg_t *c, err_t *e);
void netpolicy_free(netpolicy_t *np); /* the table stays in the kernel */

/* Render and apply what differs from the table in force (the elements'
 * difference, or the whole table when a rule changed or nothing is in
 * force yet).  1: applied, 0: unchanged, -1: e says why (libnftables' own
 * message); the kernel keeps the table as it was and the state stays
 * pending (netpolicy_retry applies it whole). */
int netpolicy_apply(netpolicy_t *np, const spec_state_t *s, err_t *e);
/* Apply the pending text again (after a failure): 1 applied, 0 nothing
 * pending, -1 failed again. */
int netpolicy_retry(netpolicy_t *np, err_t *e);
/* Is the table we applied still the kernel's?  Somebody may delete it (`nft
 * flush ruleset`: a restart of Debian's nftables service, a firewalld or
 * ufw reload), which would open every container to every other.  One
 * GETTABLE by name, its handle compared with the one of our last whole
 * apply: cheap enough to ask every second.  0: in force (or nothing to
 * check); 1: gone or replaced, the whole table is pending now (call
 * netpolicy_retry); -1: the question failed (e says why). */
int netpolicy_check(netpolicy_t *np, err_t *e);
/* The last state's table is in force (applied, nothing pending). */
bool netpolicy_in_force(const netpolicy_t *np);

/* Delete the table (stop-all); absent already is fine. */
int netpolicy_delete(const char *table, err_t *e);

#endif
