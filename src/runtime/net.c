/* net.c - the node side of a container's network (net.h): libmnl requests
 * on a NETLINK_ROUTE socket per call, and the few procfs switches netlink
 * has no simpler form for. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- addresses and settings ------------------------------------------------ */

static uint32_t mask_of(int len) { return htonl(len ? ~0u << (32 - len) : 0); }

int net_parse_ip(const char *s, uint32_t *out, const char *what, err_t *e)
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1)
        return err_set(e, ERR_INPUT, "%s must be an IPv4 address like 10.0.0.1, not '%s'", what,
                       s ? s : "");
    *out = a.s_addr;
    return 0;
}

int net_parse_cidr(const char *s, uint32_t *addr, int *len, const char *what, err_t *e)
{
    char ip[INET_ADDRSTRLEN];
    const char *slash = s ? strchr(s, '/') : NULL;
    char *end;
    long n = slash ? strtol(slash + 1, &end, 10) : -1;
    if (!slash || (size_t)(slash - s) >= sizeof ip || slash[1] < '0' || slash[1] > '9' || *end ||
        n < 1 || n > 30)
        return err_set(e, ERR_INPUT, "%s must be a network like 10.0.0.0/8 (a length 1-30), not '%s'",
                       what, s ? s : "");
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    if (net_parse_ip(ip, addr, what, e) < 0)
        return -1;
    if (*addr & ~mask_of((int)n))
        return err_set(e, ERR_INPUT, "%s: '%s' has host bits set", what, s);
    *len = (int)n;
    return 0;
}

int net_check_prefix(const char *s, err_t *e)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > NET_PREFIX_MAX || strspn(s, "abcdefghijklmnopqrstuvwxyz") != n)
        return err_set(e, ERR_INPUT, "veth_prefix must be 1-%d letters [a-z] (no digits), not '%s'",
                       NET_PREFIX_MAX, s ? s : "");
    return 0;
}

int net_check_not_prefixed(const char *ifname, const char *prefix, const char *what, err_t *e)
{
    if (ifname && prefix && *prefix && strncmp(ifname, prefix, strlen(prefix)) == 0)
        return err_set(e, ERR_INPUT,
                       "%s '%s' starts with veth_prefix '%s': the node would take it for a "
                       "container's interface; rename it or choose another veth_prefix",
                       what, ifname, prefix);
    return 0;
}

bool net_is_loopback(const char *addr)
{
    struct in_addr a;
    return addr && inet_pton(AF_INET, addr, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* A host address of the network: not the network or broadcast address. */
static bool host_in(uint32_t ip, uint32_t network, int len)
{
    uint32_t m = mask_of(len);
    return (ip & m) == network && (ip & ~m) != 0 && (ip & ~m) != ~m;
}

bool net_is_container_ip(uint32_t ip, uint32_t network, int len, uint32_t gateway)
{
    return host_in(ip, network, len) && ip != gateway;
}

int net_cfg_parse(net_cfg_t *c, err_t *e)
{
    if (net_parse_cidr(c->network_text, &c->network, &c->prefixlen, "container_network", e) < 0 ||
        net_parse_ip(c->gateway_text, &c->gateway, "gateway", e) < 0 ||
        net_check_prefix(c->prefix, e) < 0)
        return -1;
    if (!host_in(c->gateway, c->network, c->prefixlen))
        return err_set(e, ERR_INPUT, "gateway %s is not a host address of container_network %s",
                       c->gateway_text, c->network_text);
    if (c->mtu && (c->mtu < NET_MTU_MIN || c->mtu > NET_MTU_MAX))
        return err_set(e, ERR_INPUT, "the containers' MTU must be %d-%d, not %d", NET_MTU_MIN,
                       NET_MTU_MAX, c->mtu);
    return 0;
}

int net_spec_fill(const net_cfg_t *c, const char *ip, net_spec_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!ip || !*ip)
        return err_set(e, ERR_INPUT, "the container has no ip (the node networks its containers)");
    if (net_parse_ip(ip, &out->ip, "the container's ip", e) < 0)
        return -1;
    if (!net_is_container_ip(out->ip, c->network, c->prefixlen, c->gateway))
        return err_set(e, ERR_INPUT,
                       "the container's ip %s is not a container address of this node's "
                       "container_network %s (gateway %s)",
                       ip, c->network_text, c->gateway_text);
    out->on = true;
    out->gateway = c->gateway;
    out->prefixlen = c->prefixlen;
    out->mtu = c->mtu;
    snprintf(out->prefix, sizeof out->prefix, "%s", c->prefix);
    return 0;
}

int net_host_name(const char *prefix, int uid, char *out, size_t len, err_t *e)
{
    int n = snprintf(out, len, "%s%d", prefix ? prefix : "", uid);
    if (!prefix || !*prefix || n < 0 || (size_t)n >= len || (size_t)n >= NET_IFNAME_MAX)
        return err_set(e, ERR_INPUT, "no interface name for container %d with prefix '%s'", uid,
                       prefix ? prefix : "");
    return 0;
}

/* ---- netlink -------------------------------------------------------------- */

static struct mnl_socket *nl_open(const char *what, err_t *e)
{
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl) {
        err_set(e, ERR_INTERNAL, "%s: netlink socket: %s", what, strerror(errno));
        return NULL;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        err_set(e, ERR_INTERNAL, "%s: bind the netlink socket: %s", what, strerror(errno));
        mnl_socket_close(nl);
        return NULL;
    }
    return nl;
}

int net_request(struct nlmsghdr *nlh, int ok_errno, const char *what, err_t *e)
{
    struct mnl_socket *nl = nl_open(what, e);
    if (!nl)
        return -1;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = 1;
    unsigned portid = mnl_socket_get_portid(nl);
    int rc = -1;
    ssize_t n = mnl_socket_sendto(nl, nlh, nlh->nlmsg_len);
    if (n >= 0)
        n = mnl_socket_recvfrom(nl, buf, sizeof buf);
    /* The ACK is an NLMSG_ERROR with error 0: mnl_cb_run turns it into
     * MNL_CB_STOP, and a real error into -1 with errno. */
    if (n >= 0)
        rc = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, NULL, NULL) < 0 ? -1 : 0;
    int err = errno;
    mnl_socket_close(nl);
    if (rc == 0)
        return 0;
    if (ok_errno && err == ok_errno)
        return 1;
    return err_set(e, ERR_INTERNAL, "%s: %s", what, strerror(err));
}

typedef struct {
    net_dump_fn fn;
    void *ctx;
    err_t *e;
    bool failed;
} dump_t;

static int dump_cb(const struct nlmsghdr *nlh, void *data)
{
    dump_t *d = data;
    if (d->fn(nlh, d->ctx, d->e) < 0) {
        d->failed = true;
        return MNL_CB_ERROR;
    }
    return MNL_CB_OK;
}

/* The answer of one dump, read whole before anyone sees it: the chunks as
 * recvfrom returned them. */
typedef struct {
    char *data;
    size_t len, cap;
    size_t *ends; /* where each chunk ends */
    size_t n, ncap;
} answer_t;

static int answer_add(answer_t *a, const char *buf, size_t n)
{
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : (size_t)4 * MNL_SOCKET_BUFFER_SIZE;
        while (cap < a->len + n)
            cap *= 2;
        char *d = realloc(a->data, cap);
        if (!d)
            return -1;
        a->data = d;
        a->cap = cap;
    }
    if (a->n == a->ncap) {
        size_t ncap = a->ncap ? a->ncap * 2 : 16;
        size_t *v = realloc(a->ends, ncap * sizeof *v);
        if (!v)
            return -1;
        a->ends = v;
        a->ncap = ncap;
    }
    memcpy(a->data + a->len, buf, n);
    a->len += n;
    a->ends[a->n++] = a->len;
    return 0;
}

/* One dump into a: 0 when whole, -1 with errno (EINTR: the kernel says the
 * table changed meanwhile, NLM_F_DUMP_INTR; ENOMEM; netlink's error). */
static int dump_once(struct nlmsghdr *nlh, answer_t *a, unsigned *portid, const char *what,
                     err_t *e)
{
    struct mnl_socket *nl = nl_open(what, e);
    if (!nl)
        return -2;
    *portid = mnl_socket_get_portid(nl);
    char buf[MNL_SOCKET_BUFFER_SIZE];
    int rc = mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0 ? -1 : MNL_CB_OK;
    while (rc > 0) { /* MNL_CB_STOP (0) at NLMSG_DONE */
        ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
        rc = n < 0 ? -1 : mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, *portid, NULL, NULL);
        if (rc >= 0 && answer_add(a, buf, (size_t)n) < 0) {
            errno = ENOMEM;
            rc = -1;
        }
    }
    int err = errno;
    mnl_socket_close(nl);
    errno = err;
    return rc < 0 ? -1 : 0;
}

/* A dump the kernel marks interrupted (the links or routes changed while it
 * was read: a container starting next door) is read again, up to
 * DUMP_TRIES times; fn sees one whole, consistent answer only. */
#define DUMP_TRIES 3

int net_dump(struct nlmsghdr *nlh, net_dump_fn fn, void *ctx, const char *what, err_t *e)
{
    nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = 1;
    answer_t a = {0};
    unsigned portid = 0;
    int rc = -1, err = 0;
    for (int i = 0; i < DUMP_TRIES && rc < 0; i++) {
        a.len = a.n = 0;
        rc = dump_once(nlh, &a, &portid, what, e);
        err = errno;
        if (rc == -2 || (rc < 0 && err != EINTR))
            break;
    }
    dump_t d = {fn, ctx, e, false};
    for (size_t i = 0, at = 0; rc == 0 && i < a.n; at = a.ends[i++])
        if (mnl_cb_run(a.data + at, a.ends[i] - at, nlh->nlmsg_seq, portid, dump_cb, &d) < 0)
            rc = -1;
    free(a.data);
    free(a.ends);
    if (rc == -2 || d.failed)
        return -1;
    if (rc < 0)
        return err_set(e, ERR_INTERNAL, "%s: %s%s", what, strerror(err),
                       err == EINTR ? " (the kernel's tables kept changing while read)" : "");
    return 0;
}

/* ---- message builders ------------------------------------------------------ */

static struct nlmsghdr *msg(void *buf, int type, unsigned flags)
{
    memset(buf, 0, NET_MSG_MAX);
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (uint16_t)type;
    nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
    return nlh;
}

struct nlmsghdr *net_msg(void *buf, int type, unsigned flags) { return msg(buf, type, flags); }

struct nlmsghdr *net_msg_veth(void *buf, const char *host, const char *inside, pid_t pid,
                              int mtu)
{
    struct nlmsghdr *nlh = msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_flags = ifm->ifi_change = IFF_UP; /* the host end is up at once */
    mnl_attr_put_strz(nlh, IFLA_IFNAME, host);
    if (mtu > 0)
        mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)mtu);
    struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    /* The peer is an ifinfomsg and its attributes inside the nest; it is
     * created straight in the child's namespace, so no name can clash. */
    struct ifinfomsg *pifm = mnl_nlmsg_put_extra_header(nlh, sizeof *pifm);
    pifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, inside);
    if (mtu > 0)
        mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)mtu);
    mnl_attr_put_u32(nlh, IFLA_NET_NS_PID, (uint32_t)pid);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, li);
    return nlh;
}

struct nlmsghdr *net_msg_dellink(void *buf, const char *name)
{
    struct nlmsghdr *nlh = msg(buf, RTM_DELLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    return nlh;
}

static struct rtmsg *route_head(struct nlmsghdr *nlh, int dst_len)
{
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = (unsigned char)dst_len;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = NET_RTPROT;
    return rtm;
}

/* type RTM_NEWROUTE (replacing one to the same /32) or RTM_DELROUTE. */
struct nlmsghdr *net_msg_route32(void *buf, int type, uint32_t dst, int ifindex)
{
    struct nlmsghdr *nlh =
        msg(buf, type, type == RTM_NEWROUTE ? NLM_F_CREATE | NLM_F_REPLACE : 0);
    struct rtmsg *rtm = route_head(nlh, 32);
    rtm->rtm_scope = RT_SCOPE_LINK;
    rtm->rtm_type = RTN_UNICAST;
    mnl_attr_put_u32(nlh, RTA_DST, dst);
    mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)ifindex);
    return nlh;
}

/* type RTM_NEWROUTE (never over another route to the network: EEXIST) or
 * RTM_DELROUTE (the kernel deletes only an unreachable proto-73 one). */
struct nlmsghdr *net_msg_unreachable(void *buf, int type, uint32_t network, int prefixlen)
{
    struct nlmsghdr *nlh = msg(buf, type, type == RTM_NEWROUTE ? NLM_F_CREATE | NLM_F_EXCL : 0);
    struct rtmsg *rtm = route_head(nlh, prefixlen);
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNREACHABLE;
    mnl_attr_put_u32(nlh, RTA_DST, network);
    return nlh;
}

/* type RTM_NEWADDR or RTM_DELADDR. */
struct nlmsghdr *net_msg_lo_addr(void *buf, int type, uint32_t addr)
{
    struct nlmsghdr *nlh = msg(buf, type, type == RTM_NEWADDR ? NLM_F_CREATE | NLM_F_EXCL : 0);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 32;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = 1; /* lo is interface 1 in every network namespace */
    mnl_attr_put_u32(nlh, IFA_LOCAL, addr);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, addr);
    return nlh;
}

/* ---- a container's veth ------------------------------------------------------ */

/* Write a value ("1\n") to a procfs setting of this namespace (a fixed
 * path: our own interface name or a global key, nothing a customer names). */
static int proc_write(const char *path, const char *value, err_t *e)
{
    size_t len = strlen(value);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "open %s: %s", path, strerror(errno));
    ssize_t n = write(fd, value, len);
    int err = errno;
    close(fd);
    if (n != (ssize_t)len)
        return err_set(e, ERR_INTERNAL, "write %s: %s", path, n < 0 ? strerror(err) : "short");
    return 0;
}

static int proc_on(const char *path, err_t *e) { return proc_write(path, "1\n", e); }

static int conf_on(const char *family, const char *ifname, const char *key, err_t *e)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/net/%s/conf/%s/%s", family, ifname, key);
    return proc_on(path, e);
}

static int delete_link(const char *name, err_t *e)
{
    char buf[NET_MSG_MAX], what[64];
    snprintf(what, sizeof what, "delete interface %s", name);
    return net_request(net_msg_dellink(buf, name), ENODEV, what, e) < 0 ? -1 : 0;
}

/* The host end is configured: proxy ARP answers the container's ARP for
 * any address of its (on-link) network, route_localnet (only for a server
 * on 127.x, n->localnet) lets node-local clients of a port mapping to 127.x
 * through, and the /32 route.  No IPv6
 * on it: otherwise the link-local addresses both ends get would be a path
 * from the container to the node that the IPv4 design does not know. */
static int host_end(const net_spec_t *n, const char *host, err_t *e)
{
    char buf[NET_MSG_MAX], what[64];
    if (conf_on("ipv4", host, "proxy_arp", e) < 0 ||
        (n->localnet && conf_on("ipv4", host, "route_localnet", e) < 0))
        return -1;
    /* Proxy ARP answers a broadcast request only after a random wait of up
     * to proxy_delay (0.8 s by default): a container's first packet to a
     * peer (just linked, or just restarted) would wait for it (bench N2). */
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/net/ipv4/neigh/%s/proxy_delay", host);
    if (proc_write(path, "0\n", e) < 0)
        return -1;
    if (access("/proc/sys/net/ipv6", F_OK) == 0 && conf_on("ipv6", host, "disable_ipv6", e) < 0)
        return -1;
    unsigned idx = if_nametoindex(host);
    if (!idx)
        return err_set(e, ERR_INTERNAL, "interface %s: %s", host, strerror(errno));
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &n->ip, ip, sizeof ip);
    snprintf(what, sizeof what, "route %s/32 to %s", ip, host);
    return net_request(net_msg_route32(buf, RTM_NEWROUTE, n->ip, (int)idx), 0, what, e) < 0 ? -1
                                                                                              : 0;
}

int net_attach(const net_spec_t *n, int uid, pid_t pid, err_t *e)
{
    char host[NET_IFNAME_MAX], buf[NET_MSG_MAX], what[64];
    if (net_host_name(n->prefix, uid, host, sizeof host, e) < 0)
        return -1;
    /* A previous run's veth may linger while its namespace is torn down
     * (asynchronously): it would make the create fail with EEXIST. */
    if (delete_link(host, e) < 0)
        return -1;
    snprintf(what, sizeof what, "create the veth %s/%s", host, NET_INSIDE_NAME);
    if (net_request(net_msg_veth(buf, host, NET_INSIDE_NAME, pid, n->mtu), 0, what, e) < 0)
        return -1;
    if (host_end(n, host, e) < 0) {
        delete_link(host, NULL);
        return -1;
    }
    return 0;
}

int net_detach(const char *prefix, int uid, err_t *e)
{
    char host[NET_IFNAME_MAX];
    if (net_host_name(prefix, uid, host, sizeof host, e) < 0)
        return -1;
    return delete_link(host, e);
}

/* ---- the node --------------------------------------------------------------- */

/* The routes of the main table to exactly network/len (any metric): what
 * the node's unreachable route would sit beside or hide. */
typedef struct {
    uint32_t network;
    int len;
    int ours, others;       /* unreachable proto 73 / anything else */
    char other[96];         /* the first other one, as `ip route` would say it */
} prefix_routes_t;

static void describe_route(const struct rtmsg *rtm, uint32_t gw, int oif, char *out, size_t n)
{
    char via[INET_ADDRSTRLEN] = "", dev[IF_NAMESIZE] = "";
    if (gw)
        inet_ntop(AF_INET, &gw, via, sizeof via);
    if (oif && !if_indextoname((unsigned)oif, dev))
        snprintf(dev, sizeof dev, "#%d", oif);
    if (rtm->rtm_type != RTN_UNICAST)
        snprintf(out, n, "type %d, proto %d", rtm->rtm_type, rtm->rtm_protocol);
    else
        snprintf(out, n, "%s%s%s%s", *via ? "via " : "", via, *via && *dev ? " dev " : *dev ? "dev " : "",
                 dev);
}

static int prefix_route_cb(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    (void)e;
    prefix_routes_t *p = ctx;
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    uint32_t dst = 0, gw = 0, table = rtm->rtm_table;
    int oif = 0;
    const struct nlattr *a;
    mnl_attr_for_each(a, nlh, sizeof *rtm)
    {
        if (mnl_attr_validate(a, MNL_TYPE_U32) < 0)
            continue;
        switch (mnl_attr_get_type(a)) {
        case RTA_DST: dst = mnl_attr_get_u32(a); break;
        case RTA_GATEWAY: gw = mnl_attr_get_u32(a); break;
        case RTA_OIF: oif = (int)mnl_attr_get_u32(a); break;
        case RTA_TABLE: table = mnl_attr_get_u32(a); break;
        }
    }
    if (rtm->rtm_family != AF_INET || table != RT_TABLE_MAIN || rtm->rtm_dst_len != p->len ||
        dst != p->network)
        return 0;
    if (rtm->rtm_type == RTN_UNREACHABLE && rtm->rtm_protocol == NET_RTPROT)
        p->ours++;
    else if (p->others++ == 0)
        describe_route(rtm, gw, oif, p->other, sizeof p->other);
    return 0;
}

static int prefix_routes(prefix_routes_t *p, err_t *e)
{
    char buf[NET_MSG_MAX];
    struct nlmsghdr *nlh = msg(buf, RTM_GETROUTE, 0);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    return net_dump(nlh, prefix_route_cb, p, "list the routes", e);
}

/* `unreachable <network> proto 73`, unless it is there already (another
 * node sharing the namespace, or our last run).  Any other route to the
 * network is the server's: replacing (or hiding) it would cut the server
 * off from what it routes there, so the node refuses to start. */
static int unreachable_route(const net_cfg_t *c, err_t *e)
{
    char buf[NET_MSG_MAX], what[96];
    for (int tries = 0; tries < 2; tries++) {
        prefix_routes_t p = {.network = c->network, .len = c->prefixlen};
        if (prefix_routes(&p, e) < 0)
            return -1;
        if (p.others)
            return err_set(e, ERR_INPUT,
                           "%s is already routed (%s): choose another container_network or "
                           "remove that route",
                           c->network_text, p.other);
        if (p.ours)
            return 0;
        snprintf(what, sizeof what, "add the route unreachable %s", c->network_text);
        int rc = net_request(net_msg_unreachable(buf, RTM_NEWROUTE, c->network, c->prefixlen),
                             EEXIST, what, e);
        if (rc <= 0)
            return rc;
        /* EEXIST: added meanwhile (by another node?): look again what. */
    }
    return err_set(e, ERR_INTERNAL, "add the route unreachable %s: it keeps changing",
                   c->network_text);
}

int net_node_setup(const net_cfg_t *c, err_t *e)
{
    char buf[NET_MSG_MAX], what[96];
    if (unreachable_route(c, e) < 0 || proc_on("/proc/sys/net/ipv4/ip_forward", e) < 0)
        return -1;
    snprintf(what, sizeof what, "add the gateway %s/32 to lo", c->gateway_text);
    return net_request(net_msg_lo_addr(buf, RTM_NEWADDR, c->gateway), EEXIST, what, e) < 0 ? -1
                                                                                              : 0;
}

/* Counts the proto-73 /32 routes: any left is a container (or an overlay
 * peer) of some node in this namespace. */
static int count32_cb(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    (void)e;
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    if (rtm->rtm_family == AF_INET && rtm->rtm_protocol == NET_RTPROT && rtm->rtm_dst_len == 32)
        (*(int *)ctx)++;
    return 0;
}

int net_node_teardown(const net_cfg_t *c, err_t *e)
{
    char buf[NET_MSG_MAX], what[96];
    int n32 = 0;
    struct nlmsghdr *nlh = msg(buf, RTM_GETROUTE, 0);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    if (net_dump(nlh, count32_cb, &n32, "list the routes", e) < 0)
        return -1;
    if (n32)
        return 0; /* another node's containers still use them */
    snprintf(what, sizeof what, "delete the route unreachable %s", c->network_text);
    if (net_request(net_msg_unreachable(buf, RTM_DELROUTE, c->network, c->prefixlen), ESRCH, what,
                    e) < 0)
        return -1;
    snprintf(what, sizeof what, "delete the gateway %s/32 from lo", c->gateway_text);
    return net_request(net_msg_lo_addr(buf, RTM_DELADDR, c->gateway), EADDRNOTAVAIL, what, e) < 0
               ? -1
               : 0;
}

/* The links named <prefix><uid>: what reconcile found. */
typedef struct {
    const char *prefix;
    struct link {
        int index, uid;
        char name[NET_IFNAME_MAX];
    } *v;
    size_t n, cap;
} links_t;

/* <prefix><digits> -> the uid; 0 for any other name. */
static int uid_of(const char *prefix, const char *name)
{
    size_t p = strlen(prefix);
    if (strncmp(name, prefix, p) != 0 || !name[p] || strspn(name + p, "0123456789") != strlen(name + p))
        return 0;
    long long v = strtoll(name + p, NULL, 10);
    return v > 0 && v < 1LL << 30 ? (int)v : 0;
}

static int link_cb(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    links_t *l = ctx;
    const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
    const struct nlattr *a;
    mnl_attr_for_each(a, nlh, sizeof *ifm)
    {
        if (mnl_attr_get_type(a) != IFLA_IFNAME || mnl_attr_validate(a, MNL_TYPE_NUL_STRING) < 0)
            continue;
        int uid = uid_of(l->prefix, mnl_attr_get_str(a));
        if (!uid)
            return 0;
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            struct link *v = realloc(l->v, cap * sizeof *v);
            if (!v)
                return err_set(e, ERR_INTERNAL, "list the containers' interfaces: out of memory");
            l->v = v;
            l->cap = cap;
        }
        struct link *k = &l->v[l->n++];
        k->index = ifm->ifi_index;
        k->uid = uid;
        snprintf(k->name, sizeof k->name, "%s", mnl_attr_get_str(a));
        return 0;
    }
    return 0;
}

typedef struct {
    const links_t *doomed; /* index < 0: kept */
    uint32_t *dst;
    int *oif;
    size_t n, cap;
} routes_t;

static bool doomed_index(const links_t *l, int index)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].index == index)
            return true;
    return false;
}

/* Our /32s through a link about to go: deleted first, explicitly. */
static int route_cb(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    routes_t *r = ctx;
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    if (rtm->rtm_protocol != NET_RTPROT || rtm->rtm_dst_len != 32 || rtm->rtm_type != RTN_UNICAST)
        return 0;
    uint32_t dst = 0;
    int oif = 0;
    const struct nlattr *a;
    mnl_attr_for_each(a, nlh, sizeof *rtm)
    {
        if (mnl_attr_get_type(a) == RTA_DST && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            dst = mnl_attr_get_u32(a);
        else if (mnl_attr_get_type(a) == RTA_OIF && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            oif = (int)mnl_attr_get_u32(a);
    }
    if (!oif || !doomed_index(r->doomed, oif))
        return 0;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        uint32_t *d = realloc(r->dst, cap * sizeof *d);
        if (d)
            r->dst = d;
        int *o = d ? realloc(r->oif, cap * sizeof *o) : NULL;
        if (!o)
            return err_set(e, ERR_INTERNAL, "list the containers' routes: out of memory");
        r->oif = o;
        r->cap = cap;
    }
    r->dst[r->n] = dst;
    r->oif[r->n++] = oif;
    return 0;
}

static bool is_running(int uid, const int *running, size_t n, bool *has_veth)
{
    for (size_t i = 0; i < n; i++)
        if (running[i] == uid) {
            if (has_veth)
                has_veth[i] = true;
            return true;
        }
    return false;
}

/* Keep in l only the links of containers that do not run. */
static void keep_doomed(links_t *l, const int *running, size_t n, bool *has_veth)
{
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!is_running(l->v[i].uid, running, n, has_veth))
            l->v[k++] = l->v[i];
    l->n = k;
}

static int delete_routes(const links_t *doomed, err_t *e)
{
    char buf[NET_MSG_MAX];
    routes_t r = {.doomed = doomed};
    struct nlmsghdr *nlh = msg(buf, RTM_GETROUTE, 0);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    int rc = net_dump(nlh, route_cb, &r, "list the routes", e);
    for (size_t i = 0; rc == 0 && i < r.n; i++)
        if (net_request(net_msg_route32(buf, RTM_DELROUTE, r.dst[i], r.oif[i]), ESRCH,
                        "delete a leftover container route", e) < 0)
            rc = -1;
    free(r.dst);
    free(r.oif);
    return rc;
}

int net_reconcile(const char *prefix, const int *running, size_t n, bool *has_veth, err_t *e)
{
    char buf[NET_MSG_MAX];
    if (net_check_prefix(prefix, e) < 0)
        return -1;
    for (size_t i = 0; has_veth && i < n; i++)
        has_veth[i] = false;
    links_t l = {.prefix = prefix};
    struct nlmsghdr *nlh = msg(buf, RTM_GETLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    int rc = net_dump(nlh, link_cb, &l, "list the interfaces", e);
    if (rc == 0) {
        keep_doomed(&l, running, n, has_veth);
        rc = delete_routes(&l, e);
    }
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        if (delete_link(l.v[i].name, e) < 0)
            rc = -1;
    int removed = (int)l.n;
    free(l.v);
    return rc < 0 ? -1 : removed;
}
