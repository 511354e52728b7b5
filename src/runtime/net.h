/* net.h - a container's network: the veth whose inside end is uwsgi0, its
 * /32 route on the node, and the node's own addresses (docs/NETWORK.md).
 *
 * Every message goes over a NETLINK_ROUTE socket of its own (libmnl), built
 * in a buffer of the caller's: no allocation, no cache, nothing kept open
 * that could hold a container's network namespace alive.  The node side is
 * here (net.c); the child side (uwsgi0's address, MTU, default route) is
 * rt_uwsgi0_up in namespaces.c, raw ioctls between clone and exec.
 *
 * Names: the host end of container <uid>'s veth is <prefix><uid> (prefix 1-4
 * of [a-z], so 4 + 8 digits fit IFNAMSIZ); its /32 route and the node's
 * `unreachable <container_network>` route carry protocol NET_RTPROT, so
 * `ip route show proto 73` lists exactly Imperium's routes. */
#ifndef IMP_RUNTIME_NET_H
#define IMP_RUNTIME_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/err.h"

#define NET_RTPROT 73          /* our routes' rtm_protocol ("I") */
#define NET_INSIDE_NAME "uwsgi0"
#define NET_PREFIX_MAX 4       /* veth_prefix: 1-4 of [a-z] */
#define NET_IFNAME_MAX 16      /* IFNAMSIZ */
#define NET_DEFAULT_NETWORK "10.0.0.0/8"
#define NET_DEFAULT_GATEWAY "10.0.0.1"
#define NET_DEFAULT_PREFIX "imp"
#define NET_MTU_MIN 576
#define NET_MTU_MAX 65535
/* Big enough for every request built here (a veth is ~100 bytes). */
#define NET_MSG_MAX 1024

/* The node's settings (agent_config.c): the texts as configured, then what
 * net_cfg_parse made of them.  on false: containers get only lo. */
typedef struct {
    bool on;
    const char *network_text; /* "10.0.0.0/8" */
    const char *gateway_text; /* "10.0.0.1" */
    const char *prefix;       /* "imp" */
    int mtu;                  /* uwsgi0's MTU; 0: the kernel's (1500) */
    uint32_t network;         /* network byte order, host bits zero */
    int prefixlen;
    uint32_t gateway;         /* network byte order */
} net_cfg_t;

/* One container's network, in its container_spec_t (spec_runtime fills it
 * from net_cfg_t and the container's ip) and copied into the child's plan. */
typedef struct {
    bool on;
    uint32_t ip, gateway; /* network byte order */
    int prefixlen;        /* of the container network: uwsgi0's netmask */
    int mtu;              /* 0: the kernel's */
    char prefix[NET_PREFIX_MAX + 1];
    /* route_localnet on the host end: only when the server's public
     * address is in 127/8 (make run), where a port mapping's packets keep
     * a 127.x source; elsewhere it would let a container reach the node's
     * 127.0.0.1 services whenever the nft table is absent. */
    bool localnet;
} net_spec_t;

/* ---- addresses and settings (pure, unit-tested) ---- */

/* "A.B.C.D" -> network order; -1 with e naming `what`. */
int net_parse_ip(const char *s, uint32_t *out, const char *what, err_t *e);
/* "A.B.C.D/N" (host bits zero) -> address and length. */
int net_parse_cidr(const char *s, uint32_t *addr, int *len, const char *what, err_t *e);
/* 1-4 of [a-z]: no digits, so <prefix><uid> names one container only
 * (prefix `imp` must not read node `imp1`'s imp130001 as uid 130001). */
int net_check_prefix(const char *s, err_t *e);
/* The one rule for a container's address (network order): a host address
 * of network/len (not its network or broadcast address), not the gateway.
 * net_spec_fill refuses a container by it; netpolicy.c leaves such an ip
 * out of the table. */
bool net_is_container_ip(uint32_t ip, uint32_t network, int len, uint32_t gateway);
/* An interface of the node's own (`what`: "uplink", "overlay_dev") whose
 * name starts with the prefix would match the table's "<prefix>*" rules as
 * if it were a container's: refused naming both. */
int net_check_not_prefixed(const char *ifname, const char *prefix, const char *what, err_t *e);
/* True for an address (its text, e.g. the server's) in 127.0.0.0/8. */
bool net_is_loopback(const char *addr);
/* Parse the texts of c into its numbers; the gateway must be a host
 * address inside the network. */
int net_cfg_parse(net_cfg_t *c, err_t *e);
/* The container's net_spec_t from the node's settings and its API `ip`;
 * an ip outside the container network (or its network, broadcast or the
 * gateway address) is refused naming both. */
int net_spec_fill(const net_cfg_t *c, const char *ip, net_spec_t *out, err_t *e);
/* <prefix><uid> into out (NET_IFNAME_MAX). */
int net_host_name(const char *prefix, int uid, char *out, size_t len, err_t *e);

/* ---- netlink: requests and dumps (for every netlink user of the node) ---- */

struct nlmsghdr;

/* Send one request (NLM_F_ACK is added) on a socket of its own and read
 * its answer.  0 on success; the kernel's error is -1 with e = "<what>:
 * <strerror>", except `ok_errno` (0: none), which returns 1 and leaves e
 * alone (ENODEV for a delete of what is gone, EEXIST for an add). */
int net_request(struct nlmsghdr *nlh, int ok_errno, const char *what, err_t *e);

/* A dump request (NLM_F_DUMP is added): fn for every message of the answer;
 * fn returns 0 to go on, -1 to stop with an error of its own in e.  The
 * answer is read whole first: one the kernel marks interrupted (the table
 * changed meanwhile) is read again, up to 3 times, so fn sees one
 * consistent answer (and nothing of an interrupted one). */
typedef int (*net_dump_fn)(const struct nlmsghdr *nlh, void *ctx, err_t *e);
int net_dump(struct nlmsghdr *nlh, net_dump_fn fn, void *ctx, const char *what, err_t *e);

/* Message builders, into buf (NET_MSG_MAX bytes); exposed for the tests.
 * net_msg is the start of any other request (buf zeroed, the header of
 * `type` with NLM_F_REQUEST | flags): the overlay's builders use it. */
struct nlmsghdr *net_msg(void *buf, int type, unsigned flags);
struct nlmsghdr *net_msg_veth(void *buf, const char *host, const char *inside, pid_t pid,
                              int mtu);
struct nlmsghdr *net_msg_dellink(void *buf, const char *name);
struct nlmsghdr *net_msg_route32(void *buf, int type, uint32_t dst, int ifindex);
struct nlmsghdr *net_msg_unreachable(void *buf, int type, uint32_t network, int prefixlen);
struct nlmsghdr *net_msg_lo_addr(void *buf, int type, uint32_t addr);

/* ---- a container's veth ---- */

/* In the start window (the child cloned, in its cgroup, waiting for "go"):
 * remove a lingering <prefix><uid>, create the veth with its inside end
 * uwsgi0 in pid's network namespace, proxy_arp (and route_localnet when
 * n->localnet) on the host end, and the /32 route to it.  Nothing is left behind on failure. */
int net_attach(const net_spec_t *n, int uid, pid_t pid, err_t *e);
/* Delete <prefix><uid> (gone already is fine); its route goes with it. */
int net_detach(const char *prefix, int uid, err_t *e);

/* ---- the node ---- */

/* Idempotent, at node start: `unreachable <network> proto 73` (a 10.x no
 * container here holds is never routed out; per-container /32s are more
 * specific), ip_forward=1, <gateway>/32 on lo.  Any other route to exactly
 * <network> (the server's own) is refused naming it, and left alone. */
int net_node_setup(const net_cfg_t *c, err_t *e);
/* stop-all, once none of this node's containers runs: the unreachable
 * route and the gateway on lo go, unless a proto-73 /32 remains (another
 * node sharing the namespace still runs containers).  ip_forward stays:
 * something else of the server's may rely on it. */
int net_node_teardown(const net_cfg_t *c, err_t *e);

/* At node start, before any container is started or adopted: delete every
 * <prefix><uid> link whose uid is not in running[] (crash leftovers) and
 * the proto-73 /32 routes through them.  A running container's veth is
 * never touched; has_veth[i] tells whether running[i] has one (the caller
 * logs those without).  Returns the number of links removed, -1 on error. */
int net_reconcile(const char *prefix, const int *running, size_t n, bool *has_veth, err_t *e);

#endif
