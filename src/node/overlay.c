/* overlay.c - links across servers over VXLAN (overlay.h): the settings'
 * checks, the pure reconcile (desired entries, diff), the nft text, and the
 * netlink side on neta's helpers (net_request, net_dump in net.h). */
#include "overlay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"

/* ---- settings ---------------------------------------------------------------- */

bool overlay_on(const overlay_cfg_t *c) { return c->mode && !strcmp(c->mode, "vxlan"); }

int overlay_check_mode(const setting_t *s, const char *v, err_t *e)
{
    if (!strcmp(v, "off") || !strcmp(v, "vxlan"))
        return 0;
    if (!strcmp(v, "wireguard"))
        return err_set(e, ERR_INPUT, "%s = wireguard is not available yet: see docs/NETWORK.md",
                       s->name);
    return err_set(e, ERR_INPUT, "%s must be off or vxlan, not '%s'", s->name, v);
}

/* The kernel's rule for a new interface name (dev_valid_name): 1-15
 * bytes, not . or .., no '/', ':' or white space. */
int overlay_check_dev(const setting_t *s, const char *v, err_t *e)
{
    size_t n = strlen(v);
    if (n < 1 || n >= IFNAMSIZ || !strcmp(v, ".") || !strcmp(v, "..") || strpbrk(v, "/: \t\n"))
        return err_set(e, ERR_INPUT,
                       "%s must be an interface name of 1-%d characters without '/', ':' or "
                       "spaces, not '%s'",
                       s->name, IFNAMSIZ - 1, v);
    return 0;
}

int overlay_check_local(const setting_t *s, const char *v, err_t *e)
{
    uint32_t a;
    if (!*v)
        return 0;
    if (net_parse_ip(v, &a, s->name, e) < 0)
        return -1;
    if (!a || a == INADDR_BROADCAST)
        return err_set(e, ERR_INPUT, "%s must be this server's underlay address, not '%s'",
                       s->name, v);
    return 0;
}

/* ---- MACs ------------------------------------------------------------------- */

void overlay_mac(uint32_t addr, uint8_t mac[6])
{
    mac[0] = 0x02; /* locally administered, unicast */
    memcpy(mac + 1, &addr, 4);
    mac[5] = 0;
}

uint64_t ov_mac48(const uint8_t mac[6])
{
    uint64_t v = 0;
    for (int i = 0; i < 6; i++)
        v = v << 8 | mac[i];
    return v;
}

void ov_mac_bytes(uint64_t mac48, uint8_t mac[6])
{
    for (int i = 5; i >= 0; i--, mac48 >>= 8)
        mac[i] = (uint8_t)mac48;
}

static uint64_t mac48_of(uint32_t addr)
{
    uint8_t mac[6];
    overlay_mac(addr, mac);
    return ov_mac48(mac);
}

/* ---- entry lists and the diff -------------------------------------------------- */

int ov_list_add(ov_list_t *l, int kind, uint64_t key, uint64_t val, err_t *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        ov_entry_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return err_set(e, ERR_INTERNAL, "overlay: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (ov_entry_t){kind, key, val};
    return 0;
}

static int cmp_entry(const ov_entry_t *a, const ov_entry_t *b)
{
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->val < b->val ? -1 : a->val > b->val;
}

static int cmp_entry_q(const void *a, const void *b) { return cmp_entry(a, b); }

void ov_list_sort(ov_list_t *l)
{
    if (!l->n)
        return;
    qsort(l->v, l->n, sizeof *l->v, cmp_entry_q);
    size_t k = 1;
    for (size_t i = 1; i < l->n; i++)
        if (cmp_entry(&l->v[i], &l->v[k - 1]))
            l->v[k++] = l->v[i];
    l->n = k;
}

void ov_list_free(ov_list_t *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

int ov_diff(const ov_list_t *want, const ov_list_t *have, ov_list_t *add, ov_list_t *del,
            err_t *e)
{
    size_t i = 0, j = 0;
    while (i < want->n || j < have->n) {
        int c = i == want->n ? 1 : j == have->n ? -1 : cmp_entry(&want->v[i], &have->v[j]);
        const ov_entry_t *x = c < 0 ? &want->v[i++] : &have->v[j++];
        if (c == 0)
            i++;
        else if (ov_list_add(c < 0 ? add : del, x->kind, x->key, x->val, e) < 0)
            return -1;
    }
    return 0;
}

/* ---- the desired entries ---------------------------------------------------------- */

/* The peer's addresses, or a reason (in why) to leave it out. */
static bool peer_ok(const spec_link_peer_t *p, uint32_t local, const net_cfg_t *net,
                    uint32_t *ip, uint32_t *node, err_t *why)
{
    net_spec_t ns;
    err_t ignore;
    if (net_spec_fill(net, p->ip, &ns, why) < 0)
        return false;
    *ip = ns.ip;
    if (net_parse_ip(p->server, node, "link_peers[].server", why) < 0)
        return false;
    if (!*node || *node == INADDR_BROADCAST) {
        err_set(why, ERR_INPUT, "link_peers: %s's server %s is not a server's address", p->ip,
                p->server);
        return false;
    }
    if (*node == local) {
        err_set(why, ERR_INPUT, "link_peers: %s is said to be on this server (%s)", p->ip,
                p->server);
        return false;
    }
    /* An underlay address inside the container network would be routed
     * to a container (or nowhere), never to a server. */
    if (net_spec_fill(net, p->server, &ns, &ignore) == 0) {
        err_set(why, ERR_INPUT, "link_peers: %s's server %s is inside container_network %s",
                p->ip, p->server, net->network_text);
        return false;
    }
    return true;
}

int ov_desired(const spec_link_peer_t *peers, size_t n, uint32_t local, const net_cfg_t *net,
               ov_list_t *out, err_t *skipped, err_t *e)
{
    int left_out = 0;
    ov_list_t ips = {0}; /* ips seen: an ip given twice keeps its first server */
    for (size_t i = 0; i < n; i++) {
        uint32_t ip, node;
        err_t why;
        err_clear(&why);
        if (!peer_ok(&peers[i], local, net, &ip, &node, &why)) {
            if (!left_out++ && skipped)
                *skipped = why;
            continue;
        }
        bool seen = false;
        for (size_t k = 0; k < ips.n && !seen; k++)
            seen = ips.v[k].key == ip;
        if (seen)
            continue;
        uint64_t mac = mac48_of(node);
        if (ov_list_add(&ips, OV_ROUTE, ip, 0, e) < 0 ||
            ov_list_add(out, OV_FDB, mac, node, e) < 0 ||
            ov_list_add(out, OV_NEIGH, ip, mac, e) < 0 ||
            ov_list_add(out, OV_ROUTE, ip, 0, e) < 0) {
            ov_list_free(&ips);
            return -1;
        }
    }
    ov_list_free(&ips);
    ov_list_sort(out);
    return left_out;
}

/* ---- nftables text ------------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = ntohl(*(const uint32_t *)a), y = ntohl(*(const uint32_t *)b);
    return x < y ? -1 : x > y;
}

/* The servers of link_peers but local, sorted, each once. */
static int nft_peers(const spec_link_peer_t *peers, size_t n, uint32_t local, uint32_t **out,
                     size_t *n_out, err_t *e)
{
    *n_out = 0;
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return err_set(e, ERR_INTERNAL, "overlay: out of memory");
    for (size_t i = 0; i < n; i++) {
        uint32_t a;
        if (net_parse_ip(peers[i].server, &a, "link_peers[].server", NULL) == 0 && a &&
            a != local)
            (*out)[(*n_out)++] = a;
    }
    qsort(*out, *n_out, sizeof **out, cmp_u32);
    size_t k = 0;
    for (size_t i = 0; i < *n_out; i++)
        if (!k || (*out)[k - 1] != (*out)[i])
            (*out)[k++] = (*out)[i];
    *n_out = k;
    return 0;
}

static const char *ip_text(uint32_t a, char buf[INET_ADDRSTRLEN])
{
    return inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

uint32_t overlay_local_of(const overlay_cfg_t *c, const spec_state_t *s)
{
    uint32_t a = 0;
    const char *text = c->local && *c->local ? c->local : s->server.address;
    if (!text || net_parse_ip(text, &a, "overlay_local", NULL) < 0)
        return 0;
    return a;
}

static int nft_decls(buf_t *b, const overlay_cfg_t *c, const spec_state_t *s,
                     const char *links_set)
{
    char ip[INET_ADDRSTRLEN];
    uint32_t *peers;
    size_t n;
    if (nft_peers(s->link_peers, s->n_link_peers, overlay_local_of(c, s), &peers, &n, NULL) < 0)
        return -1;
    /* An empty set has no elements line: `elements = { }` is a syntax error. */
    int rc = buf_appends(b, "\tset overlay_peers {\n\t\ttype ipv4_addr\n");
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = buf_printf(b, "%s%s", i ? ", " : "\t\telements = { ", ip_text(peers[i], ip));
    if (rc == 0)
        rc = buf_appends(b, n ? " }\n\t}\n" : "\t}\n");
    if (rc == 0)
        rc = buf_printf(b,
                        "\tchain overlay_in {\n"
                        "\t\tip saddr . ip daddr @%s accept\n"
                        "\t\tdrop\n"
                        "\t}\n",
                        links_set);
    free(peers);
    return rc;
}

static int nft_input(buf_t *b, const overlay_cfg_t *c, const spec_state_t *s)
{
    char ip[INET_ADDRSTRLEN], daddr[INET_ADDRSTRLEN + 16] = "";
    uint32_t local = overlay_local_of(c, s);
    if (local)
        snprintf(daddr, sizeof daddr, "ip daddr %s ", ip_text(local, ip));
    return buf_printf(b,
                      "\t\tiifname \"%s\" drop\n"
                      "\t\t%sudp dport %d ip saddr != @overlay_peers drop\n",
                      c->dev, daddr, c->port);
}

int overlay_nft(buf_t *b, overlay_nft_part_t part, const overlay_cfg_t *c, const spec_state_t *s,
                const char *links_set)
{
    if (!c || !overlay_on(c))
        return 0;
    if (part == OVERLAY_NFT_DECLS)
        return nft_decls(b, c, s, links_set);
    if (part == OVERLAY_NFT_FORWARD)
        return buf_printf(b, "\t\tiifname \"%s\" jump overlay_in\n", c->dev);
    return nft_input(b, c, s);
}

/* ---- netlink messages (the overlay's own, on net.h's net_msg) ------------------------ */

/* RTM_NEWLINK kind vxlan, up, with its MAC and MTU; learning off: entries
 * come only from the state, never from what arrives. */
static struct nlmsghdr *msg_vxlan(void *buf, const overlay_cfg_t *c, uint32_t local)
{
    struct nlmsghdr *nlh = net_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_flags = ifm->ifi_change = IFF_UP;
    uint8_t mac[6];
    overlay_mac(local, mac);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, c->dev);
    mnl_attr_put(nlh, IFLA_ADDRESS, sizeof mac, mac);
    mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)c->mtu);
    struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "vxlan");
    struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    mnl_attr_put_u32(nlh, IFLA_VXLAN_ID, (uint32_t)c->vni);
    mnl_attr_put_u32(nlh, IFLA_VXLAN_LOCAL, local);
    mnl_attr_put_u16(nlh, IFLA_VXLAN_PORT, htons((uint16_t)c->port));
    mnl_attr_put_u8(nlh, IFLA_VXLAN_LEARNING, 0);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, li);
    return nlh;
}

static struct nlmsghdr *msg_link_up(void *buf, int ifindex)
{
    struct nlmsghdr *nlh = net_msg(buf, RTM_NEWLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = ifindex;
    ifm->ifi_flags = ifm->ifi_change = IFF_UP;
    return nlh;
}

/* A forwarding entry (AF_BRIDGE, NTF_SELF: the VXLAN device's own table)
 * or a neighbour (AF_INET); type RTM_NEWNEIGH or RTM_DELNEIGH. */
static struct nlmsghdr *msg_neigh(void *buf, int type, int family, int ifindex, uint64_t mac48,
                                  uint32_t dst)
{
    unsigned flags = type != RTM_NEWNEIGH  ? 0
                     : family == AF_BRIDGE ? NLM_F_CREATE | NLM_F_APPEND
                                           : NLM_F_CREATE | NLM_F_REPLACE;
    struct nlmsghdr *nlh = net_msg(buf, type, flags);
    struct ndmsg *ndm = mnl_nlmsg_put_extra_header(nlh, sizeof *ndm);
    ndm->ndm_family = (uint8_t)family;
    ndm->ndm_ifindex = ifindex;
    ndm->ndm_state = NUD_PERMANENT | (family == AF_BRIDGE ? NUD_NOARP : 0);
    ndm->ndm_flags = family == AF_BRIDGE ? NTF_SELF : 0;
    uint8_t mac[6];
    ov_mac_bytes(mac48, mac);
    if (family == AF_BRIDGE || type == RTM_NEWNEIGH)
        mnl_attr_put(nlh, NDA_LLADDR, sizeof mac, mac);
    mnl_attr_put_u32(nlh, NDA_DST, dst);
    return nlh;
}

/* ---- the device ------------------------------------------------------------------- */

/* What a link dump says of the device named c->dev. */
typedef struct {
    const char *name;
    bool found, is_vxlan;
    int index;
    unsigned flags;
    uint32_t vni, local, mtu;
    uint16_t port;     /* network order */
    int learning;      /* -1: not said */
    uint8_t mac[6];
} vx_seen_t;

static void vx_data(const struct nlattr *data, vx_seen_t *v)
{
    const struct nlattr *a;
    mnl_attr_for_each_nested(a, data)
    {
        int t = mnl_attr_get_type(a);
        if (t == IFLA_VXLAN_ID && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            v->vni = mnl_attr_get_u32(a);
        else if (t == IFLA_VXLAN_LOCAL && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            v->local = mnl_attr_get_u32(a);
        else if (t == IFLA_VXLAN_PORT && mnl_attr_validate(a, MNL_TYPE_U16) == 0)
            v->port = mnl_attr_get_u16(a);
        else if (t == IFLA_VXLAN_LEARNING && mnl_attr_validate(a, MNL_TYPE_U8) == 0)
            v->learning = mnl_attr_get_u8(a);
    }
}

static void vx_linkinfo(const struct nlattr *li, vx_seen_t *v)
{
    const struct nlattr *a;
    mnl_attr_for_each_nested(a, li)
    {
        if (mnl_attr_get_type(a) == IFLA_INFO_KIND &&
            mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
            v->is_vxlan = !strcmp(mnl_attr_get_str(a), "vxlan");
        else if (mnl_attr_get_type(a) == IFLA_INFO_DATA)
            vx_data(a, v);
    }
}

static int link_seen(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    (void)e;
    vx_seen_t *v = ctx, seen = {.name = v->name, .learning = -1};
    const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
    const struct nlattr *a;
    bool named = false;
    mnl_attr_for_each(a, nlh, sizeof *ifm)
    {
        int t = mnl_attr_get_type(a);
        if (t == IFLA_IFNAME && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
            named = !strcmp(mnl_attr_get_str(a), v->name);
        else if (t == IFLA_MTU && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            seen.mtu = mnl_attr_get_u32(a);
        else if (t == IFLA_ADDRESS && mnl_attr_get_payload_len(a) == 6)
            memcpy(seen.mac, mnl_attr_get_payload(a), 6);
        else if (t == IFLA_LINKINFO)
            vx_linkinfo(a, &seen);
    }
    if (named) {
        seen.found = true;
        seen.index = ifm->ifi_index;
        seen.flags = ifm->ifi_flags;
        *v = seen;
    }
    return 0;
}

/* The VXLAN device named `name`, if any (a dump the kernel narrows to
 * VXLAN devices: one per node, however many veths; the name and kind are
 * checked here too).  Another kind of link of that name is not found: the
 * callers ask if_nametoindex and leave it alone. */
static int find_dev(const char *name, vx_seen_t *v, err_t *e)
{
    char buf[NET_MSG_MAX];
    memset(v, 0, sizeof *v);
    v->name = name;
    struct nlmsghdr *nlh = net_msg(buf, RTM_GETLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "vxlan");
    mnl_attr_nest_end(nlh, li);
    return net_dump(nlh, link_seen, v, "overlay: list the VXLAN devices", e);
}

static bool dev_matches(const vx_seen_t *v, const overlay_cfg_t *c, uint32_t local)
{
    uint8_t mac[6];
    overlay_mac(local, mac);
    return v->vni == (uint32_t)c->vni && v->local == local && v->port == htons((uint16_t)c->port) &&
           v->learning == 0 && v->mtu == (uint32_t)c->mtu && !memcmp(v->mac, mac, 6);
}

static int delete_dev(const char *name, err_t *e)
{
    char buf[NET_MSG_MAX], what[64];
    snprintf(what, sizeof what, "overlay: delete %s", name);
    return net_request(net_msg_dellink(buf, name), ENODEV, what, e) < 0 ? -1 : 0;
}

/* The device as the settings say, up; its ifindex, or -1. */
static int ensure_dev(const overlay_cfg_t *c, uint32_t local, err_t *e)
{
    char buf[NET_MSG_MAX], what[96], ip[INET_ADDRSTRLEN];
    vx_seen_t v;
    if (find_dev(c->dev, &v, e) < 0)
        return -1;
    if (!v.is_vxlan && (v.found || if_nametoindex(c->dev)))
        return err_set(e, ERR_CONFLICT,
                       "overlay: an interface named %s exists and is not a VXLAN device: "
                       "choose another overlay_dev",
                       c->dev);
    if (v.found && dev_matches(&v, c, local)) {
        if (!(v.flags & IFF_UP) &&
            net_request(msg_link_up(buf, v.index), 0, "overlay: set the device up", e) < 0)
            return -1;
        return v.index;
    }
    if (v.found) {
        log_info("overlay: %s differs from the settings (VNI, port, local address, MTU or MAC): "
                 "replacing it",
                 c->dev);
        if (delete_dev(c->dev, e) < 0)
            return -1;
    }
    snprintf(what, sizeof what, "overlay: create the VXLAN device %s (VNI %d, local %s, port %d)",
             c->dev, c->vni, ip_text(local, ip), c->port);
    if (net_request(msg_vxlan(buf, c, local), 0, what, e) < 0)
        return -1;
    int index = (int)if_nametoindex(c->dev);
    if (!index)
        return err_set(e, ERR_INTERNAL, "overlay: %s: %s", c->dev, strerror(errno));
    log_info("overlay: %s created (VNI %d, local %s, UDP port %d, MTU %d)", c->dev, c->vni, ip,
             c->port, c->mtu);
    return index;
}

/* ---- what the device holds ---------------------------------------------------------- */

typedef struct {
    int index;
    ov_list_t *have;
} seen_t;

static int route_seen(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    seen_t *s = ctx;
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    if (rtm->rtm_family != AF_INET || rtm->rtm_protocol != NET_RTPROT ||
        rtm->rtm_dst_len != 32 || rtm->rtm_type != RTN_UNICAST)
        return 0;
    uint32_t dst = 0, table = rtm->rtm_table;
    int oif = 0;
    const struct nlattr *a;
    mnl_attr_for_each(a, nlh, sizeof *rtm)
    {
        int t = mnl_attr_get_type(a);
        if (mnl_attr_validate(a, MNL_TYPE_U32) < 0)
            continue;
        if (t == RTA_DST)
            dst = mnl_attr_get_u32(a);
        else if (t == RTA_OIF)
            oif = (int)mnl_attr_get_u32(a);
        else if (t == RTA_TABLE)
            table = mnl_attr_get_u32(a);
    }
    if (oif != s->index || table != RT_TABLE_MAIN)
        return 0;
    return ov_list_add(s->have, OV_ROUTE, dst, 0, e);
}

/* Neighbours (AF_INET) and forwarding entries (AF_BRIDGE) of the device. */
static int neigh_seen(const struct nlmsghdr *nlh, void *ctx, err_t *e)
{
    seen_t *s = ctx;
    const struct ndmsg *ndm = mnl_nlmsg_get_payload(nlh);
    if (ndm->ndm_ifindex != s->index)
        return 0;
    bool fdb = ndm->ndm_family == AF_BRIDGE;
    if (!fdb && (ndm->ndm_family != AF_INET || !(ndm->ndm_state & NUD_PERMANENT)))
        return 0; /* the kernel's own (incomplete, failed): not ours */
    const uint8_t *mac = NULL;
    uint32_t dst = 0;
    bool has_dst = false;
    const struct nlattr *a;
    mnl_attr_for_each(a, nlh, sizeof *ndm)
    {
        if (mnl_attr_get_type(a) == NDA_LLADDR && mnl_attr_get_payload_len(a) == 6)
            mac = mnl_attr_get_payload(a);
        else if (mnl_attr_get_type(a) == NDA_DST && mnl_attr_get_payload_len(a) == 4) {
            memcpy(&dst, mnl_attr_get_payload(a), 4);
            has_dst = true;
        }
    }
    if (!mac || !has_dst)
        return 0;
    return fdb ? ov_list_add(s->have, OV_FDB, ov_mac48(mac), dst, e)
               : ov_list_add(s->have, OV_NEIGH, dst, ov_mac48(mac), e);
}

static int dump_present(int index, ov_list_t *have, err_t *e)
{
    char buf[NET_MSG_MAX];
    seen_t s = {index, have};
    struct nlmsghdr *nlh = net_msg(buf, RTM_GETROUTE, 0);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    if (net_dump(nlh, route_seen, &s, "overlay: list the routes", e) < 0)
        return -1;
    nlh = net_msg(buf, RTM_GETNEIGH, 0);
    struct ndmsg *ndm = mnl_nlmsg_put_extra_header(nlh, sizeof *ndm);
    ndm->ndm_family = AF_INET;
    mnl_attr_put_u32(nlh, NDA_IFINDEX, (uint32_t)index); /* the kernel filters on it */
    if (net_dump(nlh, neigh_seen, &s, "overlay: list the neighbours", e) < 0)
        return -1;
    /* The forwarding table is dumped with an ifinfomsg header, whose index
     * the kernel filters on (an ndmsg would list every device's). */
    nlh = net_msg(buf, RTM_GETNEIGH, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_BRIDGE;
    ifm->ifi_index = index;
    if (net_dump(nlh, neigh_seen, &s, "overlay: list the forwarding entries", e) < 0)
        return -1;
    ov_list_sort(have);
    return 0;
}

/* Add (add true) or delete one entry; what is gone already (or there
 * already) is fine. */
static int change(int index, const ov_entry_t *x, bool add, err_t *e)
{
    char buf[NET_MSG_MAX], what[128], a[INET_ADDRSTRLEN];
    uint8_t mac[6];
    struct nlmsghdr *nlh;
    int ok;
    const char *verb = add ? "add" : "delete";
    if (x->kind == OV_ROUTE) {
        nlh = net_msg_route32(buf, add ? RTM_NEWROUTE : RTM_DELROUTE, (uint32_t)x->key, index);
        ok = add ? 0 : ESRCH;
        snprintf(what, sizeof what, "overlay: %s the route %s/32", verb,
                 ip_text((uint32_t)x->key, a));
    } else if (x->kind == OV_NEIGH) {
        nlh = msg_neigh(buf, add ? RTM_NEWNEIGH : RTM_DELNEIGH, AF_INET, index, x->val,
                        (uint32_t)x->key);
        ok = add ? 0 : ENOENT;
        snprintf(what, sizeof what, "overlay: %s the neighbour %s", verb,
                 ip_text((uint32_t)x->key, a));
    } else {
        nlh = msg_neigh(buf, add ? RTM_NEWNEIGH : RTM_DELNEIGH, AF_BRIDGE, index, x->key,
                        (uint32_t)x->val);
        ok = add ? EEXIST : ENOENT;
        ov_mac_bytes(x->key, mac);
        snprintf(what, sizeof what,
                 "overlay: %s the forwarding entry %02x:%02x:%02x:%02x:%02x:%02x dst %s", verb,
                 mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], ip_text((uint32_t)x->val, a));
    }
    return net_request(nlh, ok, what, e) < 0 ? -1 : 0;
}

/* Deletes first, routes before the neighbours and entries they use; then
 * the adds, entries first.  Every change is tried; -1 if one failed. */
static int apply_diff(int index, const ov_list_t *add, const ov_list_t *del, err_t *e)
{
    int rc = 0;
    err_t one;
    for (size_t i = del->n; i-- > 0;)
        if (change(index, &del->v[i], false, rc ? &one : e) < 0)
            rc = -1;
    for (size_t i = 0; i < add->n; i++)
        if (change(index, &add->v[i], true, rc ? &one : e) < 0)
            rc = -1;
    return rc;
}

/* ---- the daemon's side --------------------------------------------------------------- */

struct overlay {
    const overlay_cfg_t *cfg;
    const net_cfg_t *net;
    uint32_t local;    /* in use; 0 until a state gives one */
    ov_list_t want;    /* what the last state asks for */
    bool pending;      /* want is not (known to be) on the device */
    long long retry_ms;
    char last_skip[sizeof(((err_t *)0)->msg)];
    bool warned_local;
};

overlay_t *overlay_new(const overlay_cfg_t *c, const net_cfg_t *net, err_t *e)
{
    overlay_t *ov = calloc(1, sizeof *ov);
    if (!ov) {
        err_set(e, ERR_INTERNAL, "overlay: out of memory");
        return NULL;
    }
    ov->cfg = c;
    ov->net = net;
    return ov;
}

void overlay_free(overlay_t *ov)
{
    if (!ov)
        return;
    ov_list_free(&ov->want);
    free(ov);
}

/* overlay_local, else the state's server address (checked on each state). */
static int take_local(overlay_t *ov, const spec_state_t *s, err_t *e)
{
    const char *addr = s->server.address;
    uint32_t local = overlay_local_of(ov->cfg, s), server = 0;
    if (!local)
        return err_set(e, ERR_INPUT,
                       "overlay: the server's address '%s' is not an IPv4 address: set "
                       "overlay_local",
                       addr ? addr : "");
    if (addr && net_parse_ip(addr, &server, "server.address", NULL) == 0 && server != local &&
        !ov->warned_local) {
        log_warn("overlay: overlay_local %s is not the server's address %s: the other nodes "
                 "send to %s and derive this node's MAC from it (docs/NETWORK.md)",
                 ov->cfg->local, addr, addr);
        ov->warned_local = true;
    }
    ov->local = local;
    return 0;
}

static void log_skipped(overlay_t *ov, int n, const err_t *why)
{
    if (n <= 0 || !strcmp(ov->last_skip, why->msg))
        return;
    log_warn("overlay: %d link peer(s) left out: %s", n, why->msg);
    snprintf(ov->last_skip, sizeof ov->last_skip, "%s", why->msg);
}

/* The device's entries to ov->want: the difference only. */
static int reconcile(overlay_t *ov, int index, err_t *e)
{
    ov_list_t have = {0}, add = {0}, del = {0};
    int rc = dump_present(index, &have, e);
    if (rc == 0)
        rc = ov_diff(&ov->want, &have, &add, &del, e);
    if (rc == 0 && (add.n || del.n)) {
        log_info("overlay: %zu entries to add, %zu to delete on %s", add.n, del.n, ov->cfg->dev);
        rc = apply_diff(index, &add, &del, e);
    }
    ov_list_free(&have);
    ov_list_free(&add);
    ov_list_free(&del);
    return rc;
}

/* The device as the settings say, holding ov->want.  What is there is read
 * every time (four dumps, one narrowed to VXLAN devices): an entry someone
 * removed by hand comes back with the next state. */
static int sync_dev(overlay_t *ov, err_t *e)
{
    int index = ensure_dev(ov->cfg, ov->local, e);
    int rc = index < 0 ? -1 : reconcile(ov, index, e);
    ov->pending = rc < 0;
    ov->retry_ms = rc < 0 ? now_ms() + OVERLAY_RETRY_MS : 0;
    return rc;
}

int overlay_apply(overlay_t *ov, const spec_state_t *s, err_t *e)
{
    ov_list_t want = {0};
    err_t why;
    err_clear(&why);
    if (take_local(ov, s, e) < 0)
        return -1;
    int skipped = ov_desired(s->link_peers, s->n_link_peers, ov->local, ov->net, &want, &why, e);
    if (skipped < 0)
        return -1;
    log_skipped(ov, skipped, &why);
    ov_list_free(&ov->want);
    ov->want = want;
    return sync_dev(ov, e);
}

int overlay_retry(overlay_t *ov, err_t *e)
{
    if (!ov->pending || !ov->local || now_ms() < ov->retry_ms)
        return 0;
    return sync_dev(ov, e);
}

long long overlay_retry_at(const overlay_t *ov) { return ov->pending ? ov->retry_ms : -1; }

int overlay_remove(const overlay_cfg_t *c, err_t *e)
{
    vx_seen_t v;
    if (find_dev(c->dev, &v, e) < 0)
        return -1;
    if (!v.is_vxlan && (v.found || if_nametoindex(c->dev)))
        return err_set(e, ERR_CONFLICT, "overlay: %s is not a VXLAN device: left alone", c->dev);
    if (!v.found)
        return 0;
    if (delete_dev(c->dev, e) < 0)
        return -1;
    log_info("overlay: %s deleted (its routes, neighbours and forwarding entries with it)", c->dev);
    return 0;
}
