/* netpolicy.c - the node's nftables table (netpolicy.h, docs/NETWORK.md).
 *
 * What a container may do, as chains of `table inet <nft_table>` (P is the
 * veth prefix: every rule names this node's own interfaces only):
 *   forward, first: a source in the container network that does not route
 *       back out of the interface it came in on is dropped (fib): nobody
 *       on the uplink poses as a linked container.
 *   forward, iifname "P*" -> from_container: a DNATed flow of a mapped port
 *       (the reply of a world client, or a container using the server's
 *       public address), checked against the whole mapping (@pm_tcp,
 *       public port . container ip . private port); a linked pair (@links,
 *       ip saddr . ip daddr, on every packet: unlink cuts open flows); any
 *       other container address is rejected; the uplink only with nat on,
 *       and never nat_deny's networks; anything else rejected.
 *   forward, oifname "P*" -> to_container (from anywhere else): DNATed
 *       flows of mapped ports, linked pairs from outside (another node,
 *       the overlay), replies from the uplink with nat on; dropped else.
 *   input, iifname "P*": only replies to what the node opened (and DNS on
 *       the gateway if offered): no node service, loopback ones included.
 * Rejects (icmpx admin-prohibited) towards containers give customers a
 * fast error; the world gets silence.  The node's `unreachable <network>`
 * route (net.h) keeps any other 10.x from being routed out: not a rule
 * here, since two nodes' tables in one namespace would drop each other's. */
#include "netpolicy.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/strutil.h"
#include "../runtime/net.h"

typedef struct {
    char **v;
    size_t n;
} strs_t;

enum { EL_LINKS, EL_TCP, EL_UDP, EL_PORTMAP, EL_SETS };

typedef struct {
    strs_t set[EL_SETS];
} elems_t;

/* What the state asks for: the elements, and the rules (the chains' text:
 * equal rules, a change of elements only).  The whole text is made from
 * both when it is applied whole (render_text). */
typedef struct {
    elems_t el;
    char *rules;
} table_t;

struct netpolicy {
    netpolicy_cfg_t cfg;
    struct nft_ctx *nft; /* kept: a new context costs more than a small change */
    table_t now;         /* in force when in_force (its full text is not kept) */
    bool in_force;
    table_t pending; /* the newest, not applied yet (it failed): applied whole */
    bool has_pending;
    uint64_t handle; /* the kernel's handle of the table we applied whole; 0: unknown */
};

/* ---- settings ------------------------------------------------------------------ */

static const char *ntoa(uint32_t addr, char out[INET_ADDRSTRLEN])
{
    struct in_addr a = {.s_addr = addr};
    return inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

int netpolicy_check_table(const char *name, err_t *e)
{
    size_t n = strlen(name);
    bool ok = n >= 1 && n <= NETPOLICY_TABLE_MAX &&
              ((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'));
    for (size_t i = 0; ok && i < n; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
    if (!ok)
        return err_set(e, ERR_INPUT,
                       "nft_table must be 1-%d letters, digits or '_', starting with a letter "
                       "(not '%s')",
                       NETPOLICY_TABLE_MAX, name);
    return 0;
}

int netpolicy_check_ifname(const char *name, err_t *e)
{
    size_t n = strlen(name);
    bool ok = n <= NETPOLICY_IFNAME_MAX && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || strchr("_.-", name[i]);
    if (!ok)
        return err_set(e, ERR_INPUT,
                       "uplink must be empty or an interface name of at most %d letters, "
                       "digits, '_', '.' or '-' (not '%s')",
                       NETPOLICY_IFNAME_MAX, name);
    return 0;
}

/* nat_deny's entries, each "A.B.C.D" (a /32) or "A.B.C.D/N", separated by
 * commas or blanks, rewritten from their numbers into out (when not NULL)
 * as "A.B.C.D/N, ...": no text of the setting reaches the table. */
static int parse_deny(const char *list, buf_t *out, err_t *e)
{
    const char *sep = ", \t";
    size_t count = 0;
    for (const char *p = list ? list + strspn(list, sep) : ""; *p; p += strspn(p, sep)) {
        size_t n = strcspn(p, sep);
        char tok[32], a[INET_ADDRSTRLEN];
        uint32_t addr;
        int len = 32;
        if (n >= sizeof tok)
            return err_set(e, ERR_INPUT,
                           "nat_deny: '%.*s' is not an IPv4 address or network like "
                           "169.254.0.0/16",
                           (int)n, p);
        memcpy(tok, p, n);
        tok[n] = '\0';
        if ((strchr(tok, '/') ? net_parse_cidr(tok, &addr, &len, "nat_deny", e)
                              : net_parse_ip(tok, &addr, "nat_deny", e)) < 0)
            return -1;
        if (out && buf_printf(out, "%s%s/%d", count ? ", " : "", ntoa(addr, a), len) < 0)
            return err_set(e, ERR_INTERNAL, "out of memory");
        count++;
        p += n;
    }
    return 0;
}

int netpolicy_check_nat_deny(const char *list, err_t *e) { return parse_deny(list, NULL, e); }

/* The prefix goes between quotes in the text: the runtime's rule (net.h),
 * checked again here so no setting can break out of them. */
static int check_cfg(const netpolicy_cfg_t *c, err_t *e)
{
    if (netpolicy_check_table(c->table ? c->table : "", e) < 0 ||
        netpolicy_check_ifname(c->uplink ? c->uplink : "", e) < 0)
        return -1;
    if (net_check_prefix(c->prefix, e) < 0 || netpolicy_check_nat_deny(c->nat_deny, e) < 0)
        return -1;
    if (c->prefixlen < 1 || c->prefixlen > 30)
        return err_set(e, ERR_INPUT, "the container network's length must be 1 to 30");
    return 0;
}

/* ---- addresses ------------------------------------------------------------------- */

/* A container's address: inside the network, not its network or broadcast
 * address, not the gateway.  false for anything else (NULL included). */
static bool container_addr(const netpolicy_cfg_t *c, const char *ip, uint32_t *out)
{
    struct in_addr a;
    if (!ip || inet_pton(AF_INET, ip, &a) != 1 ||
        !net_is_container_ip(a.s_addr, c->network, c->prefixlen, c->gateway))
        return false;
    *out = a.s_addr;
    return true;
}

/* ---- what the state asks for ------------------------------------------------------ */

typedef struct {
    long long uid;
    uint32_t ip;
    const spec_container_t *local; /* NULL: a remote link peer */
} peer_t;

typedef struct {
    uint32_t a, b; /* one allowed direction: a -> b */
} pair_t;

typedef struct {
    bool udp;
    long long public_port, private_port;
    uint32_t ip;
} mapping_t;

typedef struct {
    peer_t *peers; /* every container this node knows an address of, by uid */
    size_t n_peers;
    pair_t *pairs;
    size_t n_pairs;
    mapping_t *maps;
    size_t n_maps;
    bool have_addr;
    uint32_t addr; /* the server's address (DNAT), if IPv4 */
} want_t;

static void want_free(want_t *w)
{
    free(w->peers);
    free(w->pairs);
    free(w->maps);
}

static int cmp_peer(const void *x, const void *y)
{
    const peer_t *a = x, *b = y;
    return a->uid < b->uid ? -1 : a->uid > b->uid;
}

static int cmp_pair(const void *x, const void *y)
{
    const pair_t *p = x, *q = y;
    uint64_t a = (uint64_t)ntohl(p->a) << 32 | ntohl(p->b);
    uint64_t b = (uint64_t)ntohl(q->a) << 32 | ntohl(q->b);
    return a < b ? -1 : a > b;
}

/* The local containers and the remote link peers, sorted by uid. */
static int collect_peers(const netpolicy_cfg_t *c, const spec_state_t *s, want_t *w)
{
    size_t n = s->n_containers + s->n_link_peers;
    if (!(w->peers = calloc(n ? n : 1, sizeof *w->peers)))
        return -1;
    char net[INET_ADDRSTRLEN];
    for (size_t i = 0; i < s->n_containers; i++) {
        const spec_container_t *k = &s->containers[i];
        uint32_t ip;
        if (container_addr(c, k->ip, &ip))
            w->peers[w->n_peers++] = (peer_t){k->uid, ip, k};
        else if (k->ip && *k->ip)
            log_warn("network: container %lld: ip %s is not a container address of %s/%d: "
                     "it gets no link",
                     k->uid, k->ip, ntoa(c->network, net), c->prefixlen);
    }
    for (size_t i = 0; i < s->n_link_peers; i++) {
        const spec_link_peer_t *p = &s->link_peers[i];
        uint32_t ip;
        if (container_addr(c, p->ip, &ip))
            w->peers[w->n_peers++] = (peer_t){p->uid, ip, NULL};
        else
            log_warn("network: link peer %lld: ip %s is not a container address: ignored",
                     p->uid, p->ip ? p->ip : "(none)");
    }
    qsort(w->peers, w->n_peers, sizeof *w->peers, cmp_peer);
    return 0;
}

static const peer_t *peer_of(const want_t *w, long long uid)
{
    peer_t key = {.uid = uid};
    return bsearch(&key, w->peers, w->n_peers, sizeof *w->peers, cmp_peer);
}

static bool lists(const spec_container_t *k, long long uid)
{
    for (size_t i = 0; i < k->n_links; i++)
        if (k->links[i] == uid)
            return true;
    return false;
}

/* Both orders of every link, each once.  The API sends only mutual links;
 * between two containers of this node both must say so all the same (a
 * one-sided link opens nothing, whatever sent it). */
static int collect_pairs(const spec_state_t *s, want_t *w)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_containers; i++)
        n += s->containers[i].n_links;
    if (!(w->pairs = calloc(n ? 2 * n : 1, sizeof *w->pairs)))
        return -1;
    for (size_t i = 0; i < s->n_containers; i++) {
        const spec_container_t *k = &s->containers[i];
        const peer_t *me = peer_of(w, k->uid);
        for (size_t j = 0; me && j < k->n_links; j++) {
            const peer_t *other = peer_of(w, k->links[j]);
            if (!other || other->ip == me->ip || (other->local && !lists(other->local, k->uid)))
                continue; /* unknown here (not startable), or one-sided */
            w->pairs[w->n_pairs++] = (pair_t){me->ip, other->ip};
            w->pairs[w->n_pairs++] = (pair_t){other->ip, me->ip};
        }
    }
    qsort(w->pairs, w->n_pairs, sizeof *w->pairs, cmp_pair);
    size_t out = 0;
    for (size_t i = 0; i < w->n_pairs; i++)
        if (!out || cmp_pair(&w->pairs[out - 1], &w->pairs[i]) != 0)
            w->pairs[out++] = w->pairs[i];
    w->n_pairs = out;
    return 0;
}

/* Is public port `port` (udp or tcp) one the node's legions listen on?  A
 * mapping of it would be DNATed in prerouting, before the input chain
 * keeps these ports to the members: a container would get the Lord's
 * requests for every cluster domain, the members' envelopes or their
 * Legion announcements. */
static bool legion_port_taken(const netpolicy_cfg_t *c, const spec_state_t *s, bool udp,
                              long long port)
{
    if (!udp)
        return c->cluster_port > 0 && port == c->cluster_port;
    if (c->cluster_gate_port > 0 && port == c->cluster_gate_port)
        return true;
    for (size_t l = 0; l < s->n_legions; l++)
        if (c->legion_port > 0 && port == (long long)c->legion_port + s->legions[l].id)
            return true;
    return false;
}

/* Why mapping m cannot be applied, or NULL. */
static const char *mapping_flaw(const netpolicy_cfg_t *c, const spec_state_t *s,
                                const spec_portmapping_t *m, const want_t *w, mapping_t *out)
{
    if (!m->proto || (strcmp(m->proto, "tcp") != 0 && strcmp(m->proto, "udp") != 0))
        return "proto must be tcp or udp";
    if (m->public_port < 1 || m->public_port > 65535)
        return "public_port must be 1 to 65535";
    if (m->private_port < 1 || m->private_port > 65535)
        return "private_port must be 1 to 65535";
    *out = (mapping_t){.udp = m->proto[0] == 'u', .public_port = m->public_port,
                       .private_port = m->private_port};
    if (!container_addr(c, m->container_ip, &out->ip))
        return "container_ip is not a container address";
    if (legion_port_taken(c, s, out->udp, out->public_port))
        return "its public port is the node's own (cluster_port, cluster_gate_port or a "
               "legion's port)";
    for (size_t i = 0; i < w->n_maps; i++)
        if (w->maps[i].udp == out->udp && w->maps[i].public_port == out->public_port)
            return "its public port is mapped already";
    return NULL;
}

static int collect_mappings(const netpolicy_cfg_t *c, const spec_state_t *s, want_t *w)
{
    size_t n = s->n_portmappings;
    if (!(w->maps = calloc(n ? n : 1, sizeof *w->maps)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        const spec_portmapping_t *m = &s->portmappings[i];
        const char *flaw = mapping_flaw(c, s, m, w, &w->maps[w->n_maps]);
        if (flaw)
            log_warn("network: port mapping %lld (%s %lld -> %s:%lld) is left out: %s", m->id,
                     m->proto ? m->proto : "?", m->public_port,
                     m->container_ip ? m->container_ip : "?", m->private_port, flaw);
        else
            w->n_maps++;
    }
    struct in_addr a;
    const char *addr = s->server.address;
    w->have_addr = addr && inet_pton(AF_INET, addr, &a) == 1;
    w->addr = a.s_addr;
    if (n && !w->have_addr)
        log_warn("network: the server's address '%s' is not an IPv4 address: no port mapping "
                 "applies",
                 addr ? addr : "");
    return 0;
}

static int collect(const netpolicy_cfg_t *c, const spec_state_t *s, want_t *w, err_t *e)
{
    memset(w, 0, sizeof *w);
    if (collect_peers(c, s, w) < 0 || collect_pairs(s, w) < 0 ||
        collect_mappings(c, s, w) < 0) {
        want_free(w);
        return err_set(e, ERR_INTERNAL, "out of memory rendering the nft table");
    }
    return 0;
}

/* ---- the text ----------------------------------------------------------------- */

/* The elements of the table's sets and map, as nft text, one string each:
 * the whole table is rendered with them, a change of elements alone is
 * applied as their difference (netpolicy_apply). */
static const char *const el_name[EL_SETS] = {"links", "pm_tcp", "pm_udp", "portmap"};
/* pm_tcp/pm_udp hold whole mappings (public port . container ip . private
 * port): moving a port to another container cuts the old one's flows. */
static const char *const el_type[EL_SETS] = {
    "ipv4_addr . ipv4_addr", "inet_service . ipv4_addr . inet_service",
    "inet_service . ipv4_addr . inet_service",
    "inet_proto . inet_service : ipv4_addr . inet_service"};

static void elems_free(elems_t *el)
{
    for (int k = 0; k < EL_SETS; k++) {
        for (size_t i = 0; i < el->set[k].n; i++)
            free(el->set[k].v[i]);
        free(el->set[k].v);
    }
    memset(el, 0, sizeof *el);
}

static bool push(strs_t *l, char *str)
{
    if (!str)
        return false;
    l->v[l->n++] = str;
    return true;
}

static int elems_make(const want_t *w, elems_t *el)
{
    memset(el, 0, sizeof *el);
    for (int k = 0; k < EL_SETS; k++) {
        size_t cap = k == EL_LINKS ? w->n_pairs : w->n_maps;
        if (!(el->set[k].v = calloc(cap ? cap : 1, sizeof(char *))))
            goto oom;
    }
    char x[INET_ADDRSTRLEN], y[INET_ADDRSTRLEN];
    for (size_t i = 0; i < w->n_pairs; i++)
        if (!push(&el->set[EL_LINKS],
                  str_printf("%s . %s", ntoa(w->pairs[i].a, x), ntoa(w->pairs[i].b, y))))
            goto oom;
    for (size_t i = 0; i < w->n_maps; i++) {
        const mapping_t *m = &w->maps[i];
        if (!push(&el->set[m->udp ? EL_UDP : EL_TCP],
                  str_printf("%lld . %s . %lld", m->public_port, ntoa(m->ip, x),
                             m->private_port)) ||
            !push(&el->set[EL_PORTMAP], str_printf("%s . %lld : %s . %lld",
                                                   m->udp ? "udp" : "tcp", m->public_port,
                                                   ntoa(m->ip, x), m->private_port)))
            goto oom;
    }
    return 0;
oom:
    elems_free(el);
    return -1;
}

/* `set NAME { type T; elements = { ... } }`, the elements only if with. */
static void put_set(buf_t *b, int k, const strs_t *l, bool with, bool *oom)
{
    *oom |= buf_printf(b, "\t%s %s {\n\t\ttype %s\n", k == EL_PORTMAP ? "map" : "set",
                       el_name[k], el_type[k]) < 0;
    for (size_t i = 0; with && i < l->n; i++)
        *oom |= buf_printf(b, "%s%s", i ? ", " : "\t\telements = { ", l->v[i]) < 0;
    *oom |= buf_appends(b, with && l->n ? " }\n\t}\n" : "\t}\n") < 0;
}

/* DNAT of the server's address: from the world (prerouting) and from the
 * node itself (output: `curl <server address>:<public port>` on the node). */
static void put_nat(buf_t *b, const netpolicy_cfg_t *c, const want_t *w, bool *oom)
{
    char addr[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN], net[INET_ADDRSTRLEN];
    const char *dnat = "";
    char rule[128] = "";
    if (w->have_addr) {
        snprintf(rule, sizeof rule,
                 "\t\tip daddr %s dnat ip to meta l4proto . th dport map @portmap\n",
                 ntoa(w->addr, addr));
        dnat = rule;
    }
    *oom |= buf_printf(b,
                       "\tchain prerouting {\n"
                       "\t\ttype nat hook prerouting priority dstnat; policy accept;\n%s\t}\n"
                       "\tchain output_nat {\n"
                       "\t\ttype nat hook output priority -100; policy accept;\n%s\t}\n"
                       "\tchain postrouting {\n"
                       "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
                       /* A node-local client of a mapping (127.0.0.x) must not reach the
                        * container with a loopback source: the gateway's instead. */
                       "\t\tip saddr 127.0.0.0/8 oifname \"%s*\" snat ip to %s\n",
                       dnat, dnat, c->prefix, ntoa(c->gateway, gw)) < 0;
    if (c->nat && c->uplink && *c->uplink)
        *oom |= buf_printf(b, "\t\tip saddr %s/%d oifname \"%s\" masquerade\n",
                           ntoa(c->network, net), c->prefixlen, c->uplink) < 0;
    *oom |= buf_appends(b, "\t}\n") < 0;
}

/* With nat on: the uplink, but never nat_deny (the cloud's metadata
 * service 169.254.169.254, the supplier's private networks). */
static void put_world(buf_t *b, const netpolicy_cfg_t *c, bool *oom)
{
    buf_t deny = {0};
    err_t e;
    err_clear(&e);
    *oom |= parse_deny(c->nat_deny, &deny, &e) < 0; /* valid (check_cfg): memory only */
    if (deny.len)
        *oom |= buf_printf(b, "\t\tip daddr { %s } reject with icmpx admin-prohibited\n",
                           deny.data) < 0;
    buf_free(&deny);
    *oom |= buf_printf(b, "\t\toifname \"%s\" accept\n", c->uplink) < 0;
}

/* A member other than this server whose address is IPv4 and not listed yet. */
static bool legion_peer(const spec_state_t *s, size_t li, size_t ni)
{
    const char *a = s->legions[li].nodes[ni];
    struct in_addr x;
    if (!a || inet_pton(AF_INET, a, &x) != 1 ||
        (s->server.address && !strcmp(a, s->server.address)))
        return false;
    for (size_t l = 0; l <= li; l++)
        for (size_t n = 0; n < (l == li ? ni : s->legions[l].n_nodes); n++)
            if (s->legions[l].nodes[n] && !strcmp(s->legions[l].nodes[n], a))
                return false;
    return true;
}

/* Whether the node has anything only legion members may reach: a legion,
 * or the router's fastrouter (cluster_port), which runs in no legion too
 * and must never be reachable from the world: it takes uwsgi packets whose
 * variables (REMOTE_ADDR, HTTPS_DN...) the vassal believes. */
static bool legion_guarded(const netpolicy_cfg_t *c, const spec_state_t *s)
{
    return s->n_legions || c->cluster_port > 0;
}

/* The set of the other members (whole replace: it changes rarely; empty in
 * no legion), declared before the chains. */
static void put_legion_set(buf_t *b, const netpolicy_cfg_t *c, const spec_state_t *s, bool *oom)
{
    if (!legion_guarded(c, s))
        return;
    bool any = false;
    *oom |= buf_appends(b, "\tset legion_peers {\n\t\ttype ipv4_addr\n") < 0;
    for (size_t l = 0; l < s->n_legions; l++)
        for (size_t n = 0; n < s->legions[l].n_nodes; n++)
            if (legion_peer(s, l, n)) {
                *oom |= buf_printf(b, "%s%s", any ? ", " : "\t\telements = { ",
                                   s->legions[l].nodes[n]) < 0;
                any = true;
            }
    /* An empty set has no elements line: `elements = { }` is a syntax error. */
    *oom |= buf_appends(b, any ? " }\n\t}\n" : "\t}\n") < 0;
}

/* The legions' guarded ports as rules: `udp dport { <legion ports>,
 * <cluster_gate_port> } <match> <verdict>` and `tcp dport <cluster_port>
 * <match> <verdict>` (tcp_verdict for TCP). */
static void put_legion_ports(buf_t *b, const netpolicy_cfg_t *c, const spec_state_t *s,
                             const char *match, const char *verdict, const char *tcp_verdict,
                             bool *oom)
{
    if (!legion_guarded(c, s))
        return;
    buf_t ports = {0};
    for (size_t l = 0; l < s->n_legions; l++) {
        long long port = (long long)c->legion_port + s->legions[l].id;
        if (c->legion_port > 0 && s->legions[l].id > 0 && port <= 65535)
            *oom |= buf_printf(&ports, "%s%lld", ports.len ? ", " : "", port) < 0;
    }
    if (c->cluster_gate_port > 0)
        *oom |= buf_printf(&ports, "%s%d", ports.len ? ", " : "", c->cluster_gate_port) < 0;
    if (ports.len)
        *oom |= buf_printf(b, "\t\tudp dport { %s } %s %s\n", ports.data, match, verdict) < 0;
    if (c->cluster_port > 0)
        *oom |= buf_printf(b, "\t\ttcp dport %d %s %s\n", c->cluster_port, match,
                           tcp_verdict) < 0;
    buf_free(&ports);
}

/* Input: the legions' UDP ports (uWSGI's legion, the gates) and the
 * fastrouter's TCP port only from the other members (legion.h). */
static void put_legion_input(buf_t *b, const netpolicy_cfg_t *c, const spec_state_t *s,
                             bool *oom)
{
    put_legion_ports(b, c, s, "ip saddr != @legion_peers", "drop", "drop", oom);
}

/* From a container: never to those ports of a member.  Masqueraded out of
 * the uplink, a container's packet carries this server's address, which
 * the member accepts as a member's: it could hand another customer's
 * vassal a uwsgi request of its making through the member's fastrouter,
 * or feed the member's Legion and gate. */
static void put_legion_from_container(buf_t *b, const netpolicy_cfg_t *c,
                                      const spec_state_t *s, bool *oom)
{
    put_legion_ports(b, c, s, "ip daddr @legion_peers", "reject with icmpx admin-prohibited",
                     "reject with tcp reset", oom);
}

static void put_filter(buf_t *b, const netpolicy_cfg_t *c, const spec_state_t *s, bool *oom)
{
    char gw[INET_ADDRSTRLEN], netaddr[INET_ADDRSTRLEN], net[INET_ADDRSTRLEN + 4];
    snprintf(net, sizeof net, "%s/%d", ntoa(c->network, netaddr), c->prefixlen);
    ntoa(c->gateway, gw);
    const char *p = c->prefix, *up = c->uplink;
    bool world = c->nat && up && *up;
    /* A mapped flow is its mapping's (public port . container ip . private
     * port): towards the container (its original direction: a world client,
     * or a container using the server's public address) and its replies. */
    static const char to_mapped[] =
        "\t\tct status dnat ct direction original meta l4proto tcp "
        "ct original proto-dst . ip daddr . th dport @pm_tcp accept\n"
        "\t\tct status dnat ct direction original meta l4proto udp "
        "ct original proto-dst . ip daddr . th dport @pm_udp accept\n";
    static const char from_mapped[] =
        "\t\tct status dnat ct direction reply meta l4proto tcp "
        "ct original proto-dst . ip saddr . th sport @pm_tcp accept\n"
        "\t\tct status dnat ct direction reply meta l4proto udp "
        "ct original proto-dst . ip saddr . th sport @pm_udp accept\n";
    static const char links[] = "\t\tip saddr . ip daddr @links accept\n";
    /* First: a container address comes only from where its route goes (its
     * veth, the overlay, another node's veth in this namespace): nobody on
     * the uplink can pose as a linked peer.  The unreachable route makes
     * any other source "missing". */
    *oom |= buf_printf(b,
                       "\tchain forward {\n"
                       "\t\ttype filter hook forward priority filter; policy accept;\n"
                       "\t\tip saddr %s fib saddr . iif oif missing drop\n",
                       net) < 0;
    /* Then: what comes in on the overlay is a linked pair or dropped. */
    *oom |= overlay_nft(b, OVERLAY_NFT_FORWARD, c->overlay, s, "links") < 0;
    *oom |= buf_printf(b,
                       "\t\tiifname \"%s*\" jump from_container\n"
                       "\t\toifname \"%s*\" jump to_container\n\t}\n"
                       "\tchain from_container {\n%s%s%s"
                       /* TCP gets a reset: the kernel rate-limits ICMP errors per
                        * destination, so a client retrying an unlinked peer would
                        * soon see its SYNs vanish and, once linked, wait for its own
                        * retransmission (1 s, 3 s...).  A reset is never limited. */
                       "\t\tip daddr %s meta l4proto tcp reject with tcp reset\n"
                       "\t\tip daddr %s reject with icmpx admin-prohibited\n",
                       p, p, from_mapped, to_mapped, links, net, net) < 0;
    put_legion_from_container(b, c, s, oom);
    if (world)
        put_world(b, c, oom);
    *oom |= buf_printf(b,
                       "\t\treject with icmpx admin-prohibited\n\t}\n"
                       "\tchain to_container {\n%s%s",
                       to_mapped, links) < 0;
    if (world)
        *oom |= buf_printf(b,
                           "\t\tiifname \"%s\" ct direction reply ct state "
                           "established,related accept\n",
                           up) < 0;
    *oom |= buf_printf(b,
                       "\t\tdrop\n\t}\n"
                       "\tchain input {\n"
                       "\t\ttype filter hook input priority filter; policy accept;\n"
                       "\t\tiifname \"%s*\" ct state established,related accept\n",
                       p) < 0;
    if (c->dns)
        *oom |= buf_printf(b,
                           "\t\tiifname \"%s*\" ip daddr %s meta l4proto { tcp, udp } th dport "
                           "53 accept\n",
                           p, gw) < 0;
    *oom |= overlay_nft(b, OVERLAY_NFT_INPUT, c->overlay, s, "links") < 0;
    put_legion_input(b, c, s, oom);
    *oom |= buf_printf(b, "\t\tiifname \"%s*\" reject with icmpx admin-prohibited\n\t}\n", p) < 0;
}

/* The chains; NULL when out of memory. */
static char *render_rules(const netpolicy_cfg_t *c, const spec_state_t *s, const want_t *w)
{
    buf_t b = {0};
    /* The overlay's set (its peers change rarely: a whole replace) and
     * chain come first, after the table's sets. */
    bool oom = overlay_nft(&b, OVERLAY_NFT_DECLS, c->overlay, s, "links") < 0;
    put_legion_set(&b, c, s, &oom);
    put_nat(&b, c, w, &oom);
    put_filter(&b, c, s, &oom);
    if (oom) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* The whole text of t: the replace of our table with its sets, their
 * elements and the rules; NULL when out of memory. */
static char *render_text(const netpolicy_cfg_t *c, const table_t *t)
{
    buf_t b = {0};
    bool oom = buf_printf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n",
                          c->table, c->table, c->table) < 0;
    for (int k = 0; k < EL_SETS; k++)
        put_set(&b, k, &t->el.set[k], true, &oom);
    oom |= buf_appends(&b, t->rules) < 0 || buf_appends(&b, "}\n") < 0;
    if (oom) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void table_free(table_t *t)
{
    elems_free(&t->el);
    free(t->rules);
    memset(t, 0, sizeof *t);
}

static int table_make(const netpolicy_cfg_t *c, const spec_state_t *s, table_t *t, err_t *e)
{
    memset(t, 0, sizeof *t);
    if (check_cfg(c, e) < 0)
        return -1;
    want_t w;
    if (collect(c, s, &w, e) < 0)
        return -1;
    bool ok = elems_make(&w, &t->el) == 0 && (t->rules = render_rules(c, s, &w));
    want_free(&w);
    if (!ok) {
        table_free(t);
        return err_set(e, ERR_INTERNAL, "out of memory rendering the nft table");
    }
    return 0;
}

char *netpolicy_render(const netpolicy_cfg_t *c, const spec_state_t *s, err_t *e)
{
    table_t t;
    if (table_make(c, s, &t, e) < 0)
        return NULL;
    char *full = render_text(c, &t);
    table_free(&t);
    if (!full)
        err_set(e, ERR_INTERNAL, "out of memory rendering the nft table");
    return full;
}

/* ---- a change of elements only: their difference ------------------------------ */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* A sorted copy of l's pointers (the strings stay l's). */
static char **sorted(const strs_t *l)
{
    char **v = malloc((l->n ? l->n : 1) * sizeof *v);
    if (v) {
        memcpy(v, l->v, l->n * sizeof *v);
        qsort(v, l->n, sizeof *v, cmp_str);
    }
    return v;
}

/* `delete|add element inet T NAME { ... }` for what of l is not in other
 * (both sorted); a map's delete names only the keys.  Returns how many. */
static size_t put_diff(buf_t *b, const char *table, int k, bool add, char **l, size_t n,
                       char **other, size_t n_other, bool *oom)
{
    size_t count = 0, j = 0;
    for (size_t i = 0; i < n; i++) {
        while (j < n_other && strcmp(other[j], l[i]) < 0)
            j++;
        if (j < n_other && strcmp(other[j], l[i]) == 0)
            continue;
        int len = add || k != EL_PORTMAP ? (int)strlen(l[i]) : (int)strcspn(l[i], ":") - 1;
        if (count++ == 0)
            *oom |= buf_printf(b, "%s element inet %s %s { ", add ? "add" : "delete", table,
                               el_name[k]) < 0;
        else
            *oom |= buf_appends(b, ", ") < 0;
        *oom |= buf_printf(b, "%.*s", len, l[i]) < 0;
    }
    if (count)
        *oom |= buf_appends(b, " }\n") < 0;
    return count;
}

/* The commands that turn the elements from into to, deletes first (a
 * mapping moved to another container is a delete and an add of its key);
 * "" when they are equal, NULL when out of memory. */
static char *elems_diff(const char *table, const elems_t *from, const elems_t *to)
{
    buf_t b = {0};
    bool oom = buf_appends(&b, "") < 0;
    char **f[EL_SETS] = {0}, **t[EL_SETS] = {0};
    for (int k = 0; k < EL_SETS; k++)
        oom |= !(f[k] = sorted(&from->set[k])) || !(t[k] = sorted(&to->set[k]));
    for (int pass = 0; pass < 2 && !oom; pass++)
        for (int k = 0; k < EL_SETS; k++)
            if (pass == 0)
                put_diff(&b, table, k, false, f[k], from->set[k].n, t[k], to->set[k].n, &oom);
            else
                put_diff(&b, table, k, true, t[k], to->set[k].n, f[k], from->set[k].n, &oom);
    for (int k = 0; k < EL_SETS; k++) {
        free(f[k]);
        free(t[k]);
    }
    if (oom) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- libnftables ------------------------------------------------------------------ */

static struct nft_ctx *nft_open(err_t *e)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft) {
        err_set(e, ERR_INTERNAL, "libnftables: cannot create a context (out of memory)");
        return NULL;
    }
    /* Captured, never printed on the daemon's stdout/stderr by the library. */
    if (nft_ctx_buffer_output(nft) != 0 || nft_ctx_buffer_error(nft) != 0) {
        nft_ctx_free(nft);
        err_set(e, ERR_INTERNAL, "libnftables: cannot buffer its output");
        return NULL;
    }
    return nft;
}

/* Run text; on failure e holds libnftables' first error line. */
static int nft_run(struct nft_ctx *nft, const char *text, const char *what, err_t *e)
{
    if (nft_run_cmd_from_buffer(nft, text) == 0) {
        nft_ctx_get_output_buffer(nft); /* drop it */
        nft_ctx_get_error_buffer(nft);
        return 0;
    }
    const char *msg = nft_ctx_get_error_buffer(nft);
    size_t n = msg ? strcspn(msg, "\n") : 0;
    nft_ctx_get_output_buffer(nft);
    return err_set(e, ERR_INTERNAL, "%s: %.*s", what, (int)n,
                   n ? msg : "libnftables failed without a message");
}

/* ---- the table's presence (netpolicy_check) ------------------------------------ */

static int handle_attr_cb(const struct nlattr *a, void *data)
{
    if (mnl_attr_get_type(a) == NFTA_TABLE_HANDLE && mnl_attr_validate(a, MNL_TYPE_U64) >= 0)
        *(uint64_t *)data = be64toh(mnl_attr_get_u64(a));
    return MNL_CB_OK;
}

static int handle_cb(const struct nlmsghdr *nlh, void *data)
{
    if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), handle_attr_cb, data) < 0)
        return MNL_CB_ERROR;
    return MNL_CB_OK;
}

/* The kernel's handle of `table inet <name>`, asked for by name (one
 * message, no dump of the table: cheap enough every second whatever the
 * sets hold).  1 found, 0 absent, -1 with e saying why. */
static int table_handle(const char *name, uint64_t *handle, err_t *e)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = 1;
    struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof *g);
    g->nfgen_family = NFPROTO_INET;
    g->version = NFNETLINK_V0;
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name);
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (!nl)
        return err_set(e, ERR_INTERNAL, "look for the nft table inet %s: netlink socket: %s",
                       name, strerror(errno));
    int rc = mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
                     mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0
                 ? -1
                 : MNL_CB_OK;
    unsigned portid = mnl_socket_get_portid(nl);
    *handle = 0;
    while (rc > 0) { /* the table, then the ACK (MNL_CB_STOP) */
        ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
        rc = n < 0 ? -1 : mnl_cb_run(buf, (size_t)n, 1, portid, handle_cb, handle);
    }
    int err = errno;
    mnl_socket_close(nl);
    if (rc < 0 && err == ENOENT)
        return 0;
    if (rc < 0)
        return err_set(e, ERR_INTERNAL, "look for the nft table inet %s: %s", name,
                       strerror(err));
    return 1;
}

netpolicy_t *netpolicy_new(const netpolicy_cfg_t *c, err_t *e)
{
    if (check_cfg(c, e) < 0)
        return NULL;
    netpolicy_t *np = calloc(1, sizeof *np);
    if (!np) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    np->cfg = *c;
    if (!(np->nft = nft_open(e))) {
        free(np);
        return NULL;
    }
    return np;
}

void netpolicy_free(netpolicy_t *np)
{
    if (!np)
        return;
    nft_ctx_free(np->nft);
    table_free(&np->now);
    table_free(&np->pending);
    free(np);
}

/* Only elements changed: their difference in one transaction, so one
 * more link costs the same with 10 or 1,000 of them.  1 applied, 0 equal,
 * -1 (e set) to fall back on the whole table. */
static int apply_elements(netpolicy_t *np, table_t *t, err_t *e)
{
    char *diff = elems_diff(np->cfg.table, &np->now.el, &t->el);
    if (!diff)
        return err_set(e, ERR_INTERNAL, "out of memory");
    int rc = 0;
    if (*diff) {
        char what[64];
        snprintf(what, sizeof what, "update the nft table inet %s", np->cfg.table);
        rc = nft_run(np->nft, diff, what, e) < 0 ? -1 : 1;
    }
    free(diff);
    if (rc >= 0) {
        elems_free(&np->now.el);
        np->now.el = t->el;
        memset(&t->el, 0, sizeof t->el);
        table_free(t);
    }
    return rc;
}

int netpolicy_apply(netpolicy_t *np, const spec_state_t *s, err_t *e)
{
    table_t t;
    if (table_make(&np->cfg, s, &t, e) < 0)
        return -1;
    if (np->in_force && !np->has_pending && strcmp(np->now.rules, t.rules) == 0) {
        err_t de;
        err_clear(&de);
        int rc = apply_elements(np, &t, &de);
        if (rc >= 0)
            return rc;
        log_warn("network: %s; replacing the whole table", de.msg);
    }
    table_free(&np->pending);
    np->pending = t;
    np->has_pending = true;
    return netpolicy_retry(np, e);
}

int netpolicy_retry(netpolicy_t *np, err_t *e)
{
    if (!np->has_pending)
        return 0;
    char what[64];
    snprintf(what, sizeof what, "apply the nft table inet %s", np->cfg.table);
    char *text = render_text(&np->cfg, &np->pending);
    if (!text)
        return err_set(e, ERR_INTERNAL, "out of memory rendering the nft table");
    int rc = nft_run(np->nft, text, what, e);
    free(text);
    if (rc < 0)
        return -1;
    table_free(&np->now);
    np->now = np->pending;
    memset(&np->pending, 0, sizeof np->pending);
    np->has_pending = false;
    np->in_force = true;
    /* The new table's handle, for netpolicy_check; unknown (0) if the
     * question fails: the next check takes what it finds. */
    err_t he;
    err_clear(&he);
    if (table_handle(np->cfg.table, &np->handle, &he) <= 0) {
        np->handle = 0;
        if (he.msg[0])
            log_warn("network: %s", he.msg);
    }
    return 1;
}

int netpolicy_check(netpolicy_t *np, err_t *e)
{
    if (!np->in_force || np->has_pending)
        return 0; /* nothing in force to lose, or a retry is due anyway */
    uint64_t h;
    int rc = table_handle(np->cfg.table, &h, e);
    if (rc < 0)
        return -1;
    if (rc == 1 && (h == np->handle || !np->handle)) {
        np->handle = h;
        return 0;
    }
    /* Gone, or a table of that name that is not the one we made: the
     * whole table again (its elements are the last state's). */
    table_free(&np->pending);
    np->pending = np->now;
    memset(&np->now, 0, sizeof np->now);
    np->has_pending = true;
    np->in_force = false;
    np->handle = 0;
    return 1;
}

bool netpolicy_in_force(const netpolicy_t *np) { return np && np->in_force && !np->has_pending; }

int netpolicy_delete(const char *table, err_t *e)
{
    if (netpolicy_check_table(table, e) < 0)
        return -1;
    struct nft_ctx *nft = nft_open(e);
    if (!nft)
        return -1;
    char text[2 * NETPOLICY_TABLE_MAX + 64], what[64];
    snprintf(text, sizeof text, "table inet %s\ndelete table inet %s\n", table, table);
    snprintf(what, sizeof what, "delete the nft table inet %s", table);
    int rc = nft_run(nft, text, what, e);
    nft_ctx_free(nft);
    return rc;
}
